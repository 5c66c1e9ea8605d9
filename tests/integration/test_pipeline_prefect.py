"""End to end through Prefect: a real server, the reconciler's deployment and a real process
worker. A scheduled run (of an every-minute cron, scheduled by Prefect from this minute's
start so that no test waits for the clock) and a manual run both complete and are recorded;
a worker killed mid-run leaves a record the watchdog closes as crashed, and the next run
completes."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from conveyor.db.models import Connector, ConnectorRun
from conveyor.db.session import session_scope
from conveyor.services.authz import SYSTEM
from conveyor.settings import Settings
from tests.fixtures.db import migrated_sqlite_url
from tests.fixtures.net import wait_for
from tests.fixtures.pipelines import ConnectorFactory, duckdb_rows, pg_exec
from tests.fixtures.sync import delete_all_conveyor_deployments

pytestmark = [pytest.mark.prefect, pytest.mark.timeout(420)]


@pytest.fixture
def e2e_settings(tmp_path: Path, prefect_api_url: str) -> Settings:
    # Every test starts its own Conveyor database, so connector ids (and the deployment
    # names connector-<id>) repeat across tests on the session's Prefect server: without
    # this, a test's connector-1 would inherit the last test's deployment, with its
    # concurrency slot still held by a run the stopped worker never finished cancelling.
    delete_all_conveyor_deployments()
    home = tmp_path / "home"
    home.mkdir()
    url = migrated_sqlite_url(tmp_path / "conveyor.db")
    return Settings(
        home=home,
        database_url=url,
        secret_key=Fernet.generate_key().decode(),
        prefect_api_url=prefect_api_url,
        default_work_pool=f"pipe-{uuid.uuid4().hex[:8]}",
        run_heartbeat_timeout=6,
    )


def worker_env(s: Settings) -> dict[str, str]:
    assert s.secret_key is not None
    return {
        "CONVEYOR_HOME": str(s.home),
        "CONVEYOR_DATABASE_URL": s.effective_database_url,
        "CONVEYOR_SECRET_KEY": s.secret_key.get_secret_value(),
        "CONVEYOR_RUN_HEARTBEAT_TIMEOUT": str(s.run_heartbeat_timeout),
        "RUNTIME__LOG_LEVEL": "WARNING",
        # The scheduled run is due from the start of this minute and may start over a minute
        # later on a loaded machine: that is not a missed run for this test (catch-up's own
        # test is tests/integration/test_catch_up_prefect.py).
        "CONVEYOR_CATCH_UP_GRACE": "3600",
    }


def reconcile(s: Settings) -> None:
    from conveyor.sync.loop import run_once

    asyncio.run(run_once(s))


def runs(s: Settings, cid: int) -> list[ConnectorRun]:
    with session_scope(s.effective_database_url) as session:
        return list(
            session.scalars(
                select(ConnectorRun)
                .where(ConnectorRun.connector_id == cid)
                .order_by(ConnectorRun.id)
            )
        )


def trigger(s: Settings, cid: int) -> int:
    from conveyor.services import runs as runs_svc
    from conveyor.sync.flow_runs import create_flow_run

    return int(runs_svc.trigger(cid, settings=s, actor=SYSTEM, start=create_flow_run).id)


def run_status(s: Settings, run_id: int) -> str:
    with session_scope(s.effective_database_url) as session:
        run = session.get(ConnectorRun, run_id)
        assert run is not None
        return run.status


def schedule_from_last_minute(s: Settings, cid: int) -> Any:
    """Ask Prefect to schedule connector ``cid``'s deployment from the start of this minute,
    as its scheduler service does (Prefect's own scheduling of the deployment's active
    schedules, in the mode Prefect documents for backfills). Every minute has a cron time, so
    the run it creates is due at once: the test waits for no minute to turn. Returns it."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with session_scope(s.effective_database_url) as session:
        deployment_id = session.get(Connector, cid).prefect_deployment_id  # type: ignore[union-attr]
    assert deployment_id, "the reconciler did not record the deployment"
    minute = datetime.now(UTC).replace(second=0, microsecond=0)

    def schedule() -> httpx.Response | None:
        resp = httpx.post(
            f"{s.prefect_api_url}/deployments/{deployment_id}/schedule",
            json={"start_time": (minute - timedelta(seconds=1)).isoformat(), "max_runs": 1},
            timeout=30,
        )
        # 503: the server's SQLite was busy (its own scheduler writes the same deployment's
        # runs); Prefect's client retries those, and so does this (runs are idempotent).
        return None if resp.status_code == 503 else resp

    resp = wait_for(schedule, 60, "Prefect to accept the schedule request", every=1)
    assert resp.status_code < 300, resp.text

    async def read() -> list[Any]:
        async with get_client() as client:
            return await client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            )

    due = [r for r in asyncio.run(read()) if r.auto_scheduled and r.expected_start_time == minute]
    assert len(due) == 1, "Prefect scheduled no run from the deployment's cron schedule"
    return due[0]


