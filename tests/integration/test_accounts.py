"""Accounts you can manage: change your own password, admins reset, disable, enable and
delete users (API, UI and CLI); a password change or a disable ends logins and tokens at
once; the last active admin stays."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from conveyor.cli.main import app as cli_app
from conveyor.db.models import ApiToken, AuditEntry, Connector, UiSession, User
from conveyor.db.session import session_scope
from conveyor.settings import Settings, get_settings
from conveyor.web.app import create_app
from tests.fixtures.ui import UIClient, cheap_password_hashing, csrf_of, parse_html
from tests.fixtures.web import ApiUser, _make_user

NEW_PASSWORD = "a-brand-new-passphrase"


@pytest.fixture(autouse=True)
def _cheap_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    cheap_password_hashing(monkeypatch)


def user_id(settings: Settings, username: str) -> int:
    with session_scope(settings.effective_database_url) as session:
        return session.scalars(select(User.id).where(User.username == username)).one()


def login_response(settings: Settings, username: str, password: str) -> Any:
    http = TestClient(create_app(settings))
    token = csrf_of(http.get("/login").text)
    return http.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": token},
        follow_redirects=False,
    )


def cookie_works(settings: Settings, cookies: dict[str, str]) -> bool:
    """Whether a copy of a browser's cookie still opens the API (the JSON /me)."""
    http = TestClient(create_app(settings), cookies=cookies)
    status = http.get("/api/v1/me").status_code
    assert status in (200, 401), status
    return status == 200


def audit_text(settings: Settings) -> str:
    with session_scope(settings.effective_database_url) as session:
        rows = session.scalars(select(AuditEntry)).all()
        return " ".join(f"{r.action} {r.before} {r.after}" for r in rows)


# --- your own password ---------------------------------------------------------------


def test_change_own_password_over_the_api(app_settings: Settings, editor: ApiUser) -> None:
    browser = UIClient(app_settings).login("eddie")
    cookies = dict(browser.http.cookies)
    assert cookie_works(app_settings, cookies)

    wrong = editor.post(
        "/api/v1/me/password",
        json={"current_password": "not-my-password", "new_password": NEW_PASSWORD},
    )
    assert wrong.status_code == 422, wrong.text
    assert wrong.json()["errors"] == [
        {"field": "current_password", "reason": "is not your current password"}
    ]
    short = editor.post(
        "/api/v1/me/password",
        json={"current_password": "correct-horse-battery", "new_password": "short"},
    )
    assert short.status_code == 422
    assert short.json()["errors"][0]["field"] == "new_password"
    # Nothing changed: the token, the login and the old password all still work.
    assert editor.get("/api/v1/me").status_code == 200
    assert cookie_works(app_settings, cookies)

    done = editor.post(
        "/api/v1/me/password",
        json={"current_password": "correct-horse-battery", "new_password": NEW_PASSWORD},
    )
    assert done.status_code == 200, done.text
    assert done.json() == {"sessions_ended": 1, "tokens_revoked": 1}
    assert editor.get("/api/v1/me").status_code == 401  # the token that asked, too
    assert not cookie_works(app_settings, cookies)
    assert login_response(app_settings, "eddie", "correct-horse-battery").status_code == 401
    assert login_response(app_settings, "eddie", NEW_PASSWORD).status_code == 303
    text = audit_text(app_settings)
    assert "user.password_change" in text
    assert NEW_PASSWORD not in text and "argon2" not in text


