"""Retention: run records (and their logs) finished more than ``CONVEYOR_RUN_RETENTION_DAYS``
ago are deleted from Conveyor, and their flow runs from Prefect, a batch at a time; each
day's summary (``services/daily_stats.py``) is stored first and kept. Notification events
that old go too once none of their deliveries is still pending (with their delivery rows).

``one_pass`` deletes at most one batch (``CONVEYOR_RUN_RETENTION_BATCH``), oldest first,
and can be called once in a test; ``run_forever`` repeats it, at once while whole batches
come back, else every ``CONVEYOR_RUN_RETENTION_INTERVAL`` seconds. A flow run Prefect no
longer has is fine; while Prefect cannot be reached, the runs whose flow runs could not be
deleted are kept for the next pass (nothing is left behind in Prefect).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import delete, select

from conveyor.db.base import utcnow
from conveyor.db.models import (
    ConnectorRun,
    NotificationDelivery,
    NotificationEvent,
    RunLogChunk,
)
from conveyor.db.session import session_scope
from conveyor.domain.vocabulary import OPEN_RUN_STATUSES
from conveyor.errors import ExternalError
from conveyor.services import daily_stats
from conveyor.settings import Settings

log = logging.getLogger("conveyor.services.retention")

# Deletes a flow run in Prefect; False if it was already gone (``Gateway.delete_flow_run``).
DeleteFlowRun = Callable[[str], Awaitable[bool]]


@dataclass
class PassResult:
    deleted: int = 0  # run records deleted
    flow_runs_deleted: int = 0  # flow runs deleted in Prefect (gone already: not counted)
    days_summarised: int = 0
    events_deleted: int = 0  # notification events (and their deliveries) deleted
    kept: list[int] = field(default_factory=list)  # due, kept: Prefect refused their flow run


def cutoff(settings: Settings, now: datetime | None = None) -> datetime:
    return (now or utcnow()) - timedelta(days=settings.run_retention_days)


async def one_pass(
    *, settings: Settings, delete_flow_run: DeleteFlowRun, now: datetime | None = None
) -> PassResult:
    """Delete one batch of runs finished before the retention cutoff (oldest first)."""
    result = PassResult()
    before = cutoff(settings, now)
    result.events_deleted = await asyncio.to_thread(_delete_old_events, settings, before)
    due = await asyncio.to_thread(_summarise_batch, settings, before, result)
    if not due:
        return result
    removable: list[int] = []
    for run_id, flow_run_id in due:
        if flow_run_id is None:
            removable.append(run_id)
            continue
        try:
            if await delete_flow_run(flow_run_id):
                result.flow_runs_deleted += 1
            removable.append(run_id)
        except ExternalError as exc:
            log.warning("retention: flow run %s of run %s kept: %s", flow_run_id, run_id, exc)
            result.kept.append(run_id)
            if not exc.transient:
                continue
            break  # Prefect is down or busy: the rest waits for the next pass
    result.deleted = await asyncio.to_thread(_delete_records, settings, removable)
    return result


def _summarise_batch(
    settings: Settings, before: datetime, result: PassResult
) -> list[tuple[int, str | None]]:
    """The next batch of runs due, after storing the summary of every day they fall on."""
    with session_scope(settings.effective_database_url) as session:
        rows = list(
            session.scalars(
                select(ConnectorRun)
                .where(
                    ConnectorRun.status.not_in(OPEN_RUN_STATUSES),
                    ConnectorRun.finished_at.is_not(None),
                    ConnectorRun.finished_at < before,
                )
                .order_by(ConnectorRun.id)
                .limit(settings.run_retention_batch)
            )
        )
        days: dict[int, set[date]] = {}
        for run in rows:
            days.setdefault(run.connector_id, set()).add(daily_stats.day_of(run))
        for connector_id, wanted in days.items():
            result.days_summarised += daily_stats.roll_up(connector_id, wanted, session=session)
        return [(int(r.id), r.prefect_flow_run_id) for r in rows]


def _delete_records(settings: Settings, run_ids: list[int]) -> int:
    if not run_ids:
        return 0
    with session_scope(settings.effective_database_url) as session:
        # Log chunks go with their run (the foreign key cascades too; this does not rely on it).
        session.execute(delete(RunLogChunk).where(RunLogChunk.run_id.in_(run_ids)))
        result = session.execute(delete(ConnectorRun).where(ConnectorRun.id.in_(run_ids)))
        return int(getattr(result, "rowcount", 0) or 0)


def _delete_old_events(settings: Settings, before: datetime) -> int:
    """One batch of notification events older than the cutoff with no delivery still
    pending, deleted with their deliveries; how many."""
    pending = select(NotificationDelivery.id).where(
        NotificationDelivery.event_id == NotificationEvent.id,
        NotificationDelivery.status == "pending",
    )
    with session_scope(settings.effective_database_url) as session:
        ids = list(
            session.scalars(
                select(NotificationEvent.id)
                .where(NotificationEvent.occurred_at < before, ~pending.exists())
                .order_by(NotificationEvent.id)
                .limit(settings.run_retention_batch)
            )
        )
        if not ids:
            return 0
        session.execute(delete(NotificationDelivery).where(NotificationDelivery.event_id.in_(ids)))
        session.execute(delete(NotificationEvent).where(NotificationEvent.id.in_(ids)))
        return len(ids)


async def run_forever(
    settings: Settings, *, stop: asyncio.Event, delete_flow_run: DeleteFlowRun
) -> None:
    """Passes until ``stop`` is set: back to back while whole batches are due, else every
    ``run_retention_interval`` seconds."""
    while not stop.is_set():
        wait = settings.run_retention_interval
        try:
            result = await one_pass(settings=settings, delete_flow_run=delete_flow_run)
            if result.deleted:
                log.info(
                    "retention deleted %d run(s) older than %d days (%d flow runs in Prefect)",
                    result.deleted,
                    settings.run_retention_days,
                    result.flow_runs_deleted,
                )
            if result.events_deleted:
                log.info("retention deleted %d notification event(s)", result.events_deleted)
            busy = max(result.deleted, result.events_deleted) >= settings.run_retention_batch
            if busy and not result.kept:
                wait = 1.0  # more are due: the next batch soon, without hogging the database
        except Exception:  # the database is unreachable, or a bug: try again later
            log.exception("retention pass failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=wait)
