"""Send one event body to one channel: a signed webhook POST, a Slack incoming webhook, an
email over SMTP.

Every connection obeys the network policy as a connector's would (invariant 7): the host is
resolved, every address checked (cloud metadata, Conveyor's own services, loopback in
production are refused) and the connection pinned to the checked address, so a second DNS
answer cannot move it; TLS still verifies the host name. Redirects are never followed.
Errors are said in words that never hold a secret: a Slack URL is a secret, so only its
host is ever named.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import smtplib
import socket
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import urlsplit

from conveyor import __version__
from conveyor.domain.vocabulary import SIGNATURE_HEADER
from conveyor.pipelines.network import IPAddress, NetworkDenied
from conveyor.secrets import mask_text
from conveyor.services import channel_config
from conveyor.services.channel_config import EmailConfig, SlackConfig, WebhookConfig
from conveyor.settings import Settings

EVENT_HEADER = "X-Conveyor-Event"
DELIVERY_HEADER = "X-Conveyor-Delivery"  # the body's id: the idempotency key
_SNIPPET = 200


class SendFailed(Exception):
    """A send did not reach the receiver, or the receiver refused it; ``message`` is safe
    to store and show (no secret in it)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def where(type_name: str) -> str:
    return {"webhook": "the webhook", "slack": "Slack", "email": "the SMTP server"}[type_name]


def encode(body: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed)."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def signature(secret: str, data: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of data>``: the X-Conveyor-Signature header's value."""
    return "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def send(
    type_name: str, config: dict[str, Any], body: dict[str, Any], *, settings: Settings
) -> None:
    """Send ``body`` through a channel of ``type_name`` with its decrypted ``config``;
    ``SendFailed`` (a safe message) when it did not arrive."""
    try:
        model = channel_config.parse(type_name, config)
    except Exception as exc:  # a stored config that no longer validates
        raise SendFailed(f"the channel's config is not valid: {exc}") from None
    secrets = channel_config.SECRET_FIELDS[type_name]
    hidden = [v for k in secrets if isinstance(v := config.get(k), str) and v]
    try:
        if isinstance(model, WebhookConfig):
            _webhook(model, body, settings)
        elif isinstance(model, SlackConfig):
            _slack(model, body, settings)
        else:
            _email(model, body, settings)
    except SendFailed as exc:
        raise SendFailed(_safe(exc.message, hidden)) from None
    except NetworkDenied as exc:
        raise SendFailed(_safe(f"refused by the network policy: {exc.reason}", hidden)) from None


def _safe(message: str, hidden: list[str]) -> str:
    text = mask_text(message, hidden)
    for value in hidden:  # a Slack URL's path is the credential: never any piece of it
        path = urlsplit(value).path if "://" in value else ""
        if len(path) > 4:
            text = text.replace(path, "/********")
    return text[:500]


# --- summaries (Slack, email) ---------------------------------------------------------

_PHRASES = {
    "run.failed": "run {run} failed",
    "run.recovered": "recovered: run {run} succeeded after failures",
    "run.succeeded": "run {run} succeeded",
    "connector.auto_paused": "paused by Conveyor after failed runs in a row",
    "connector.stale": "is stale: no successful run within its freshness SLA",
    "sync.error": "is not in step with Prefect",
    "test": "test notification: this channel works",
}


def summary(body: dict[str, Any]) -> str:
    """One line for people: what happened to which connector, and why."""
    event = str(body.get("event"))
    connector = body.get("connector") or {}
    run = body.get("run") or {}
    phrase = _PHRASES.get(event, event).format(run=run.get("id", "?"))
    subject = f"connector '{connector['name']}' " if connector.get("name") else ""
    why = run.get("error") or body.get("reason") or body.get("error") or ""
    if run.get("failure_class") and event == "run.failed":
        why = f"({run['failure_class']}) {why}".strip()
    line = f"Conveyor: {subject}{phrase}"
    if why:
        line += f": {' '.join(str(why).split())}"
    return line if len(line) <= 500 else line[:499] + "…"


def _slack_escape(text: str) -> str:
    # Slack reads <...> as links and mentions: escaped, the text stays plain.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --- HTTP -----------------------------------------------------------------------------


def _webhook(model: WebhookConfig, body: dict[str, Any], settings: Settings) -> None:
    data = encode(body)
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature(model.secret, data),
        EVENT_HEADER: str(body.get("event")),
        DELIVERY_HEADER: str(body.get("id")),
    }
    host, port, _ = channel_config.target(model)
    _post(model, model.url, data, headers, settings, label=f"webhook {host}:{port}")


def _slack(model: SlackConfig, body: dict[str, Any], settings: Settings) -> None:
    data = encode({"text": _slack_escape(summary(body))})
    host = urlsplit(model.url).hostname
    _post(model, model.url, data, {"Content-Type": "application/json"}, settings, f"Slack ({host})")