def test_change_own_password_in_the_ui(app_settings: Settings, editor: ApiUser) -> None:
    other_browser = UIClient(app_settings).login("eddie")
    ui = UIClient(app_settings).login("eddie")
    nav = parse_html(ui.get("/connectors").text).find("header")
    assert nav.find("a", href="/account/password") is not None

    page = ui.page("/account/password")
    assert page.find("input", name="current_password") is not None
    resp = ui.post(
        "/account/password",
        {
            "current_password": "wrong-wrong-wrong",
            "new_password": NEW_PASSWORD,
            "confirm_password": NEW_PASSWORD,
        },
    )
    assert resp.status_code == 422
    err = parse_html(resp.text).find("p", id="err-current_password")
    assert err is not None and "not your current password" in err.text
    resp = ui.post(
        "/account/password",
        {
            "current_password": "correct-horse-battery",
            "new_password": NEW_PASSWORD,
            "confirm_password": "something-else",
        },
    )
    assert resp.status_code == 422
    assert parse_html(resp.text).find("p", id="err-confirm_password") is not None

    resp = ui.post(
        "/account/password",
        {
            "current_password": "correct-horse-battery",
            "new_password": NEW_PASSWORD,
            "confirm_password": NEW_PASSWORD,
        },
    )
    assert resp.status_code == 303, resp.text
    # This browser stays logged in with a new login; the other one and the token end.
    assert ui.get("/connectors", follow_redirects=False).status_code == 200
    assert other_browser.get("/connectors", follow_redirects=False).status_code == 303
    assert editor.get("/api/v1/me").status_code == 401
    UIClient(app_settings).login("eddie", NEW_PASSWORD)


# --- what admins do ------------------------------------------------------------------


def test_admin_resets_a_password_and_ends_logins_and_tokens(
    app_settings: Settings, admin: ApiUser, editor: ApiUser
) -> None:
    browser = UIClient(app_settings).login("eddie")
    cookies = dict(browser.http.cookies)
    eddie = user_id(app_settings, "eddie")

    short = admin.post(f"/api/v1/users/{eddie}/password", json={"password": "x"})
    assert short.status_code == 422 and short.json()["errors"][0]["field"] == "password"
    assert editor.get("/api/v1/me").status_code == 200

    resp = admin.post(f"/api/v1/users/{eddie}/password", json={"password": NEW_PASSWORD})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"sessions_ended": 1, "tokens_revoked": 1}
    assert editor.get("/api/v1/me").status_code == 401
    assert not cookie_works(app_settings, cookies)
    assert browser.get("/connectors", follow_redirects=False).status_code == 303
    assert admin.get("/api/v1/me").status_code == 200  # the admin's own access is untouched
    assert login_response(app_settings, "eddie", NEW_PASSWORD).status_code == 303
    assert (
        admin.post("/api/v1/users/999999/password", json={"password": NEW_PASSWORD}).status_code
        == 404
    )
    assert NEW_PASSWORD not in audit_text(app_settings)


def test_disable_ends_logins_and_tokens_and_blocks_login(
    app_settings: Settings, admin: ApiUser, editor: ApiUser
) -> None:
    browser = UIClient(app_settings).login("eddie")
    cookies = dict(browser.http.cookies)
    eddie = user_id(app_settings, "eddie")

    resp = admin.patch(f"/api/v1/users/{eddie}", json={"disabled": True})
    assert resp.status_code == 200, resp.text
    assert resp.json()["is_active"] is False
    assert editor.get("/api/v1/me").status_code == 401
    assert not cookie_works(app_settings, cookies)
    assert browser.get("/connectors", follow_redirects=False).status_code == 303
    with session_scope(app_settings.effective_database_url) as session:
        assert session.scalars(select(UiSession).where(UiSession.user_id == eddie)).all() == []
        tokens = session.scalars(select(ApiToken).where(ApiToken.user_id == eddie)).all()
        assert tokens and all(t.revoked_at is not None for t in tokens)

    # The right password of a disabled user reads exactly like a wrong one.
    disabled = login_response(app_settings, "eddie", "correct-horse-battery")
    wrong = login_response(app_settings, "nobody", "correct-horse-battery")
    assert disabled.status_code == wrong.status_code == 401
    err = parse_html(disabled.text).find("p", id="err-password").text
    assert err == parse_html(wrong.text).find("p", id="err-password").text

    resp = admin.patch(f"/api/v1/users/{eddie}", json={"disabled": False})
    assert resp.status_code == 200 and resp.json()["is_active"] is True
    assert login_response(app_settings, "eddie", "correct-horse-battery").status_code == 303
    assert editor.get("/api/v1/me").status_code == 401  # revoked tokens stay revoked
    actions = audit_text(app_settings)
    assert "user.disable" in actions and "user.enable" in actions


