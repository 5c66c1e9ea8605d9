"""Only one reconciler acts: the lease row on SQLite, the advisory lock on PostgreSQL."""

from __future__ import annotations

import time

from sqlalchemy import select

from conveyor.db.models import Lease
from conveyor.db.session import session_scope
from conveyor.sync.lock import AdvisoryLock, LeaseLock, make_lock
from conveyor.sync.store import LEASE_NAME


def holder(url: str) -> str | None:
    with session_scope(url) as s:
        lease = s.scalars(select(Lease).where(Lease.name == LEASE_NAME)).first()
        return lease.holder if lease else None


def test_one_holder_at_a_time_and_release_hands_over(database_url: str) -> None:
    a = make_lock(database_url, "a", ttl=30)
    b = make_lock(database_url, "b", ttl=30)
    assert a.try_acquire()
    assert not b.try_acquire()
    assert a.renew()
    assert holder(database_url) == "a"
    a.release()
    assert b.try_acquire()
    assert holder(database_url) == "b"
    assert not a.try_acquire()
    b.release()


def test_sqlite_lease_of_a_silent_holder_expires(database_url: str, backend: str) -> None:
    if backend != "sqlite":
        assert isinstance(make_lock(database_url, "x"), AdvisoryLock)
        return
    a = LeaseLock(database_url, "a", ttl=0.5)
    b = LeaseLock(database_url, "b", ttl=0.5)
    assert a.try_acquire()
    assert not b.try_acquire()
    time.sleep(0.7)  # a stopped renewing (killed)
    assert b.try_acquire()
    assert not a.renew()  # a finds out it lost the lease and stops acting


def test_postgres_lock_dies_with_its_connection(database_url: str, backend: str) -> None:
    if backend != "postgres":
        assert isinstance(make_lock(database_url, "x"), LeaseLock)
        return
    a = AdvisoryLock(database_url, "a")
    b = AdvisoryLock(database_url, "b")
    assert a.try_acquire()
    assert not b.try_acquire()
    assert a._conn is not None
    a._conn.invalidate()  # the process holding it died: its connection is gone
    a._conn = None
    assert b.try_acquire()
    assert not a.renew()
    b.release()
