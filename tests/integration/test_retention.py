"""Retention against a real Prefect server, on SQLite and PostgreSQL: runs finished longer ago
than CONVEYOR_RUN_RETENTION_DAYS are deleted with their logs in Conveyor and their flow runs
in Prefect, a batch at a time; newer runs stay; each day's summary stays and is right."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from conveyor.db.models import ConnectorDailyStats, ConnectorRun, RunLogChunk
from conveyor.db.session import session_scope
from conveyor.services import daily_stats, retention
from conveyor.settings import Settings
from conveyor.sync.loop import open_gateway
from tests.fixtures.pipelines import ConnectorFactory

pytestmark = [pytest.mark.prefect, pytest.mark.timeout(120)]

NOW = datetime.now(UTC).replace(microsecond=0)
OLD_A = datetime.combine(NOW.date() - timedelta(days=120), datetime.min.time(), UTC) + timedelta(
    hours=10
)
OLD_B = OLD_A + timedelta(days=1)


def flow_runs(n: int) -> list[str]:
    """``n`` finished flow runs in the real Prefect server."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Completed

    @flow(name="conveyor-retention-test")
    def noop() -> None:
        return None

    async def make() -> list[str]:
        async with get_client() as client:
            return [
                str((await client.create_flow_run(noop, state=Completed())).id) for _ in range(n)
            ]

    return asyncio.run(make())


def in_prefect(ids: list[str]) -> set[str]:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    async def read() -> set[str]:
        found = set()
        async with get_client() as client:
            for i in ids:
                try:
                    await client.read_flow_run(uuid.UUID(i))
                    found.add(i)
                except ObjectNotFound:
                    pass
        return found

    return asyncio.run(read())


def add_run(s: Settings, cid: int, at: datetime, seconds: float, **fields: Any) -> int:
    with session_scope(s.effective_database_url) as session:
        run = ConnectorRun(
            connector_id=cid,
            trigger="schedule",
            started_at=at,
            finished_at=at + timedelta(seconds=seconds),
            created_at=at,
            **{"status": "succeeded", **fields},
        )
        session.add(run)
        session.flush()
        session.add(RunLogChunk(run_id=run.id, seq=0, text="a log line\n"))
        return int(run.id)


def kept(s: Settings, cid: int) -> set[int]:
    with session_scope(s.effective_database_url) as session:
        return set(session.scalars(select(ConnectorRun.id).where(ConnectorRun.connector_id == cid)))


def log_chunks(s: Settings) -> int:
    with session_scope(s.effective_database_url) as session:
        return int(session.scalar(select(func.count()).select_from(RunLogChunk)) or 0)


def one_pass(s: Settings) -> retention.PassResult:
    async def go() -> retention.PassResult:
        async with open_gateway(s) as gateway:
            return await retention.one_pass(settings=s, delete_flow_run=gateway.delete_flow_run)

    return asyncio.run(go())


@pytest.fixture
def s(settings: Settings, prefect_api_url: str) -> Settings:
    return settings.model_copy(
        update={"prefect_api_url": prefect_api_url, "run_retention_batch": 2}
    )


def test_old_runs_go_from_both_systems_in_batches_and_summaries_stay(
    s: Settings, tmp_path: Path
) -> None:
    cid = ConnectorFactory(s)(
        ("filesystem", {"path": str(tmp_path), "file_pattern": "*.csv"}), ("duckdb", {})
    )
    fr = flow_runs(4)
    gone_already = str(uuid.uuid4())  # Prefect purged it itself: a 404 is fine
    old = [
        add_run(s, cid, OLD_A, 30, rows_loaded=10, prefect_flow_run_id=fr[0]),
        add_run(s, cid, OLD_A + timedelta(hours=1), 12, status="failed", prefect_flow_run_id=fr[1]),
        add_run(s, cid, OLD_B, 5, rows_loaded=7, prefect_flow_run_id=gone_already),
        add_run(s, cid, OLD_B + timedelta(hours=2), 1, status="skipped"),
    ]
    recent = add_run(s, cid, NOW - timedelta(days=2), 20, rows_loaded=3, prefect_flow_run_id=fr[2])
    # Open for 120 days (a record nobody closed): not finished, so retention leaves it.
    stuck = add_run(s, cid, OLD_A, 0, status="running")
    with session_scope(s.effective_database_url) as session:
        session.get(ConnectorRun, stuck).finished_at = None  # type: ignore[union-attr]
    before = history(s, cid)
    assert [d.day for d in before] == [OLD_A.date(), OLD_B.date(), recent_day()]

    first = one_pass(s)  # a batch of 2: the two runs of day A
    assert (first.deleted, first.flow_runs_deleted, first.days_summarised) == (2, 2, 1)
    assert kept(s, cid) == {old[2], old[3], recent, stuck}
    second = one_pass(s)
    assert (second.deleted, second.flow_runs_deleted, second.days_summarised) == (2, 0, 1)
    assert one_pass(s).deleted == 0
    assert kept(s, cid) == {recent, stuck}
    assert log_chunks(s) == 2  # the kept runs' logs only

    assert in_prefect(fr[:3]) == {fr[2]}  # the old flow runs are gone, the recent one kept
    with session_scope(s.effective_database_url) as session:
        stored = {
            r.day: (r.runs, r.succeeded, r.failed, r.rows, round(r.duration_seconds))
            for r in session.scalars(select(ConnectorDailyStats))
        }
    # Day A: a success and a failure; day B: one success (the skipped run is not a run).
    assert stored == {OLD_A.date(): (2, 1, 1, 10, 42), OLD_B.date(): (1, 1, 0, 7, 5)}
    after = history(s, cid)
    assert after == before  # the chart's history did not change