def _post(
    model: WebhookConfig | SlackConfig,
    url: str,
    data: bytes,
    headers: dict[str, str],
    settings: Settings,
    label: str,
) -> None:
    ips = channel_config.check_on_send(model, settings, label)
    parts = urlsplit(url)
    host, port, _ = channel_config.target(model)
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        ctx = ssl.create_default_context()
        conn = http.client.HTTPSConnection(host, port, timeout=settings.notify_timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=settings.notify_timeout)

    def pinned(
        address: tuple[str, int], timeout: Any = None, source_address: Any = None
    ) -> socket.socket:
        return connect(ips, address[1], timeout, source_address)

    conn._create_connection = pinned  # type: ignore[attr-defined]  # Host and SNI stay the name
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request(
            "POST", path, body=data, headers={"User-Agent": f"Conveyor/{__version__}", **headers}
        )
        resp = conn.getresponse()
        snippet = resp.read(_SNIPPET).decode(errors="replace")
    except (OSError, http.client.HTTPException) as exc:
        raise SendFailed(f"{label}: {_reason(exc)}") from None
    finally:
        conn.close()
    if 200 <= resp.status < 300:
        return
    if 300 <= resp.status < 400:
        raise SendFailed(f"{label} answered HTTP {resp.status}: redirects are not followed")
    text = " ".join(snippet.split())
    raise SendFailed(f"{label} answered HTTP {resp.status}" + (f": {text}" if text else ""))


def connect(
    ips: list[IPAddress], port: int, timeout: Any, source_address: Any = None
) -> socket.socket:
    """A connection to the first of the checked addresses that answers."""
    error: OSError | None = None
    for ip in ips:
        try:
            return socket.create_connection((str(ip), port), timeout, source_address)
        except OSError as exc:
            error = exc
    raise error or OSError("no address to connect to")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "no answer in time (CONVEYOR_NOTIFY_TIMEOUT)"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text)


# --- email ----------------------------------------------------------------------------


class _PinnedSMTP(smtplib.SMTP):
    """SMTP to a checked address; STARTTLS verifies the configured host name."""

    pinned: list[IPAddress] = []

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return connect(self.pinned, port, timeout, self.source_address)


class _PinnedSMTPSSL(smtplib.SMTP_SSL):
    pinned: list[IPAddress] = []

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = connect(self.pinned, port, timeout, self.source_address)
        return self.context.wrap_socket(sock, server_hostname=self._host)  # type: ignore[attr-defined]


def message(model: EmailConfig, body: dict[str, Any]) -> EmailMessage:
    """The email: a one-line subject, the summary and the event body as text."""
    msg = EmailMessage()
    line = summary(body).removeprefix("Conveyor: ")
    msg["Subject"] = f"[Conveyor] {line[:150]}"
    msg["From"] = model.from_
    msg["To"] = ", ".join(model.to)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain="conveyor.invalid")
    msg[EVENT_HEADER] = str(body.get("event"))
    msg[DELIVERY_HEADER] = str(body.get("id"))
    text = summary(body) + "\n\nThe event, as webhooks receive it:\n\n"
    msg.set_content(text + json.dumps(body, indent=2, ensure_ascii=False) + "\n")
    return msg


def _email(model: EmailConfig, body: dict[str, Any], settings: Settings) -> None:
    label = f"SMTP server {model.host}:{model.effective_port}"
    ips = channel_config.check_on_send(model, settings, label)
    ctx = ssl.create_default_context()
    smtp: _PinnedSMTP | _PinnedSMTPSSL
    if model.security == "tls":
        smtp = _PinnedSMTPSSL(
            local_hostname="conveyor", timeout=settings.notify_timeout, context=ctx
        )
    else:
        smtp = _PinnedSMTP(local_hostname="conveyor", timeout=settings.notify_timeout)
    smtp.pinned = ips
    host = model.host.strip("[]")
    smtp._host = host  # type: ignore[union-attr]  # what TLS verifies (connect() keeps it not)
    try:
        smtp.connect(host, model.effective_port)
        smtp.ehlo()
        if model.security == "starttls":
            smtp.starttls(context=ctx)  # refuses to go on unencrypted if the server cannot
            smtp.ehlo()
        if model.username and model.password:
            smtp.login(model.username, model.password)
        smtp.send_message(message(model, body))
    except (smtplib.SMTPException, OSError, ValueError) as exc:
        raise SendFailed(f"{label}: {_smtp_reason(exc)}") from None
    finally:
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()


def _smtp_reason(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else ""
        return f"answered {exc.smtp_code} {' '.join(text.split())}".strip()
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "refused every recipient"
    return _reason(exc)