def test_delete_keeps_the_users_connectors_for_admins_only(
    app_settings: Settings, admin: ApiUser, editor: ApiUser
) -> None:
    connector = editor.make_connector()
    eddie = user_id(app_settings, "eddie")
    with session_scope(app_settings.effective_database_url) as session:
        row = session.get(Connector, connector["id"])
        assert row is not None and row.owner_id == eddie

    assert admin.delete(f"/api/v1/users/{eddie}").status_code == 204
    assert editor.get("/api/v1/me").status_code == 401
    assert "eddie" not in [u["username"] for u in admin.get("/api/v1/users").json()]
    kept = admin.get(f"/api/v1/connectors/{connector['id']}")
    assert kept.status_code == 200
    with session_scope(app_settings.effective_database_url) as session:
        row = session.get(Connector, connector["id"])
        assert row is not None and row.owner_id is None
        assert session.scalars(select(ApiToken).where(ApiToken.user_id == eddie)).all() == []
    assert login_response(app_settings, "eddie", "correct-horse-battery").status_code == 401
    assert admin.delete(f"/api/v1/users/{eddie}").status_code == 404
    assert "user.delete" in audit_text(app_settings)

    # A new user given the old name inherits nothing; admins still manage what was kept.
    again = _make_user(app_settings, admin.client, "eddie", "editor")
    assert again.post(f"/api/v1/connectors/{connector['id']}/pause").status_code == 403
    patch = {"name": "taken-over"}
    assert again.patch(f"/api/v1/sources/{connector['source_id']}", json=patch).status_code == 403
    assert admin.post(f"/api/v1/connectors/{connector['id']}/pause").status_code == 200


def test_the_last_active_admin_stays(app_settings: Settings, admin: ApiUser) -> None:
    alice = user_id(app_settings, "alice")
    demote = admin.patch(f"/api/v1/users/{alice}", json={"role": "editor"})
    assert demote.status_code == 409
    assert "last active admin" in demote.json()["detail"]
    assert demote.json()["hint"] == "make another user an admin first"
    # The older query-parameter form of the same change is refused alike.
    assert admin.patch(f"/api/v1/users/{alice}?role=viewer").status_code == 409
    assert admin.patch(f"/api/v1/users/{alice}", json={"disabled": True}).status_code == 409
    assert admin.delete(f"/api/v1/users/{alice}").status_code == 409

    made = admin.post(
        "/api/v1/users", json={"username": "bob", "password": "bob-password-1", "role": "admin"}
    )
    bob = made.json()["id"]
    # With a second active admin alice may step down; then bob is the last one.
    assert admin.patch(f"/api/v1/users/{bob}", json={"disabled": True}).status_code == 200
    assert admin.patch(f"/api/v1/users/{alice}", json={"role": "viewer"}).status_code == 409
    assert admin.patch(f"/api/v1/users/{bob}", json={"disabled": False}).status_code == 200
    assert admin.patch(f"/api/v1/users/{alice}", json={"role": "viewer"}).status_code == 200
    assert admin.get("/api/v1/users").status_code == 403  # alice is a viewer now
    with session_scope(app_settings.effective_database_url) as session:
        admins = session.scalars(select(User).where(User.role == "admin")).all()
        assert [u.username for u in admins if u.is_active] == ["bob"]


def test_viewers_and_editors_cannot_manage_accounts(
    app_settings: Settings, admin: ApiUser, editor: ApiUser, viewer: ApiUser
) -> None:
    alice = user_id(app_settings, "alice")
    for who in (viewer, editor):
        assert who.patch(f"/api/v1/users/{alice}", json={"disabled": True}).status_code == 403
        assert who.patch(f"/api/v1/users/{alice}", json={"role": "viewer"}).status_code == 403
        assert who.delete(f"/api/v1/users/{alice}").status_code == 403
        resp = who.post(f"/api/v1/users/{alice}/password", json={"password": NEW_PASSWORD})
        assert resp.status_code == 403
        ui = UIClient(app_settings).login(who.username)
        for path, data in (
            (f"/admin/users/{alice}/disable", {}),
            (f"/admin/users/{alice}/delete", {}),
            (f"/admin/users/{alice}/password", {"password": NEW_PASSWORD}),
        ):
            assert ui.post(path, data).status_code == 403, path
    # Nothing changed: alice still works with her old password and token.
    assert admin.get("/api/v1/users").status_code == 200
    assert login_response(app_settings, "alice", "correct-horse-battery").status_code == 303


