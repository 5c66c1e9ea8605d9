"""Daily summaries of a connector's runs (runs, succeeded, failed, rows, duration per UTC
day): what the connector page's history chart draws, and what stays once retention has
deleted the runs themselves.

A day's summary is worked out from its run records while they are kept, so no closer of a
run (the flow, the watchdog, cancel, retries) has to remember to count it, and a record
closed twice is still counted once. Retention rolls a day up into ``connector_daily_stats``
before it deletes the first run of that day; from then on the stored row is the day's
summary. Skipped runs (catch-up) and runs still open are not counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Date, and_, case, cast, func, select
from sqlalchemy.orm import Session

from conveyor.db.base import utcnow
from conveyor.db.models import ConnectorDailyStats, ConnectorRun
from conveyor.domain.vocabulary import OPEN_RUN_STATUSES

FAILED_STATUSES = ("failed", "crashed")
NOT_COUNTED = (*OPEN_RUN_STATUSES, "skipped")


@dataclass(frozen=True)
class DayStats:
    """One connector's runs on one UTC day."""

    day: date
    runs: int
    succeeded: int
    failed: int
    rows: int
    duration_seconds: float  # the day's runs together

    @property
    def average_seconds(self) -> float | None:
        return self.duration_seconds / self.runs if self.runs else None


def daily(
    connector_id: int, *, session: Session, days: int = 30, today: date | None = None
) -> list[DayStats]:
    """The connector's days with runs among the last ``days`` (today included), oldest
    first: the stored summary where retention made one, else worked out from the runs."""
    today = today or utcnow().date()
    since = today - timedelta(days=days - 1)
    stored = {
        row.day: _from_row(row)
        for row in session.scalars(
            select(ConnectorDailyStats).where(
                ConnectorDailyStats.connector_id == connector_id,
                ConnectorDailyStats.day >= since,
            )
        )
    }
    live = summarise(connector_id, session=session, since=since)
    merged = {**live, **stored}
    return [merged[d] for d in sorted(merged) if d <= today]


def summarise(
    connector_id: int, *, session: Session, since: date, until: date | None = None
) -> dict[date, DayStats]:
    """The connector's closed runs per UTC day from ``since`` to ``until`` (inclusive)."""
    at = func.coalesce(ConnectorRun.started_at, ConnectorRun.created_at)
    day = _utc_day(session, at)
    seconds = _seconds(session, ConnectorRun.started_at, ConnectorRun.finished_at)
    conditions = [
        ConnectorRun.connector_id == connector_id,
        ConnectorRun.status.not_in(NOT_COUNTED),
        at >= _midnight(since),
    ]
    if until is not None:
        conditions.append(at < _midnight(until + timedelta(days=1)))
    stmt = (
        select(
            day.label("day"),
            func.count().label("runs"),
            func.sum(case((ConnectorRun.status == "succeeded", 1), else_=0)).label("ok"),
            func.sum(case((ConnectorRun.status.in_(FAILED_STATUSES), 1), else_=0)).label("bad"),
            func.coalesce(func.sum(ConnectorRun.rows_loaded), 0).label("rows"),
            func.coalesce(func.sum(seconds), 0.0).label("secs"),
        )
        .where(and_(*conditions))
        .group_by(day)
    )
    out: dict[date, DayStats] = {}
    for r in session.execute(stmt):
        d = r.day if isinstance(r.day, date) else date.fromisoformat(str(r.day))
        out[d] = DayStats(
            d, int(r.runs), int(r.ok or 0), int(r.bad or 0), int(r.rows or 0), float(r.secs or 0)
        )
    return out


def roll_up(connector_id: int, days: Iterable[date], *, session: Session) -> int:
    """Store the summary of each of the connector's ``days`` that has none yet, from the
    runs still kept (retention calls it before deleting any run of those days); how many
    rows it wrote."""
    wanted = sorted(set(days))
    if not wanted:
        return 0
    have = set(
        session.scalars(
            select(ConnectorDailyStats.day).where(
                ConnectorDailyStats.connector_id == connector_id,
                ConnectorDailyStats.day.in_(wanted),
            )
        )
    )
    missing = [d for d in wanted if d not in have]
    if not missing:
        return 0
    found = summarise(connector_id, session=session, since=missing[0], until=missing[-1])
    for d in missing:
        s = found.get(d) or DayStats(d, 0, 0, 0, 0, 0.0)
        session.add(
            ConnectorDailyStats(
                connector_id=connector_id,
                day=d,
                runs=s.runs,
                succeeded=s.succeeded,
                failed=s.failed,
                rows=s.rows,
                duration_seconds=s.duration_seconds,
            )
        )
    session.flush()
    return len(missing)


def day_of(run: Any) -> date:
    """The UTC day a run counts on: the day it started (made, if it never started)."""
    at: datetime = run.started_at or run.created_at
    return at.astimezone(UTC).date()


def _from_row(row: ConnectorDailyStats) -> DayStats:
    return DayStats(
        row.day, row.runs, row.succeeded, row.failed, int(row.rows), float(row.duration_seconds)
    )


def _midnight(d: date) -> datetime:
    return datetime.combine(d, time.min, tzinfo=UTC)


def _utc_day(session: Session, at: Any) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.timezone("UTC", at), Date)
    return func.date(at)  # SQLite keeps UTC datetimes as ISO text


def _seconds(session: Session, start: Any, end: Any) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", end - start)
    # julianday is a float of days: 42 s comes back as 41.99999...; milliseconds are exact.
    return func.round((func.julianday(end) - func.julianday(start)) * 86400.0, 3)
