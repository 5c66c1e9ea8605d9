"""UI login, logout, session cookie flags and CSRF protection."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from conveyor.settings import Settings
from conveyor.web.app import create_app
from tests.fixtures.ui import (
    UIClient,
    cheap_password_hashing,
    csrf_of,
    make_user,
    parse_html,
    unlabelled_fields,
)


@pytest.fixture
def users(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    cheap_password_hashing(monkeypatch)
    make_user(settings, "alice", "admin")
    return settings


def test_pages_need_login_and_come_back_after_it(users: Settings) -> None:
    http = TestClient(create_app(users))
    resp = http.get("/connectors?q=abc", follow_redirects=False)
    assert resp.status_code == 303
    assert resp.headers["location"] == "/login?next=%2Fconnectors%3Fq%3Dabc"
    page = http.get(resp.headers["location"])
    doc = parse_html(page.text)
    assert doc.find("input", name="next").attrs["value"] == "/connectors?q=abc"
    assert unlabelled_fields(doc) == []
    resp = http.post(
        "/login",
        data={
            "username": "alice",
            "password": "correct-horse-battery",
            "next": "/connectors?q=abc",
            "csrf_token": csrf_of(page.text),
        },
        follow_redirects=False,
    )
    assert resp.status_code == 303
    assert resp.headers["location"] == "/connectors?q=abc"
    assert http.get("/connectors").status_code == 200


def test_wrong_password_is_explained_next_to_the_field(users: Settings) -> None:
    http = TestClient(create_app(users))
    token = csrf_of(http.get("/login").text)
    resp = http.post("/login", data={"username": "alice", "password": "nope", "csrf_token": token})
    assert resp.status_code == 401
    doc = parse_html(resp.text)
    err = doc.find("p", id="err-password")
    assert err is not None and "wrong password" in err.text
    assert doc.find("input", name="username").attrs["value"] == "alice"
    assert http.get("/connectors", follow_redirects=False).status_code == 303


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil"])
def test_login_never_redirects_off_site(users: Settings, target: str) -> None:
    http = TestClient(create_app(users))
    token = csrf_of(http.get("/login").text)
    resp = http.post(
        "/login",
        data={
            "username": "alice",
            "password": "correct-horse-battery",
            "next": target,
            "csrf_token": token,
        },
        follow_redirects=False,
    )
    assert resp.headers["location"] == "/connectors"


def test_every_post_needs_the_session_csrf_token(users: Settings) -> None:
    ui = UIClient(users).login("alice")
    # No token, a wrong token, and another session's token are all refused.
    other = UIClient(users).login("alice")
    for token in (None, "forged", other.csrf):
        data = {"name": "t"} if token is None else {"name": "t", "csrf_token": token}
        resp = ui.http.post("/admin/tokens", data=data, follow_redirects=False)
        assert resp.status_code == 403, token
        assert "security token" in resp.text
    assert "No tokens yet" in ui.get("/admin/tokens").text
    # The header form (htmx) works as well as the hidden field.
    resp = ui.htmx("POST", "/admin/tokens", data={"name": "t"})
    assert resp.status_code == 201


def test_login_form_itself_needs_the_token(users: Settings) -> None:
    http = TestClient(create_app(users))
    resp = http.post("/login", data={"username": "alice", "password": "correct-horse-battery"})
    assert resp.status_code == 403
    assert http.get("/connectors", follow_redirects=False).status_code == 303


def test_logout_ends_the_session(users: Settings) -> None:
    ui = UIClient(users).login("alice")
    old_cookie = ui.http.cookies.get("conveyor_session")
    assert ui.post("/logout").headers["location"] == "/login"
    assert ui.get("/connectors", follow_redirects=False).status_code == 303
    # The response replaced the cookie: the browser no longer holds the logged-in one.
    assert ui.http.cookies.get("conveyor_session") != old_cookie


def test_a_copied_cookie_stops_working_at_logout(users: Settings) -> None:
    ui = UIClient(users).login("alice")
    thief = TestClient(create_app(users))
    thief.cookies.set("conveyor_session", str(ui.http.cookies.get("conveyor_session")))
    assert thief.get("/connectors", follow_redirects=False).status_code == 200
    assert thief.get("/api/v1/me").status_code == 200
    ui.post("/logout")
    assert thief.get("/connectors", follow_redirects=False).headers["location"].startswith("/login")
    assert thief.get("/api/v1/me").status_code == 401
    # another login of the same user is not affected by this one's logout
    other = UIClient(users).login("alice")
    second = UIClient(users).login("alice")
    second.post("/logout")
    assert other.get("/connectors", follow_redirects=False).status_code == 200


def test_a_deactivated_user_is_logged_out_everywhere(users: Settings) -> None:
    from conveyor.db.models import User
    from conveyor.db.session import session_scope

    ui = UIClient(users).login("alice")
    with session_scope(users.effective_database_url) as s:
        user = s.query(User).filter_by(username="alice").one()
        user.is_active = False
    assert ui.get("/connectors", follow_redirects=False).status_code == 303


def test_session_cookie_flags(settings: Settings) -> None:
    make_user(settings, "alice", "admin")
    for secure in (False, True):
        s = settings.model_copy(update={"session_secure_cookie": secure})
        http = TestClient(create_app(s), base_url="https://testserver")
        resp = http.get("/login")
        cookie = resp.headers["set-cookie"].lower()
        assert "conveyor_session=" in cookie
        assert "httponly" in cookie
        assert "samesite=lax" in cookie
        assert ("secure" in cookie) is secure


def test_login_rotates_the_csrf_token(users: Settings) -> None:
    http = TestClient(create_app(users))
    before = csrf_of(http.get("/login").text)
    http.post(
        "/login",
        data={"username": "alice", "password": "correct-horse-battery", "csrf_token": before},
    )
    after = csrf_of(http.get("/connectors").text)
    assert after != before


def test_pages_refuse_framing(users: Settings) -> None:
    resp = TestClient(create_app(users)).get("/login")
    assert resp.headers["x-frame-options"] == "DENY"
    assert resp.headers["x-content-type-options"] == "nosniff"
