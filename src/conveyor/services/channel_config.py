"""Each notification channel type's config: its fields, which are secret, where it connects.

A webhook is ``{"url", "secret"}`` (the secret signs each body; it is never sent), a Slack
channel ``{"url"}`` (the incoming-webhook URL is itself the credential, so it is secret), an
email channel ``{"host", "port", "security", "username", "password", "from", "to"}``.
Secret fields are encrypted at rest and write-only, like a source's (``secrets.py``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from conveyor.errors import FieldProblem, ValidationFailed
from conveyor.pipelines.network import IPAddress, NetworkDenied, parse_ip, policy_for
from conveyor.settings import Settings

# The secret fields of each type, and the fields that say where a secret is sent: moving
# an email channel's server needs its password entered again (invariant 7).
SECRET_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "webhook": ("secret",),
    "slack": ("url",),
    "email": ("password",),
}
CONNECTION_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "webhook": (),
    "slack": (),
    "email": ("host", "port", "security"),
}
SMTP_PORTS: Final = {"starttls": 587, "tls": 465, "none": 25}
_EMAIL = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[^@\s<>,;\"]+$|^[^@\s<>,;\"]+@localhost$")


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise ValueError("must not hold a user name or password")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError("has a port that is not a number from 1 to 65535") from None
    return value


def _address(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError(f"'{value}' is not an email address (name@example.com)")
    return value


HttpUrl = Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(_http_url)]
Address = Annotated[str, Field(max_length=320), AfterValidator(_address)]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, populate_by_name=True)


class WebhookConfig(_Config):
    url: HttpUrl
    # Signs every body (X-Conveyor-Signature); the receiver holds the same value.
    secret: str = Field(min_length=16, max_length=500)


class SlackConfig(_Config):
    url: HttpUrl  # the incoming-webhook URL (https://hooks.slack.com/services/...)


class EmailConfig(_Config):
    host: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9.:\-\[\]]+$")
    port: int | None = Field(default=None, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = Field(default=None, min_length=1, max_length=200)
    password: str | None = Field(default=None, min_length=1, max_length=500)
    from_: Address = Field(alias="from")
    to: list[Address] = Field(min_length=1, max_length=50)

    @model_validator(mode="after")
    def _auth(self) -> EmailConfig:
        if self.password and not self.username:
            raise ValidationFailed.field("username", "is required with a password")
        if self.username and not self.password:
            raise ValidationFailed.field("password", "is required with a username")
        if self.password and self.security == "none":
            raise ValidationFailed.field(
                "security",
                "must be starttls or tls to log in: a password is never sent unencrypted",
            )
        return self

    @property
    def effective_port(self) -> int:
        return self.port or SMTP_PORTS[self.security]


ChannelConfig = WebhookConfig | SlackConfig | EmailConfig
MODELS: Final[dict[str, type[ChannelConfig]]] = {
    "webhook": WebhookConfig,
    "slack": SlackConfig,
    "email": EmailConfig,
}


def parse(type_name: str, config: dict[str, Any]) -> ChannelConfig:
    """The validated config; ``ValidationFailed`` naming each field (``config.url``)."""
    try:
        return MODELS[type_name].model_validate(config)
    except ValidationError as exc:
        problems: list[FieldProblem] = []
        for err in exc.errors(include_url=False):
            loc = ".".join(["config", *(str(p) for p in err["loc"])])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "value_error" and isinstance(
                (ctx := err.get("ctx") or {}).get("error"), ValidationFailed
            ):
                problems.extend(
                    FieldProblem(f"config.{p.loc}", p.reason) for p in ctx["error"].problems
                )
                continue
            problems.append(FieldProblem(loc, msg))
        raise ValidationFailed(problems) from None


def stored(model: ChannelConfig) -> dict[str, Any]:
    """The config as stored (and masked): JSON names (``from``), no nulls."""
    return model.model_dump(by_alias=True, exclude_none=True)


def target(model: ChannelConfig) -> tuple[str, int, str]:
    """(host, port, field) this config connects to."""
    if isinstance(model, EmailConfig):
        return model.host.strip("[]"), model.effective_port, "config.host"
    parts = urlsplit(model.url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname or "", port, "config.url"


def reword(reason: str) -> str:
    """The network policy's words, said of notifications rather than connectors."""
    return reason.replace("connectors cannot", "notifications cannot").replace(
        "connectors reach", "notifications reach"
    )


def check_on_save(model: ChannelConfig, settings: Settings) -> None:
    """Refuse a config that points at an address the network policy denies (cloud metadata,
    Conveyor's own services...). Only addresses and ``localhost`` are judged here (a save
    never waits on DNS); every send resolves and checks again."""
    host, port, field = target(model)
    name = host.lower().rstrip(".")
    if parse_ip(host) is None and name != "localhost" and not name.endswith(".localhost"):
        return
    try:
        policy_for(settings).check(host, port, shown=f"{host}:{port}")
    except NetworkDenied as exc:
        raise ValidationFailed.field(field, reword(exc.reason)) from None


def check_on_send(model: ChannelConfig, settings: Settings, label: str) -> list[IPAddress]:
    """Resolve where this config connects, check every address, and return them: the
    connection is pinned to these (no second lookup can move it elsewhere)."""
    host, port, _field = target(model)
    try:
        return policy_for(settings).check(host, port, shown=label)
    except NetworkDenied as exc:
        raise NetworkDenied(reword(exc.reason)) from None