def test_the_loop_deletes_batch_after_batch(s: Settings, tmp_path: Path) -> None:
    cid = ConnectorFactory(s)(
        ("filesystem", {"path": str(tmp_path), "file_pattern": "*.csv"}), ("duckdb", {})
    )
    fr = flow_runs(5)
    for i, flow_run in enumerate(fr):
        add_run(s, cid, OLD_A + timedelta(minutes=i), 1, prefect_flow_run_id=flow_run)
    keep = add_run(s, cid, NOW - timedelta(hours=1), 1)

    async def loop() -> None:
        stop = asyncio.Event()
        async with open_gateway(s) as gateway:
            task = asyncio.create_task(
                retention.run_forever(s, stop=stop, delete_flow_run=gateway.delete_flow_run)
            )
            for _ in range(100):
                await asyncio.sleep(0.2)
                if await asyncio.to_thread(kept, s, cid) == {keep}:
                    break
            stop.set()
            await task

    asyncio.run(loop())  # three batches of at most 2, well before the hour's interval
    assert kept(s, cid) == {keep}
    assert in_prefect(fr) == set()


def history(s: Settings, cid: int) -> list[daily_stats.DayStats]:
    with session_scope(s.effective_database_url) as session:
        return daily_stats.daily(cid, session=session, days=150)


def recent_day() -> date:
    return (NOW - timedelta(days=2)).date()


def test_reconcile_once_deletes_one_batch(s: Settings, tmp_path: Path) -> None:
    from conveyor.sync.loop import run_once
    from tests.fixtures.sync import delete_all_conveyor_deployments

    delete_all_conveyor_deployments()  # this test's connector-<id> must be its own
    cid = ConnectorFactory(s)(
        ("filesystem", {"path": str(tmp_path), "file_pattern": "*.csv"}), ("duckdb", {})
    )
    old = [add_run(s, cid, OLD_A + timedelta(minutes=i), 1) for i in range(3)]
    report = asyncio.run(run_once(s))  # what `conveyor reconcile --once` does
    assert report.error is None and report.old_runs_deleted == 2  # one batch
    assert kept(s, cid) == {old[2]}


def test_old_notification_events_go_once_nothing_is_pending(s: Settings) -> None:
    from conveyor.db.models import NotificationChannel, NotificationDelivery, NotificationEvent

    def event(key: str, at: datetime, status: str) -> None:
        with session_scope(s.effective_database_url) as session:
            row = NotificationEvent(key=key, event="run.failed", occurred_at=at, payload={})
            session.add(row)
            session.flush()
            session.add(NotificationDelivery(event_id=row.id, channel_id=channel, status=status))

    with session_scope(s.effective_database_url) as session:
        hook = NotificationChannel(name="hook", type="webhook", config={}, events=["run.failed"])
        session.add(hook)
        session.flush()
        channel = int(hook.id)
    event("old-delivered", OLD_A, "delivered")
    event("old-expired", OLD_A, "expired")
    event("old-pending", OLD_A, "pending")  # still being sent: kept
    event("recent", NOW - timedelta(days=1), "delivered")

    assert one_pass(s).events_deleted == 2
    assert one_pass(s).events_deleted == 0
    with session_scope(s.effective_database_url) as session:
        left = set(session.scalars(select(NotificationEvent.key)))
        deliveries = session.scalar(select(func.count()).select_from(NotificationDelivery))
    assert left == {"old-pending", "recent"}
    assert deliveries == 2