def test_scheduled_and_manual_runs_complete(
    e2e_settings: Settings, process_worker: Any, tmp_path: Path
) -> None:
    s = e2e_settings
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.csv").write_text("id,v\n" + "".join(f"{i},{i * 2}\n" for i in range(1, 51)))
    cid = ConnectorFactory(s)(
        ("filesystem", {"path": str(src), "file_pattern": "*.csv", "table_name": "numbers"}),
        ("duckdb", {}),
        schedule="* * * * *",
    )
    reconcile(s)
    worker = process_worker(s.default_work_pool, worker_env(s))
    manual = trigger(s, cid)
    scheduled = schedule_from_last_minute(s, cid)
    try:
        wait_for(lambda: run_status(s, manual) not in ("scheduled", "running"), 120, "manual run")
        assert run_status(s, manual) == "succeeded", worker.tail()
        # This scheduled time's own run: under load the next minute's may finish first.
        wait_for(
            lambda: any(
                r.prefect_flow_run_id == str(scheduled.id) and r.status == "succeeded"
                for r in runs(s, cid)
            ),
            120,
            "the scheduled run",
        )
    except AssertionError:
        print(worker.tail())
        raise
    recorded = runs(s, cid)
    by_trigger = {r.trigger: r for r in recorded if r.status == "succeeded"}
    assert set(by_trigger) == {"manual", "schedule"}
    assert str(scheduled.id) in {r.prefect_flow_run_id for r in recorded}
    for run in by_trigger.values():
        assert run.prefect_flow_run_id and run.rows_loaded == 50 and run.finished_at
        assert run.table_stats == {"numbers": {"rows": 50}}
    assert duckdb_rows(s, f"SELECT count(*), sum(v) FROM connector_{cid}.numbers") == [(50, 2550)]


def test_worker_killed_mid_run_then_next_run_completes(
    e2e_settings: Settings, process_worker: Any, pg_database: Any
) -> None:
    from conveyor.sync.loop import open_gateway
    from conveyor.sync.watchdog import one_pass

    s = e2e_settings
    db = pg_database()
    pg_exec(
        db, "CREATE TABLE t (id int PRIMARY KEY)", "INSERT INTO t SELECT generate_series(1, 10)"
    )
    slow = "SELECT t.id FROM t, (SELECT pg_sleep(60)) AS wait"
    factory = ConnectorFactory(s)
    cid = factory(("sql_database", {"connection_string": db, "query": slow}), ("duckdb", {}))
    reconcile(s)
    worker = process_worker(s.default_work_pool, worker_env(s))
    first = trigger(s, cid)
    wait_for(lambda: run_status(s, first) == "running", 120, "the run to start")
    worker.kill()
    assert run_status(s, first) == "running"  # nobody left to close it

    async def watchdog() -> int:
        async with open_gateway(s) as gateway:
            return await one_pass(settings=s, gateway=gateway)

    wait_for(lambda: asyncio.run(watchdog()) > 0, 60, "the watchdog to close the run", every=2)
    assert run_status(s, first) == "crashed"

    factory.update_source(cid, {"connection_string": db, "query": "SELECT id FROM t"})
    process_worker(s.default_work_pool, worker_env(s))
    second = trigger(s, cid)
    wait_for(lambda: run_status(s, second) not in ("scheduled", "running"), 120, "the next run")
    assert run_status(s, second) == "succeeded"
    assert duckdb_rows(s, f"SELECT count(*) FROM connector_{cid}.query_result") == [(10,)]


