"""Login throttling: per account name and per client address, counted in the database,
429 with Retry-After and a doubling wait, refused before any password is hashed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from conveyor.db.models import LoginThrottle
from conveyor.db.session import session_scope
from conveyor.services import users as users_service
from conveyor.settings import Settings
from conveyor.web.app import create_app
from tests.fixtures.ui import PASSWORD, csrf_of, make_user, parse_html
from tests.fixtures.web import ApiUser

PER_ACCOUNT = 3
PER_ADDRESS = 5
BACKOFF = 30


class CountingHasher(PasswordHasher):
    """The real argon2 hasher (at its cheapest), counting every hash and verify it runs."""

    calls = 0

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        type(self).calls += 1
        return super().hash(password, salt=salt)

    def verify(self, hash: str | bytes, password: str | bytes) -> Any:
        type(self).calls += 1
        return super().verify(hash, password)


@pytest.fixture(autouse=True)
def _counting_hasher(monkeypatch: pytest.MonkeyPatch) -> None:
    CountingHasher.calls = 0
    monkeypatch.setattr(
        users_service, "_HASHER", CountingHasher(time_cost=1, memory_cost=8, parallelism=1)
    )


@pytest.fixture
def app_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "login_max_failures": PER_ACCOUNT,
            "login_max_failures_per_address": PER_ADDRESS,
            "login_backoff": BACKOFF,
        }
    )


@pytest.fixture
def users(app_settings: Settings) -> Settings:
    make_user(app_settings, "alice", "admin")
    make_user(app_settings, "eddie", "editor")
    return app_settings


class Browser:
    """A browser at one client address."""

    def __init__(self, settings: Settings, address: str) -> None:
        self.http = TestClient(create_app(settings), client=(address, 40000))

    def login(self, username: str, password: str) -> Any:
        token = csrf_of(self.http.get("/login").text)
        return self.http.post(
            "/login",
            data={"username": username, "password": password, "csrf_token": token},
            follow_redirects=False,
        )


def error_text(resp: Any) -> str:
    return str(parse_html(resp.text).find("p", id="err-password").text)


def time_passes(settings: Settings) -> None:
    """Every wait ends now (as if its seconds had gone by); the counts stay."""
    past = datetime.now(UTC) - timedelta(seconds=1)
    with session_scope(settings.effective_database_url) as session:
        session.execute(update(LoginThrottle).values(blocked_until=past))


def test_an_account_waits_after_too_many_failures_from_anywhere(users: Settings) -> None:
    here, there = Browser(users, "198.51.100.1"), Browser(users, "198.51.100.2")
    for _ in range(PER_ACCOUNT):
        assert here.login("eddie", "wrong-password").status_code == 401
    refused = here.login("eddie", PASSWORD)  # even the right password now waits
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= BACKOFF
    assert "try again in" in error_text(refused)
    # Per account: another address is refused for eddie too, but not for alice.
    assert there.login("eddie", PASSWORD).status_code == 429
    assert here.login("alice", PASSWORD).status_code == 303


def test_the_wait_doubles_and_a_success_resets_the_account(users: Settings) -> None:
    b = Browser(users, "198.51.100.7")
    for _ in range(PER_ACCOUNT):
        b.login("eddie", "wrong-password")
    first = int(b.login("eddie", "wrong-password").headers["Retry-After"])
    time_passes(users)
    assert b.login("eddie", "wrong-password").status_code == 401  # failure 4: waits 2x
    second = int(b.login("eddie", "wrong-password").headers["Retry-After"])
    time_passes(users)
    assert b.login("eddie", "wrong-password").status_code == 401  # failure 5: waits 4x
    third = int(b.login("eddie", "wrong-password").headers["Retry-After"])
    assert (first, second, third) == (BACKOFF, 2 * BACKOFF, 4 * BACKOFF)

    time_passes(users)
    assert b.login("eddie", PASSWORD).status_code == 303
    # The account's count starts again (from an address with no count of its own):
    # PER_ACCOUNT - 1 failures leave the next attempt allowed.
    c = Browser(users, "198.51.100.8")
    for _ in range(PER_ACCOUNT - 1):
        assert c.login("eddie", "wrong-password").status_code == 401
    assert c.login("eddie", "wrong-password").status_code == 401
    assert c.login("eddie", "wrong-password").status_code == 429


def test_an_address_waits_after_too_many_failures_at_any_account(users: Settings) -> None:
    guesser, elsewhere = Browser(users, "203.0.113.9"), Browser(users, "203.0.113.10")
    for i in range(PER_ADDRESS):
        # A different (mostly unknown) name each time: no account reaches its own limit.
        assert guesser.login(f"user{i}", "wrong-password").status_code == 401
    refused = guesser.login("alice", PASSWORD)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert elsewhere.login("alice", PASSWORD).status_code == 303
    # A success at one account does not clear the address's count.
    time_passes(users)
    assert guesser.login("alice", PASSWORD).status_code == 303
    assert guesser.login("user0", "wrong-password").status_code == 401
    assert guesser.login("eddie", PASSWORD).status_code == 429


def test_unknown_and_real_accounts_are_throttled_alike(users: Settings) -> None:
    a, b = Browser(users, "198.51.100.20"), Browser(users, "198.51.100.21")
    real = [a.login("eddie", "wrong-password") for _ in range(PER_ACCOUNT + 1)]
    unknown = [b.login("nobody", "wrong-password") for _ in range(PER_ACCOUNT + 1)]
    assert real[-1].status_code == 429
    assert [r.status_code for r in real] == [r.status_code for r in unknown]
    assert [error_text(r) for r in real] == [error_text(r) for r in unknown]


def test_a_throttled_attempt_hashes_nothing(users: Settings) -> None:
    b = Browser(users, "198.51.100.30")
    before = CountingHasher.calls
    assert b.login("eddie", "wrong-password").status_code == 401
    assert CountingHasher.calls > before  # an allowed attempt does run argon2
    for _ in range(PER_ACCOUNT - 1):
        b.login("eddie", "wrong-password")
    before = CountingHasher.calls
    for password in ("wrong-password", PASSWORD, "another-guess"):
        assert b.login("eddie", password).status_code == 429
    for i in range(3):
        Browser(users, f"192.0.2.{i}").login("eddie", "wrong-password")
    assert CountingHasher.calls == before


def test_the_counts_are_kept_as_hashes_not_names(users: Settings) -> None:
    Browser(users, "198.51.100.40").login("secret-typed-as-a-name", "wrong-password")
    with session_scope(users.effective_database_url) as session:
        rows = session.scalars(select(LoginThrottle)).all()
        assert {r.scope for r in rows} == {"account", "address"}
        assert all(len(r.key_hash) == 64 for r in rows)
        assert not any("secret" in r.key_hash for r in rows)
        assert session.scalar(select(func.count()).select_from(LoginThrottle)) == 2


def test_wrong_current_passwords_are_throttled_too(app_settings: Settings, editor: ApiUser) -> None:
    body = {"current_password": "guess", "new_password": "a-brand-new-passphrase"}
    for _ in range(PER_ACCOUNT):
        assert editor.post("/api/v1/me/password", json=body).status_code == 422
    before = CountingHasher.calls
    resp = editor.post("/api/v1/me/password", json={**body, "current_password": PASSWORD})
    assert resp.status_code == 429
    assert int(resp.headers["Retry-After"]) >= 1 and "try again" in resp.json()["detail"]
    assert CountingHasher.calls == before
    assert editor.get("/api/v1/me").status_code == 200  # nothing changed


def test_an_admin_reset_lets_a_throttled_user_in(users: Settings) -> None:
    from conveyor.services.authz import SYSTEM

    b = Browser(users, "198.51.100.50")
    for _ in range(PER_ACCOUNT):
        b.login("eddie", "wrong-password")
    assert b.login("eddie", PASSWORD).status_code == 429
    with session_scope(users.effective_database_url) as session:
        eddie = users_service.get_by_username("eddie", session=session)
        assert eddie is not None
        users_service.reset_password(eddie.id, "a-fresh-password", session=session, actor=SYSTEM)
    assert Browser(users, "198.51.100.51").login("eddie", "a-fresh-password").status_code == 303
