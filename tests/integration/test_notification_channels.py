"""Notification channels through the API: CRUD for admins, secrets write-only, bad configs
refused naming the field, the network policy, and "Send test" to a real webhook receiver
(which checks the signature), a Slack-style receiver and a real SMTP server (STARTTLS+AUTH).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from conveyor.db.models import NotificationChannel
from conveyor.db.session import session_scope
from conveyor.secrets import SecretBox
from conveyor.services import channels
from conveyor.settings import Settings
from tests.fixtures.notify import SMTP_PASSWORD, SMTP_USER, SmtpReceiver, WebhookReceiver
from tests.fixtures.web import ApiUser

API = "/api/v1/notification-channels"


@pytest.fixture
def backend() -> str:
    """SQLite only: these tests are about the API and the senders, not the database (the
    delivery tests, which claim rows concurrently, run on both)."""
    return "sqlite"


SLACK_PATH = "/services/T000/B000/slack-canary-XXXXXXXX"


def _webhook(receiver: WebhookReceiver, **over: Any) -> dict[str, Any]:
    body = {
        "name": "ops-webhook",
        "type": "webhook",
        "config": {"url": receiver.url, "secret": receiver.secret},
    }
    body.update(over)
    return body


def _email(smtp: SmtpReceiver, **config: Any) -> dict[str, Any]:
    return {
        "name": "ops-mail",
        "type": "email",
        "config": {
            "host": smtp.host,
            "port": smtp.port,
            "security": "starttls",
            "username": SMTP_USER,
            "password": SMTP_PASSWORD,
            "from": "conveyor@example.com",
            "to": ["ops@example.com", "oncall@example.com"],
            **config,
        },
    }


def test_crud_keeps_secrets_write_only(
    admin: ApiUser,
    app_settings: Settings,
    webhook_receiver: WebhookReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = webhook_receiver.secret
    assert secret
    created = admin.post(API, json=_webhook(webhook_receiver))
    assert created.status_code == 201, created.text
    channel = created.json()
    assert channel["config"] == {"url": webhook_receiver.url, "secret": "********"}
    # Left out, events are every event but run.succeeded; no scope means every connector.
    assert "run.failed" in channel["events"] and "run.succeeded" not in channel["events"]
    assert channel["connector_ids"] is None and channel["tags"] is None
    assert channel["pending"] == 0 and channel["last_delivery_at"] is None

    cid = channel["id"]
    # A change leaving the secret out (or sending it back masked) keeps it.
    changed = admin.patch(
        f"{API}/{cid}",
        json={"name": "ops-hook", "tags": ["prod"], "config": {"secret": "********"}},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["tags"] == ["prod"]
    test = admin.post(f"{API}/{cid}/test")
    assert test.json()["ok"] is True, test.text
    assert webhook_receiver.bad_signatures == []

    with session_scope(app_settings.effective_database_url) as s:
        stored = s.get(NotificationChannel, cid)
        assert stored is not None
        assert secret not in json.dumps(stored.config)  # encrypted at rest

    listed = admin.get(API).json()
    one = admin.get(f"{API}/{cid}").json()
    audit = admin.get("/api/v1/audit", params={"entity_type": "notification_channel"}).json()
    assert [e["action"] for e in audit][:2] == [
        "notification_channel.update",
        "notification_channel.create",
    ]
    deleted = admin.delete(f"{API}/{cid}")
    assert deleted.status_code == 204
    assert admin.get(f"{API}/{cid}").status_code == 404
    audit_after = admin.get("/api/v1/audit").json()
    for seen in (listed, one, audit, audit_after, caplog.text):
        assert secret not in json.dumps(seen)


def test_only_admins_see_or_change_channels(
    admin: ApiUser, editor: ApiUser, viewer: ApiUser, webhook_receiver: WebhookReceiver
) -> None:
    cid = admin.post(API, json=_webhook(webhook_receiver)).json()["id"]
    for user in (editor, viewer):
        assert user.get(API).status_code == 403
        assert user.get(f"{API}/{cid}").status_code == 403
        assert user.post(API, json=_webhook(webhook_receiver, name="x")).status_code == 403
        assert user.post(f"{API}/{cid}/test").status_code == 403
    assert webhook_receiver.received == []


BAD: list[tuple[dict[str, Any], str]] = [
    ({"type": "webhook", "config": {"url": "ftp://x", "secret": "s" * 20}}, "config.url"),
    ({"type": "webhook", "config": {"url": "https://h.example/x"}}, "config.secret"),
    (
        {"type": "webhook", "config": {"url": "https://h.example", "secret": "short"}},
        "config.secret",
    ),
    (
        {"type": "webhook", "config": {"url": "https://h.example", "secret": "*" * 8}},
        "config.secret",
    ),
    ({"type": "slack", "config": {}}, "config.url"),
    ({"type": "slack", "config": {"url": "https://h.example", "x": 1}}, "config.x"),
    ({"type": "pager", "config": {}}, "type"),
    (
        {
            "type": "email",
            "config": {"host": "m.example", "from": "a@b.example", "to": ["nope"]},
        },
        "config.to.0",
    ),
    (
        {
            "type": "email",
            "config": {
                "host": "m.example",
                "security": "none",
                "username": "u",
                "password": "p",
                "from": "a@b.example",
                "to": ["c@d.example"],
            },
        },
        "config.security",
    ),
    (
        {
            "type": "webhook",
            "config": {"url": "https://h.example", "secret": "s" * 20},
            "events": ["run.failed", "run.exploded"],
        },
        "events.1",
    ),
    (
        {
            "type": "webhook",
            "config": {"url": "https://h.example", "secret": "s" * 20},
            "connector_ids": [424242],
        },
        "connector_ids",
    ),
]
DENIED_URLS = (
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://[fd00:ec2::254]/latest/",
    "http://0.0.0.0:8080/",
)


def test_bad_channel_is_refused_naming_the_field(admin: ApiUser) -> None:
    for body, field in BAD:
        resp = admin.post(API, json={"name": "bad", **body})
        assert resp.status_code == 422, (body, resp.text)
        fields = [e["field"] for e in resp.json()["errors"]]
        assert any(f == field or f.endswith(f".{field}") for f in fields), (body, fields)
    assert admin.get(API).json() == []


def test_a_webhook_to_a_denied_address_is_refused(admin: ApiUser) -> None:
    for url in DENIED_URLS:
        config = {"url": url, "secret": "s" * 20}
        resp = admin.post(API, json={"name": "evil", "type": "webhook", "config": config})
        assert resp.status_code == 422, resp.text
        assert resp.json()["errors"][0]["field"] == "config.url"
        assert "notifications cannot reach it" in resp.text
    assert admin.get(API).json() == []


def test_production_refuses_a_loopback_webhook_at_send(
    admin: ApiUser, app_settings: Settings, webhook_receiver: WebhookReceiver
) -> None:
    # Loopback is allowed in local mode; production turns it off: the same channel refused.
    cid = admin.post(API, json=_webhook(webhook_receiver)).json()["id"]
    prod = app_settings.model_copy(update={"network_allow_loopback": False})

    with session_scope(app_settings.effective_database_url) as s:
        channel = s.get(NotificationChannel, cid)
        assert channel is not None
        type_name, name = channel.type, channel.name
        config = channels.decrypted(channel, SecretBox(app_settings.secret_keys()))
    out = channels.send_test(type_name, config, name, settings=prod)
    assert not out.ok and "loopback" in out.message
    assert webhook_receiver.received == [] and webhook_receiver.bad_signatures == []


def test_send_test_to_slack_hides_the_url(
    admin: ApiUser, slack_receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"http://127.0.0.1:{slack_receiver.port}{SLACK_PATH}"
    created = admin.post(API, json={"name": "slack", "type": "slack", "config": {"url": url}})
    assert created.status_code == 201, created.text
    assert created.json()["config"] == {"url": "********"}
    cid = created.json()["id"]
    out = admin.post(f"{API}/{cid}/test").json()
    assert out["ok"] is True, out
    (got,) = slack_receiver.received
    assert got.headers["Content-Type"] == "application/json"
    assert set(got.body) == {"text"} and "test notification" in got.body["text"]
    # The receiver answers 500: the outcome says so, without the URL's secret path.
    slack_receiver.status = 500
    failed = admin.post(f"{API}/{cid}/test").json()
    assert failed["ok"] is False and "HTTP 500" in failed["message"]
    slack_receiver.stop()
    down = admin.post(f"{API}/{cid}/test").json()
    assert down["ok"] is False
    for text in (
        json.dumps(failed),
        json.dumps(down),
        caplog.text,
        admin.get("/api/v1/audit").text,
    ):
        assert "slack-canary" not in text


def test_send_test_by_email_with_starttls_and_auth(
    admin: ApiUser, smtp_receiver: SmtpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    created = admin.post(API, json=_email(smtp_receiver))
    assert created.status_code == 201, created.text
    assert created.json()["config"]["password"] == "********"
    out = admin.post(f"{API}/{created.json()['id']}/test").json()
    assert out["ok"] is True, out
    (msg,) = smtp_receiver.messages
    assert smtp_receiver.tls_sessions == [True] and smtp_receiver.logins == [SMTP_USER]
    assert smtp_receiver.envelopes[0][1] == ["ops@example.com", "oncall@example.com"]
    assert msg["Subject"].startswith("[Conveyor]") and msg["X-Conveyor-Delivery"] == out["id"]
    assert out["id"] in msg.get_payload()
    # A wrong password: the server's refusal, never the password.
    cid = created.json()["id"]
    admin.patch(f"{API}/{cid}", json={"config": {"password": "wrong-Pa55word-canary"}})
    bad = admin.post(f"{API}/{cid}/test").json()
    assert bad["ok"] is False and "535" in bad["message"]
    for text in (json.dumps(bad), caplog.text, admin.get("/api/v1/audit").text):
        assert SMTP_PASSWORD not in text and "wrong-Pa55word-canary" not in text


def test_moving_the_smtp_server_needs_the_password_again(
    admin: ApiUser, smtp_receiver: SmtpReceiver
) -> None:
    cid = admin.post(API, json=_email(smtp_receiver)).json()["id"]
    moved = admin.patch(f"{API}/{cid}", json={"config": {"host": "mail.attacker.example"}})
    assert moved.status_code == 422, moved.text
    assert moved.json()["errors"][0]["field"] == "config.password"
    assert admin.get(f"{API}/{cid}").json()["config"]["host"] == smtp_receiver.host
