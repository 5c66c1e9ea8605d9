"""The figures /metrics reports, each one aggregate query on the shared database.

Runs are written by flow processes and deployments by the reconciler, so no in-process
counter would see them; the web layer turns these figures into Prometheus text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import case, func, literal, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from conveyor.db.models import Connector, ConnectorRun, Lease, OutboxEntry
from conveyor.db.session import session_scope
from conveyor.services.health import RECONCILER_LEASE
from conveyor.settings import Settings


@dataclass(frozen=True)
class Durations:
    """Finished runs of one status: count, total seconds, and cumulative bucket counts."""

    status: str
    count: int
    total_seconds: float
    cumulative: list[int]


@dataclass(frozen=True)
class Figures:
    connectors_by_sync_status: dict[str, int]
    connectors_active: int
    runs_by_status: dict[str, int]
    durations: list[Durations]
    oldest_outbox_at: datetime | None  # aware (UTC)
    outbox_pending: int
    reconciler_heartbeat_at: datetime | None


def _duration_seconds(session: Session) -> ColumnElement[Any]:
    started, finished = ConnectorRun.started_at, ConnectorRun.finished_at
    if session.get_bind().dialect.name == "sqlite":
        return (func.julianday(finished) - func.julianday(started)) * 86400.0
    return func.extract("epoch", finished - started)


def _durations(session: Session, buckets: tuple[float, ...]) -> list[Durations]:
    d = _duration_seconds(session)
    bucket_cols = [func.sum(case((d <= b, literal(1)), else_=literal(0))) for b in buckets]
    q = (
        select(ConnectorRun.status, func.count(), func.sum(d), *bucket_cols)
        .where(ConnectorRun.started_at.is_not(None), ConnectorRun.finished_at.is_not(None))
        .group_by(ConnectorRun.status)
    )
    return [
        Durations(status, int(count), float(total or 0.0), [int(c or 0) for c in cumulative])
        for status, count, total, *cumulative in session.execute(q).all()
    ]


def read(settings: Settings, buckets: tuple[float, ...]) -> Figures:
    """Every figure, in one short read transaction."""
    with session_scope(settings.effective_database_url) as session:
        # Comprehensions, not dict(): a Result has .keys() and would be read as a mapping.
        by_sync: dict[str, int] = {
            status: n
            for status, n in session.execute(
                select(Connector.sync_status, func.count()).group_by(Connector.sync_status)
            )
        }
        active = session.scalar(select(func.count()).where(Connector.is_active.is_(True))) or 0
        by_status: dict[str, int] = {
            status: n
            for status, n in session.execute(
                select(ConnectorRun.status, func.count()).group_by(ConnectorRun.status)
            )
        }
        durations = _durations(session, buckets)
        oldest, pending = session.execute(
            select(func.min(OutboxEntry.created_at), func.count())
        ).one()
        lease = session.get(Lease, RECONCILER_LEASE)
        heartbeat = lease.heartbeat_at if lease is not None else None
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    return Figures(
        connectors_by_sync_status=by_sync,
        connectors_active=int(active),
        runs_by_status=by_status,
        durations=durations,
        oldest_outbox_at=oldest,
        outbox_pending=int(pending),
        reconciler_heartbeat_at=heartbeat,
    )
