"""Only one reconciler acts at a time.

PostgreSQL: a session-level advisory lock held on a dedicated connection; the server
releases it the moment that connection dies (process killed, host gone), so a waiting
reconciler takes over at once. SQLite (one host): a row in ``leases`` with an expiry that
the holder renews; a waiting reconciler takes over once it has expired.
Either way the holder's name and heartbeat are kept in the lease row for ``sync status``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import Connection, create_engine, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from conveyor.db.base import utcnow
from conveyor.db.models import Lease
from conveyor.db.session import normalise_url, session_scope
from conveyor.sync.store import LEASE_NAME, rowcount

log = logging.getLogger("conveyor.sync.lock")

# pg_try_advisory_lock key: "Conveyor reconciler", fixed so every process agrees.
ADVISORY_KEY = 0x436F6E7665796F72 & 0x7FFFFFFFFFFFFFFF


def holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Lock(Protocol):
    holder: str
    ttl: float

    def try_acquire(self) -> bool: ...
    def renew(self) -> bool: ...
    def release(self) -> None: ...


def _announce(url: str, holder: str, ttl: float, *, take: bool) -> bool:
    """Write the holder and heartbeat into the lease row.

    With ``take`` the row is the lock itself: claimed only when free, ours, or expired.
    SQLite's BEGIN IMMEDIATE (see db/session.py) makes the read-then-write atomic.
    """
    now = utcnow()
    with session_scope(url) as session:
        lease = session.get(Lease, LEASE_NAME)
        if lease is None:
            lease = Lease(name=LEASE_NAME, info={})
            session.add(lease)
        elif take and not _free(lease, holder, now):
            return False
        lease.holder = holder
        lease.heartbeat_at = now
        lease.expires_at = now + timedelta(seconds=ttl)
    return True


def _free(lease: Lease, holder: str, now: datetime) -> bool:
    return lease.holder in (None, holder) or lease.expires_at is None or lease.expires_at <= now


class LeaseLock:
    """The lease row is the lock (SQLite)."""

    def __init__(self, url: str, holder: str, ttl: float = 30.0) -> None:
        self.url = url
        self.holder = holder
        self.ttl = ttl

    def try_acquire(self) -> bool:
        return _announce(self.url, self.holder, self.ttl, take=True)

    def renew(self) -> bool:
        now = utcnow()
        with session_scope(self.url) as session:
            result = session.execute(
                update(Lease)
                # Still ours even if it expired: nobody else claimed it meanwhile.
                .where(Lease.name == LEASE_NAME, Lease.holder == self.holder)
                .values(heartbeat_at=now, expires_at=now + timedelta(seconds=self.ttl))
                .execution_options(synchronize_session=False)
            )
            return rowcount(result) > 0

    def release(self) -> None:
        with session_scope(self.url) as session:
            session.execute(
                update(Lease)
                .where(Lease.name == LEASE_NAME, Lease.holder == self.holder)
                .values(holder=None, expires_at=None)
                .execution_options(synchronize_session=False)
            )


class AdvisoryLock:
    """pg_try_advisory_lock on a connection of its own (PostgreSQL)."""

    def __init__(self, url: str, holder: str, ttl: float = 30.0) -> None:
        self.url = url
        self.holder = holder
        self.ttl = ttl
        self._engine = create_engine(normalise_url(url), poolclass=NullPool)
        self._conn: Connection | None = None

    def try_acquire(self) -> bool:
        conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            got = bool(
                conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_KEY}).scalar()
            )
        except Exception:
            conn.close()
            raise
        if not got:
            conn.close()
            return False
        self._conn = conn
        _announce(self.url, self.holder, self.ttl, take=False)
        return True

    def renew(self) -> bool:
        if self._conn is None:
            return False
        try:
            self._conn.execute(text("SELECT 1"))
        except Exception:
            log.warning("lost the connection holding the reconciler lock")
            self._drop()
            return False
        try:
            _announce(self.url, self.holder, self.ttl, take=False)
        except Exception:  # the heartbeat is informational; the lock is the connection
            log.warning("could not record the reconciler heartbeat", exc_info=True)
        return True

    def release(self) -> None:
        if self._conn is None:
            return
        # Closing the connection releases it anyway if this fails.
        with contextlib.suppress(Exception):
            self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_KEY})
        self._drop()
        try:
            LeaseLock(self.url, self.holder).release()
        except Exception:
            log.debug("could not clear the lease row", exc_info=True)

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        self._engine.dispose()


def make_lock(url: str, holder: str | None = None, ttl: float = 30.0) -> Lock:
    """The right lock for the database behind ``url``."""
    holder = holder or holder_name()
    if make_url(normalise_url(url)).get_backend_name() == "postgresql":
        return AdvisoryLock(url, holder, ttl)
    return LeaseLock(url, holder, ttl)
