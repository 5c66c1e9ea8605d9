"""Admin pages: users and roles, API tokens shown once, the audit log with filters."""

from __future__ import annotations

import pytest

from conveyor.db.models import User
from conveyor.db.session import session_scope
from conveyor.settings import Settings
from tests.fixtures.ui import Seed, UIClient, cheap_password_hashing, make_user, parse_html


@pytest.fixture
def seed(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Seed:
    cheap_password_hashing(monkeypatch)
    for name, role in (("alice", "admin"), ("eddie", "editor")):
        make_user(settings, name, role)
    return Seed(settings)


@pytest.fixture
def ui(settings: Settings, seed: Seed) -> UIClient:
    return UIClient(settings).login("alice")


def test_users_and_roles(seed: Seed, ui: UIClient, settings: Settings) -> None:
    resp = ui.post("/admin/users", {"username": "bob", "password": "short", "role": "viewer"})
    assert resp.status_code == 422
    assert "at least 8 characters" in parse_html(resp.text).find("p", id="err-password").text
    resp = ui.post(
        "/admin/users", {"username": "bob", "password": "long-enough-pw", "role": "viewer"}
    )
    assert resp.status_code == 303
    resp = ui.post(
        "/admin/users", {"username": "bob", "password": "long-enough-pw", "role": "viewer"}
    )
    assert "already exists" in parse_html(resp.text).find("p", id="err-username").text
    with session_scope(settings.effective_database_url) as session:
        bob = session.query(User).filter_by(username="bob").one()
    ui.post(f"/admin/users/{bob.id}/role", {"role": "editor"})
    doc = ui.page("/admin/users")
    assert doc.find("select", id=f"role-{bob.id}").find("option", selected="").text == "editor"
    UIClient(settings).login("bob", "long-enough-pw")  # the new user can log in


def test_non_admins_cannot_manage_users_or_read_the_audit(seed: Seed, settings: Settings) -> None:
    editor = UIClient(settings).login("eddie")
    editor.page("/admin/users", status=403)
    editor.page("/admin/audit", status=403)
    resp = editor.post(
        "/admin/users", {"username": "x", "password": "long-enough-pw", "role": "admin"}
    )
    assert resp.status_code == 403
    nav = [a.text for a in editor.page("/connectors").find("nav").find_all("a")]
    assert "Users" not in nav and "API tokens" in nav


def test_token_is_shown_once_and_works(seed: Seed, ui: UIClient) -> None:
    resp = ui.post("/admin/tokens", {"name": "nightly export"})
    assert resp.status_code == 201
    assert resp.headers["cache-control"] == "no-store"
    token = parse_html(resp.text).find("input", id="new-token").attrs["value"]
    assert token.startswith("cvt_")
    me = ui.http.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}, cookies={})
    assert me.json()["username"] == "alice"
    again = ui.get("/admin/tokens").text
    assert token not in again and token[:12] in again
    doc = ui.page("/admin/tokens")
    token_id = doc.find("form", class_="inline-form").attrs["action"].split("/")[3]
    ui.post(f"/admin/tokens/{token_id}/revoke")
    assert "revoked" in ui.page("/admin/tokens").text


def test_editors_manage_their_own_tokens_only(seed: Seed, ui: UIClient, settings: Settings) -> None:
    ui.post("/admin/tokens", {"name": "alice-token"})
    editor = UIClient(settings).login("eddie")
    assert editor.post("/admin/tokens", {"name": "mine"}).status_code == 201
    doc = editor.page("/admin/tokens")
    assert "mine" in doc.text and "alice-token" not in doc.text
    resp = editor.post("/admin/tokens", {"name": "sneaky", "username": "alice"})
    assert resp.status_code == 403


def test_audit_log_with_filters(seed: Seed, ui: UIClient) -> None:
    cid = seed.connector(name="orders-sync")
    ui.post(f"/connectors/{cid}/pause")
    ui.post("/admin/tokens", {"name": "t"})
    doc = ui.page("/admin/audit")
    actions = [c.text for c in doc.find_all("code")]
    assert actions[:2] == ["token.create", "connector.pause"]
    doc = ui.page("/admin/audit?entity_type=connector&action=connector.pause")
    first = doc.find("table").find("tbody").find_all("tr")[0]
    assert "connector.pause" in first.text and "is_active" in first.text
    assert "s3cret-pw" not in ui.get("/admin/audit").text  # masked everywhere
    assert ui.page("/admin/audit?user=nobody").find("table") is None


def test_audit_filter_offers_notification_channels_and_runs(
    seed: Seed, ui: UIClient, settings: Settings
) -> None:
    from conveyor.domain.notifications import ChannelCreate
    from conveyor.secrets import SecretBox
    from conveyor.services import channels
    from conveyor.services.authz import SYSTEM

    with session_scope(settings.effective_database_url) as s:
        channels.create(
            ChannelCreate(
                name="ops-hook",
                type="webhook",
                config={"url": "http://127.0.0.1:9/h", "secret": "s" * 24},
            ),
            session=s,
            actor=SYSTEM,
            box=SecretBox(settings.secret_keys()),
            settings=settings,
        )
    doc = ui.page("/admin/audit")
    offered = [o.attrs.get("value") for o in doc.find("select", id="a-type").find_all("option")]
    assert {"notification_channel", "run"} <= set(offered)
    doc = ui.page("/admin/audit?entity_type=notification_channel")
    on = [td.text for td in doc.find_all("td", data_label="On")]
    assert len(on) == 1 and "ops-hook" in on[0] and "notification channel" in on[0]
