"""The freshness loop: freshness SLAs (``connector.stale``) and connectors left unsynced
(``sync.error``), checked every ``CONVEYOR_FRESHNESS_INTERVAL`` seconds beside the run
watchdog (``sync/loop.py``).

- **Stale:** an active connector with ``freshness_sla_minutes`` whose last successful run
  finished (or, with none, which was created) longer ago than that is marked
  ``stale_since`` and ``connector.stale`` fires, once per breach: the mark is set by a
  conditional UPDATE (only while it is null) in the event's transaction, so several loops
  never fire twice. The next successful run clears it (``services/run_events.py``); a
  later breach fires again. A connector whose SLA is removed stops being stale.
- **Not synced:** a connector whose ``sync_status`` is not ``synced`` for longer than
  ``CONVEYOR_NOTIFY_SYNC_ERROR_AFTER`` seconds gets ``sync_alerted_at`` and ``sync.error``,
  once per spell; the reconciler clears the mark when it records the connector synced
  (``sync/store.py``). The spell is counted from the later of the connector's last sync
  (``synced_at``) and its last change (``updated_at``; every change makes it ``pending``),
  and, in a running loop, not before this loop first saw it unsynced (a deployment synced
  long ago whose drift repair fails is not reported at once).

``one_pass`` does one look and can be called once in a test; ``run_forever`` repeats it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from conveyor.db.base import utcnow
from conveyor.db.models import Connector, ConnectorRun
from conveyor.db.session import session_scope
from conveyor.services import notify
from conveyor.settings import Settings

log = logging.getLogger("conveyor.services.freshness")


@dataclass
class PassResult:
    """What one pass fired."""

    stale: int = 0
    sync_errors: int = 0


def one_pass(
    settings: Settings,
    now: datetime | None = None,
    *,
    first_seen: dict[int, datetime] | None = None,
) -> PassResult:
    """Fire ``connector.stale`` and ``sync.error`` where due. ``first_seen`` (a running
    loop's memory: connector id → when it was first seen unsynced) is kept up to date."""
    now = now or utcnow()
    out = PassResult()
    with session_scope(settings.effective_database_url) as session:
        out.stale = _stale(session, now)
    with session_scope(settings.effective_database_url) as session:
        out.sync_errors = _unsynced(session, now, settings.notify_sync_error_after, first_seen)
    return out


# --- freshness SLA -------------------------------------------------------------------


def last_success_at(session: Session, connector_id: int) -> datetime | None:
    """When the connector's newest succeeded run finished (None: none has)."""
    return session.scalar(
        select(ConnectorRun.finished_at)
        .where(ConnectorRun.connector_id == connector_id, ConnectorRun.status == "succeeded")
        .order_by(ConnectorRun.id.desc())
        .limit(1)
    )


def _stale(session: Session, now: datetime) -> int:
    # No SLA any more: not stale any more (a later SLA starts a new breach).
    session.execute(
        update(Connector)
        .where(Connector.freshness_sla_minutes.is_(None), Connector.stale_since.is_not(None))
        .values(stale_since=None, updated_at=Connector.updated_at)
        .execution_options(synchronize_session=False)
    )
    watched = session.scalars(
        select(Connector).where(
            Connector.is_active.is_(True),
            Connector.freshness_sla_minutes.is_not(None),
            Connector.stale_since.is_(None),
        )
    ).all()
    fired = 0
    for c in watched:
        assert c.freshness_sla_minutes is not None
        last = last_success_at(session, c.id)
        if now - (last or c.created_at) <= timedelta(minutes=c.freshness_sla_minutes):
            continue
        if not _mark(session, c.id, Connector.stale_since, now):
            continue  # another loop marked it first
        notify.emit(
            session,
            "connector.stale",
            key=f"connector.stale:connector-{c.id}:{now.isoformat()}",
            connector=c,
            details={
                "freshness_sla_minutes": c.freshness_sla_minutes,
                "last_success_at": last.isoformat() if last else None,
                "stale_since": now.isoformat(),
            },
            now=now,
        )
        log.warning("connector %s is stale: no successful run since %s", c.id, last)
        fired += 1
    return fired


# --- not synced to Prefect -------------------------------------------------------------


def _unsynced(
    session: Session, now: datetime, after: float, first_seen: dict[int, datetime] | None
) -> int:
    rows = session.scalars(
        select(Connector).where(
            Connector.sync_status != "synced", Connector.sync_alerted_at.is_(None)
        )
    ).all()
    if first_seen is not None:
        current = {c.id for c in rows}
        for cid in list(first_seen):
            if cid not in current:
                del first_seen[cid]  # synced again (or alerted, or deleted)
        for c in rows:
            first_seen.setdefault(c.id, now)
    fired = 0
    for c in rows:
        since = max(t for t in (c.synced_at, c.updated_at, c.created_at) if t is not None)
        if first_seen is not None:
            since = max(since, first_seen[c.id])
        if (now - since).total_seconds() <= after:
            continue
        if not _mark(session, c.id, Connector.sync_alerted_at, now, unsynced=True):
            continue
        notify.emit(
            session,
            "sync.error",
            key=f"sync.error:connector-{c.id}:{now.isoformat()}",
            connector=c,
            details={
                "sync_status": c.sync_status,
                "sync_error": c.sync_error,
                "not_synced_since": since.isoformat(),
            },
            now=now,
        )
        log.warning("connector %s not synced to Prefect since %s: %s", c.id, since, c.sync_error)
        if first_seen is not None:
            first_seen.pop(c.id, None)  # alerted: watched again once synced
        fired += 1
    return fired


def _mark(
    session: Session,
    connector_id: int,
    column: InstrumentedAttribute[datetime | None],
    now: datetime,
    **how: bool,
) -> bool:
    """Set ``column`` to ``now`` while it is null (and, for sync, the connector unsynced):
    a conditional UPDATE that leaves ``version`` and ``updated_at``; whether it did."""
    stmt = update(Connector).where(Connector.id == connector_id, column.is_(None))
    if how.get("unsynced"):
        stmt = stmt.where(Connector.sync_status != "synced")
    result = session.execute(
        stmt.values({column: now, Connector.updated_at: Connector.updated_at}).execution_options(
            synchronize_session=False
        )
    )
    return int(getattr(result, "rowcount", 0) or 0) == 1


# --- the loop ------------------------------------------------------------------------


async def run_forever(settings: Settings, *, stop: asyncio.Event) -> None:
    """One pass every ``freshness_interval`` seconds until ``stop`` is set."""
    first_seen: dict[int, datetime] = {}
    while not stop.is_set():
        try:
            result = await asyncio.to_thread(one_pass, settings, first_seen=first_seen)
            if result.stale or result.sync_errors:
                log.info(
                    "freshness: %d connector(s) stale, %d not synced",
                    result.stale,
                    result.sync_errors,
                )
        except Exception:  # the database is unreachable, or a bug: keep watching
            log.exception("freshness pass failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.freshness_interval)
