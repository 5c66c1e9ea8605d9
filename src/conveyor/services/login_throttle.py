"""Login throttling: failed logins counted per account name and per client address.

The counts live in the database (``login_throttle``) so that every web replica sees the
same guesses. An attempt locks its two rows for its transaction, so concurrent guesses at
one account queue instead of all passing the check at once; a throttled attempt is refused
before any password is hashed.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from conveyor.db.models import LoginThrottle
from conveyor.errors import TooManyAttempts
from conveyor.settings import Settings


@dataclass(frozen=True)
class Limits:
    """How many failures each scope allows before it waits, and for how long."""

    per_account: int = 5
    per_address: int = 20
    backoff: float = 30.0  # the first wait, in seconds; doubled by each further failure
    backoff_max: float = 900.0
    window: float = 3600.0  # failures are forgotten after this long without another

    @classmethod
    def from_settings(cls, s: Settings) -> Limits:
        return cls(
            per_account=s.login_max_failures,
            per_address=s.login_max_failures_per_address,
            backoff=s.login_backoff,
            backoff_max=s.login_backoff_max,
            window=s.login_failure_window,
        )


def _key_hash(scope: str, key: str) -> str:
    return hashlib.sha256(f"{scope}\0{key}".encode()).hexdigest()


def _locked_row(scope: str, key: str, *, session: Session) -> LoginThrottle:
    """The scope's row for ``key``, created if new, locked until the transaction ends."""
    key_hash = _key_hash(scope, key)
    query = (
        select(LoginThrottle)
        .where(LoginThrottle.scope == scope, LoginThrottle.key_hash == key_hash)
        .with_for_update()
    )
    row = session.scalars(query).first()
    if row is not None:
        return row
    try:
        with session.begin_nested():
            row = LoginThrottle(scope=scope, key_hash=key_hash, failures=0)
            session.add(row)
            session.flush()
        return row
    except IntegrityError:
        # Another replica created it meanwhile; its insert has committed by now.
        return session.scalars(query).one()


def _wait(row: LoginThrottle, now: datetime) -> int:
    if row.blocked_until is None or row.blocked_until <= now:
        return 0
    return max(1, math.ceil((row.blocked_until - now).total_seconds()))


class Attempt:
    """One login attempt: its account and address rows, and what the outcome does to them."""

    def __init__(
        self, rows: list[tuple[LoginThrottle, int]], *, session: Session, limits: Limits
    ) -> None:
        self.rows = rows
        self.session = session
        self.limits = limits

    def failed(self) -> None:
        """Count the failure in each scope; past its limit, the scope waits, doubling."""
        now = datetime.now(UTC)
        for row, allowed in self.rows:
            recent = row.last_failure_at is not None and (
                (now - row.last_failure_at).total_seconds() <= self.limits.window
            )
            row.failures = (row.failures if recent else 0) + 1
            row.last_failure_at = now
            over = row.failures - allowed
            if over >= 0:
                wait = min(self.limits.backoff_max, self.limits.backoff * 2 ** min(over, 30))
                row.blocked_until = now + timedelta(seconds=wait)
        self._forget_old(now)

    def succeeded(self) -> None:
        """A right password clears the account's count (not the address's: one good
        account must not reset the guesses made from the same place at others)."""
        account, _ = self.rows[0]
        self.session.delete(account)
        address, _ = self.rows[1]
        if address.failures == 0:
            self.session.delete(address)

    def _forget_old(self, now: datetime) -> None:
        cutoff = now - timedelta(seconds=self.limits.window)
        # SKIP LOCKED (PostgreSQL): never wait on, or deadlock with, a login in flight.
        stale = (
            select(LoginThrottle.id)
            .where(
                LoginThrottle.last_failure_at < cutoff,
                or_(LoginThrottle.blocked_until.is_(None), LoginThrottle.blocked_until < now),
            )
            .with_for_update(skip_locked=True)
        )
        self.session.execute(
            delete(LoginThrottle).where(LoginThrottle.id.in_(stale)),
            execution_options={"synchronize_session": False},
        )


def clear_account(username: str, *, session: Session) -> None:
    """Forget an account's failures (an admin set a new password: let its owner in)."""
    key_hash = _key_hash("account", username.strip().casefold())
    session.execute(
        delete(LoginThrottle).where(
            LoginThrottle.scope == "account", LoginThrottle.key_hash == key_hash
        )
    )


def begin(username: str, address: str, *, session: Session, limits: Limits) -> Attempt:
    """Start an attempt for ``username`` from ``address``; TooManyAttempts while either
    waits. Call before hashing anything: a refused attempt costs no argon2 time."""
    rows = [
        (_locked_row("account", username.strip().casefold(), session=session), limits.per_account),
        (_locked_row("address", address, session=session), limits.per_address),
    ]
    now = datetime.now(UTC)
    wait = max(_wait(row, now) for row, _ in rows)
    if wait:
        # The same words whichever scope waits and whether the account exists.
        raise TooManyAttempts(
            f"too many failed logins; try again in {wait} seconds",
            retry_after=wait,
            hint="each further wrong password doubles the wait",
        )
    return Attempt(rows, session=session, limits=limits)