def test_cancelled_run_is_recorded_as_cancelled(
    e2e_settings: Settings, process_worker: Any, pg_database: Any
) -> None:
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    s = e2e_settings
    db = pg_database()
    pg_exec(db, "CREATE TABLE t (id int)", "INSERT INTO t VALUES (1)")
    slow = "SELECT t.id FROM t, (SELECT pg_sleep(60)) AS wait"
    cid = ConnectorFactory(s)(
        ("sql_database", {"connection_string": db, "query": slow}), ("duckdb", {})
    )
    reconcile(s)
    process_worker(s.default_work_pool, worker_env(s))
    run_id = trigger(s, cid)
    wait_for(lambda: run_status(s, run_id) == "running", 120, "the run to start")
    with session_scope(s.effective_database_url) as session:
        flow_run_id = session.get(ConnectorRun, run_id).prefect_flow_run_id  # type: ignore[union-attr]

    async def cancel() -> None:
        async with get_client() as client:
            await client.set_flow_run_state(UUID(flow_run_id), Cancelling(), force=True)

    asyncio.run(cancel())
    wait_for(lambda: run_status(s, run_id) != "running", 90, "the record to close")
    with session_scope(s.effective_database_url) as session:
        run = session.get(ConnectorRun, run_id)
        assert run is not None
        assert run.status == "cancelled"
        assert run.error is not None and run.error.startswith("The run was cancelled")


def test_failed_run_logs_reason_without_secrets(
    e2e_settings: Settings, process_worker: Any
) -> None:
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    from tests.fixtures.servers import free_port

    s = e2e_settings
    secret = "pw-e2e-Secret-4711"
    cid = ConnectorFactory(s)(
        (
            "sql_database",
            {
                "connection_string": f"postgresql://app:{secret}@127.0.0.1:{free_port()}/db",
                "tables": ["t"],
            },
        ),
        ("duckdb", {}),
    )
    with session_scope(s.effective_database_url) as session:
        # A refused connection is transient: retried by default (test_retries_prefect.py).
        session.get(Connector, cid).retry_policy = {"max_attempts": 1}  # type: ignore[union-attr]
    reconcile(s)
    process_worker(s.default_work_pool, worker_env(s))
    run_id = trigger(s, cid)
    wait_for(lambda: run_status(s, run_id) not in ("scheduled", "running"), 120, "the run")
    with session_scope(s.effective_database_url) as session:
        run = session.get(ConnectorRun, run_id)
        assert run is not None and run.status == "failed"
        assert run.failure_class == "transient" and run.attempt == 1
        assert run.error and "Cannot reach the server" in run.error
        flow_run_id = run.prefect_flow_run_id

    async def logs() -> list[str]:
        async with get_client() as client:
            found = await client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(flow_run_id)]))
            )
            return [entry.message for entry in found]

    # Logs reach Prefect in batches: the worker's lines come first, the flow's later.
    def reason_logged() -> str | None:
        text = "\n".join(asyncio.run(logs()))
        return text if "Cannot reach the server" in text else None

    text = wait_for(reason_logged, 60, "the failure reason in the flow run's logs")
    assert "Cannot reach the server" in text
    assert secret not in text
