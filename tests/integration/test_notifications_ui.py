"""The notifications page (admins): create a webhook channel by the form, see it listed,
Send test to a receiver that checks the signature, secrets never in the page; others 403."""

from __future__ import annotations

import pytest

from conveyor.settings import Settings
from tests.fixtures.notify import WebhookReceiver
from tests.fixtures.ui import UIClient, cheap_password_hashing, make_user, unlabelled_fields


@pytest.fixture
def backend() -> str:
    return "sqlite"  # pages, not the database


@pytest.fixture
def users(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    cheap_password_hashing(monkeypatch)
    for name, role in (("alice", "admin"), ("eddie", "editor")):
        make_user(settings, name, role)


def test_admin_creates_tests_and_edits_a_webhook_channel(
    settings: Settings, users: None, webhook_receiver: WebhookReceiver
) -> None:
    ui = UIClient(settings).login("alice")
    nav = ui.page("/connectors").find("nav")
    assert nav is not None and "Notifications" in nav.text
    for kind in ("webhook", "slack", "email"):
        form = ui.page(f"/admin/notifications/new?type={kind}")
        assert unlabelled_fields(form) == [], kind

    # A bad URL: the form again, the field named, nothing saved.
    bad = ui.post(
        "/admin/notifications/new",
        {"type": "webhook", "name": "ops", "url": "http://169.254.169.254/", "secret": "x" * 20},
    )
    assert bad.status_code == 422 and "notifications cannot reach it" in bad.text
    assert "No notification channels yet" in ui.get("/admin/notifications").text

    created = ui.post(
        "/admin/notifications/new",
        {
            "type": "webhook",
            "name": "ops",
            "url": webhook_receiver.url,
            "secret": webhook_receiver.secret,
            "events": ["run.failed", "connector.stale"],
            "scope": "tags",
            "tags": "prod, billing",
            "is_active": "true",
        },
    )
    assert created.status_code == 303, created.text
    edit_url = created.headers["location"]
    page = ui.get(edit_url).text
    assert webhook_receiver.secret not in page and "leave blank to keep" in page

    tested = ui.post(f"{edit_url}/test")
    assert tested.status_code == 303
    assert "it arrived" in ui.get(edit_url).text
    (got,) = webhook_receiver.received
    assert got.body["event"] == "test" and webhook_receiver.bad_signatures == []

    # Saved with the secret left blank: kept (the next test still verifies).
    saved = ui.post(
        edit_url,
        {
            "name": "ops-renamed",
            "url": webhook_receiver.url,
            "secret": "",
            "events": ["run.failed"],
            "scope": "all",
            "is_active": "true",
        },
    )
    assert saved.status_code == 303, saved.text
    ui.post(f"{edit_url}/test")
    assert len(webhook_receiver.received) == 2 and webhook_receiver.bad_signatures == []
    listed = ui.page("/admin/notifications").by_id("channels")
    assert listed is not None and "ops-renamed" in listed.text and "run.failed" in listed.text

    webhook_receiver.stop()
    ui.post(f"{edit_url}/test")
    assert "not delivered" in ui.get(edit_url).text

    editor = UIClient(settings).login("eddie")
    assert editor.get("/admin/notifications").status_code == 403
    assert editor.get(edit_url).status_code == 403
    assert "Notifications" not in (editor.page("/connectors").find("nav") or page).text