def test_admin_manages_accounts_in_the_ui(
    app_settings: Settings, admin: ApiUser, editor: ApiUser
) -> None:
    ui = UIClient(app_settings).login("alice")
    eddie = user_id(app_settings, "eddie")
    alice = user_id(app_settings, "alice")
    doc = ui.page("/admin/users")
    assert doc.find("form", action=f"/admin/users/{eddie}/disable") is not None
    assert doc.find("form", action=f"/admin/users/{eddie}/delete") is not None
    assert doc.find("form", action=f"/admin/users/{alice}/delete") is None  # not yourself

    resp = ui.post(f"/admin/users/{eddie}/password", {"password": "short"})
    assert resp.status_code == 422
    assert parse_html(resp.text).find("p", id=f"err-password-{eddie}") is not None
    assert ui.post(f"/admin/users/{eddie}/password", {"password": NEW_PASSWORD}).status_code == 303
    assert login_response(app_settings, "eddie", NEW_PASSWORD).status_code == 303

    assert ui.post(f"/admin/users/{eddie}/disable").status_code == 303
    assert "disabled" in ui.page("/admin/users").text
    assert login_response(app_settings, "eddie", NEW_PASSWORD).status_code == 401
    assert ui.post(f"/admin/users/{eddie}/enable").status_code == 303
    assert login_response(app_settings, "eddie", NEW_PASSWORD).status_code == 303

    refused = ui.post(f"/admin/users/{alice}/role", {"role": "viewer"})
    assert refused.status_code == 409
    assert "last active admin" in refused.text

    assert ui.post(f"/admin/users/{eddie}/delete").status_code == 303
    assert "eddie" not in ui.page("/admin/users").find("table").text


# --- the command line ----------------------------------------------------------------


@pytest.fixture
def cli(app_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", app_settings.effective_database_url)
    monkeypatch.setenv("CONVEYOR_HOME", str(app_settings.home))
    assert app_settings.secret_key is not None
    monkeypatch.setenv("CONVEYOR_SECRET_KEY", app_settings.secret_key.get_secret_value())
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_accounts_from_the_cli(
    cli: CliRunner, app_settings: Settings, admin: ApiUser, editor: ApiUser
) -> None:
    def run(*args: str, stdin: str | None = None) -> Any:
        return cli.invoke(cli_app, ["users", *args], input=stdin)

    result = run("set-password", "eddie", "--password-stdin", stdin="short\n")
    assert result.exit_code == 3, result.output
    assert editor.get("/api/v1/me").status_code == 200
    result = run("set-password", "eddie", "--password-stdin", stdin=NEW_PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert "1 token(s) revoked" in result.output
    assert editor.get("/api/v1/me").status_code == 401
    assert login_response(app_settings, "eddie", NEW_PASSWORD).status_code == 303

    assert run("disable", "eddie").exit_code == 0
    assert run("list").output.split("\n")[1].split() == ["eddie", "editor", "disabled"]
    assert login_response(app_settings, "eddie", NEW_PASSWORD).status_code == 401
    assert run("enable", "eddie").exit_code == 0
    assert login_response(app_settings, "eddie", NEW_PASSWORD).status_code == 303

    last = run("disable", "alice")
    assert last.exit_code == 5 and "last active admin" in last.output
    assert run("delete", "alice", "--yes").exit_code == 5
    assert run("disable", "ghost").exit_code == 4

    declined = cli.invoke(cli_app, ["users", "delete", "eddie"], input="n\n")
    assert declined.exit_code != 0
    assert "eddie" in run("list").output
    assert run("delete", "eddie", "--yes").exit_code == 0
    assert "eddie" not in run("list").output
