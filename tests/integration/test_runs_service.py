"""The runs service and the watchdog loop, on SQLite and PostgreSQL, without Prefect: "Run
now" is given a stand-in for the Prefect call and the watchdog a small fake gateway (a fake
of Conveyor's own interface; tests/integration/test_sync_runs.py runs both against a real
Prefect server)."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from conveyor.db.base import utcnow
from conveyor.db.models import AuditEntry, Connector, ConnectorRun
from conveyor.db.session import session_scope
from conveyor.domain.vocabulary import MANUAL_RUN_TAG, run_record_tag
from conveyor.errors import ExternalError
from conveyor.services import runs
from conveyor.services.authz import SYSTEM
from conveyor.settings import Settings
from conveyor.sync import watchdog
from conveyor.sync.payloads import FlowRunState
from conveyor.sync.prefect_errors import PrefectUnavailable
from tests.fixtures.pipelines import ConnectorFactory

DEPLOYMENT_ID = "00000000-0000-4000-8000-0000000000d1"


@pytest.fixture
def cid(settings: Settings, tmp_path: Path) -> int:
    """A connector the reconciler has synced (its deployment id set by hand)."""
    src = tmp_path / "in"
    src.mkdir()
    connector_id = ConnectorFactory(settings)(
        ("filesystem", {"path": str(src), "file_pattern": "*.csv"}), ("duckdb", {})
    )
    with session_scope(settings.effective_database_url) as s:
        c = s.get(Connector, connector_id)
        assert c is not None
        c.prefect_deployment_id, c.sync_status = DEPLOYMENT_ID, "synced"
    return connector_id


@pytest.fixture
def prefect_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"prefect_api_url": "http://127.0.0.1:9/api"})


def rows(settings: Settings) -> list[ConnectorRun]:
    with session_scope(settings.effective_database_url) as s:
        return list(s.scalars(select(ConnectorRun).order_by(ConnectorRun.id)))


def assert_no_write_lock_held(settings: Settings) -> None:
    """Another connection can take the write lock at once (SQLite: BEGIN IMMEDIATE;
    PostgreSQL: lock the run rows with NOWAIT)."""
    url = make_url(settings.effective_database_url)
    if url.get_backend_name() == "sqlite":
        assert url.database
        conn = sqlite3.connect(url.database, timeout=0.5, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")  # "database is locked" if the caller holds it
            conn.execute("ROLLBACK")
        finally:
            conn.close()
    else:
        with session_scope(settings.effective_database_url) as s:
            s.execute(text("SELECT id FROM connector_runs FOR UPDATE NOWAIT")).all()


def test_run_now_commits_its_record_before_calling_prefect(
    prefect_settings: Settings, cid: int
) -> None:
    seen: dict[str, Any] = {}

    def start(api_url: str, deployment_id: str, *, tags: list[str]) -> str:
        # Another connection sees the record, committed, and no write lock is held.
        [run] = rows(prefect_settings)
        seen.update(status=run.status, trigger=run.trigger, flow_run=run.prefect_flow_run_id)
        assert_no_write_lock_held(prefect_settings)
        seen.update(api_url=api_url, deployment_id=deployment_id, tags=tags, run_id=run.id)
        return "fr-1"

    run = runs.trigger(cid, settings=prefect_settings, actor=SYSTEM, start=start)
    assert seen == {
        "status": "scheduled",
        "trigger": "manual",
        "flow_run": None,
        "api_url": "http://127.0.0.1:9/api",
        "deployment_id": DEPLOYMENT_ID,
        "tags": [MANUAL_RUN_TAG, run_record_tag(run.id)],
        "run_id": run.id,
    }
    [row] = rows(prefect_settings)
    assert (row.id, row.status, row.prefect_flow_run_id) == (run.id, "scheduled", "fr-1")
    with session_scope(prefect_settings.effective_database_url) as s:
        entry = s.scalars(select(AuditEntry).where(AuditEntry.action == "connector.run")).one()
        assert entry.after == {"run_id": run.id, "prefect_flow_run_id": "fr-1"}


def test_run_now_with_prefect_down_closes_the_record_with_the_reason(
    prefect_settings: Settings, cid: int
) -> None:
    def start(api_url: str, deployment_id: str, *, tags: list[str]) -> str:
        raise PrefectUnavailable("cannot reach Prefect to start a run: connection refused")

    with pytest.raises(ExternalError, match="connection refused"):
        runs.trigger(cid, settings=prefect_settings, actor=SYSTEM, start=start)
    [row] = rows(prefect_settings)
    assert (row.status, row.trigger) == ("failed", "manual") and row.finished_at
    assert row.error and "Prefect did not start the run" in row.error
    assert "connection refused" in row.error


def test_run_now_against_an_unreachable_prefect_for_real(
    prefect_settings: Settings, cid: int
) -> None:
    """The real client against a closed port: the same clear error, the record closed."""
    from conveyor.sync.flow_runs import create_flow_run

    with pytest.raises(ExternalError, match="cannot reach Prefect"):
        runs.trigger(cid, settings=prefect_settings, actor=SYSTEM, start=create_flow_run)
    [row] = rows(prefect_settings)
    assert row.status == "failed" and "cannot reach Prefect" in (row.error or "")


def test_the_flow_claims_its_record_by_tag_before_it_is_linked(
    settings: Settings, cid: int
) -> None:
    with session_scope(settings.effective_database_url) as s:
        made = ConnectorRun(connector_id=cid, status="scheduled", trigger="manual")
        s.add(made)
        s.flush()
        run_id = made.id
    opened = runs.open_run(
        cid, settings=settings, flow_run_id="fr-x", tags=[MANUAL_RUN_TAG, run_record_tag(run_id)]
    )
    assert opened == run_id
    [row] = rows(settings)
    assert (row.status, row.prefect_flow_run_id, row.trigger) == ("running", "fr-x", "manual")


def test_open_heartbeat_close(settings: Settings, cid: int) -> None:
    @dataclass
    class Stats:
        total_rows: int = 3
        bytes: int | None = 30
        rows: dict[str, int] = field(default_factory=lambda: {"t": 3})
        schema_changes: list[str] = field(default_factory=list)

    run_id = runs.open_run(cid, settings=settings, flow_run_id="fr-s", tags=[])
    [row] = rows(settings)
    assert (row.status, row.trigger) == ("running", "schedule")
    before = row.heartbeat_at
    runs.heartbeat(run_id, settings=settings)
    assert rows(settings)[0].heartbeat_at >= before
    runs.close(run_id, settings=settings, status="succeeded", stats=Stats(), summary="ok")
    [row] = rows(settings)
    assert (row.status, row.rows_loaded, row.table_stats) == ("succeeded", 3, {"t": {"rows": 3}})
    # Closed records stay closed.
    assert not runs.close_flow_run(
        "fr-s", settings=settings, status="crashed", error="x", summary="y"
    )
    assert runs.close_if_open(run_id, "crashed", "late", settings=settings) == 0
    assert rows(settings)[0].status == "succeeded"


class FakeGateway:
    """The calls the watchdog makes, answered from a dict (no flow run held by a dead
    worker here: tests/integration/test_sync_runs.py has those on a real Prefect)."""

    def __init__(self, states: dict[str, FlowRunState]) -> None:
        self.states = states
        self.crashed: list[str] = []

    async def flow_run_states(self, flow_run_ids: list[str]) -> dict[str, FlowRunState]:
        return {i: self.states[i] for i in flow_run_ids if i in self.states}

    async def crash_flow_run(self, flow_run_id: str, message: str) -> bool:
        self.crashed.append(flow_run_id)
        return True

    async def stale_flow_runs(self, states: tuple[str, ...], before: object) -> list[str]:
        return []


def add(settings: Settings, cid: int, **fields: Any) -> int:
    with session_scope(settings.effective_database_url) as s:
        run = ConnectorRun(connector_id=cid, trigger="manual", **fields)
        s.add(run)
        s.flush()
        return int(run.id)


def test_one_watchdog_pass(settings: Settings, cid: int) -> None:
    now = utcnow()
    old = now - timedelta(seconds=settings.run_heartbeat_timeout + 60)
    failed = add(settings, cid, status="running", prefect_flow_run_id="f", heartbeat_at=now)
    silent = add(settings, cid, status="running", prefect_flow_run_id="s", heartbeat_at=old)
    alive = add(settings, cid, status="running", prefect_flow_run_id="a", heartbeat_at=now)
    waiting = add(settings, cid, status="scheduled", prefect_flow_run_id="w")
    orphan = add(settings, cid, status="scheduled", created_at=old)  # Run now died mid-way
    fresh = add(settings, cid, status="scheduled")  # Run now still calling Prefect
    running = FlowRunState("RUNNING", "Running", None)
    gateway = FakeGateway(
        {
            "f": FlowRunState("FAILED", "Failed", "boom"),
            "s": running,
            "a": running,
            "w": FlowRunState("SCHEDULED", "Scheduled", None),
        }
    )
    closed = asyncio.run(watchdog.one_pass(settings=settings, gateway=gateway))  # type: ignore[arg-type]
    assert closed == 3
    by_id = {r.id: r for r in rows(settings)}
    assert (by_id[failed].status, by_id[failed].error) == ("failed", "boom")
    assert (by_id[silent].status, by_id[silent].error) == ("crashed", watchdog.HEARTBEAT_REASON)
    assert gateway.crashed == ["s"]
    assert (by_id[orphan].status, by_id[orphan].error) == (
        "failed",
        watchdog.NEVER_STARTED_REASON,
    )
    for still_open in (alive, waiting, fresh):
        assert by_id[still_open].status in ("running", "scheduled")
    assert asyncio.run(watchdog.one_pass(settings=settings, gateway=gateway)) == 0  # type: ignore[arg-type]


def test_the_watchdog_loop_repeats_until_stopped_and_can_be_off(
    settings: Settings, cid: int
) -> None:
    fast = settings.model_copy(update={"watchdog_interval": 0.05})
    gateway = FakeGateway({})

    async def run_for(s: Settings, seconds: float, then: Any = None) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(watchdog.run_forever(s, stop=stop, gateway=gateway))  # type: ignore[arg-type]
        await asyncio.sleep(seconds)
        if then is not None:
            await asyncio.to_thread(then)
            await asyncio.sleep(seconds)
        stop.set()
        await asyncio.wait_for(task, timeout=5)

    # A flow run that vanished from Prefect while the loop runs: a later pass closes it.
    asyncio.run(
        run_for(fast, 0.2, lambda: add(fast, cid, status="running", prefect_flow_run_id="gone"))
    )
    assert [(r.status, r.error) for r in rows(fast)] == [("crashed", watchdog.GONE_REASON)]

    off = fast.model_copy(update={"watchdog_enabled": False})
    add(off, cid, status="running", prefect_flow_run_id="gone-too")
    asyncio.run(run_for(off, 0.2))
    assert rows(off)[-1].status == "running"  # switched off: nothing closed
