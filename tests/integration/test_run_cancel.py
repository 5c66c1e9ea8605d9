"""Cancel (issue 17) through the API, with a real Prefect server and process worker: a long
run is cancelled in Conveyor and in Prefect and leaves no process behind; a run that has not
started is cancelled at once; a closed run answers 409. Also the flow process's log capture:
a run through the worker keeps Conveyor's, Prefect's and dlt's lines."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conveyor.db.models import ConnectorRun
from conveyor.db.session import session_scope
from conveyor.services import run_logs
from conveyor.services.authz import SYSTEM
from conveyor.settings import Settings
from conveyor.web.app import create_app
from tests.fixtures.net import wait_for
from tests.fixtures.pipelines import PG_ADMIN, ConnectorFactory, pg_exec, pg_rows
from tests.fixtures.web import ApiUser, _make_user
from tests.integration.unattended_support import prefect_settings, reconcile, record, worker_env

pytestmark = [pytest.mark.prefect, pytest.mark.timeout(300)]


@pytest.fixture
def s(tmp_path: Path, prefect_api_url: str) -> Iterator[Settings]:
    yield from prefect_settings(tmp_path, prefect_api_url, run_heartbeat_timeout=30)


@pytest.fixture
def admin_api(s: Settings) -> Iterator[ApiUser]:
    with TestClient(create_app(s)) as client:
        yield _make_user(s, client, "alice", "admin")


def trigger(s: Settings, cid: int) -> int:
    from conveyor.services import runs as runs_svc
    from conveyor.sync.flow_runs import create_flow_run

    return int(runs_svc.trigger(cid, settings=s, actor=SYSTEM, start=create_flow_run).id)


def flow_run_state(s: Settings, flow_run_id: str) -> str:
    from prefect.client.orchestration import get_client

    async def read() -> str:
        async with get_client() as client:
            run = await client.read_flow_run(flow_run_id)  # type: ignore[arg-type]
            assert run.state is not None
            return run.state.type.value

    return asyncio.run(read())


def flow_run_processes(flow_run_id: str) -> list[Any]:
    """Every process of this machine started for the flow run (Prefect gives the flow
    process PREFECT__FLOW_RUN_ID; its children — dlt's workers — inherit it)."""
    import psutil

    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.environ().get("PREFECT__FLOW_RUN_ID") == flow_run_id:
                found.append(proc)
    return found


def log_of(s: Settings, run_id: int) -> str:
    with session_scope(s.effective_database_url) as session:
        return run_logs.read(run_id, session=session)


def test_cancel_a_long_run_ends_it_everywhere(
    s: Settings, process_worker: Any, pg_database: Any, admin_api: ApiUser
) -> None:
    db = pg_database()
    pg_exec(db, "CREATE TABLE t (id int PRIMARY KEY)", "INSERT INTO t VALUES (1)")
    slow = "SELECT t.id FROM t, (SELECT pg_sleep(120)) AS wait"
    cid = ConnectorFactory(s)(
        ("sql_database", {"connection_string": db, "query": slow}), ("duckdb", {})
    )
    reconcile(s)
    worker = process_worker(s.default_work_pool, worker_env(s))
    run_id = trigger(s, cid)
    wait_for(lambda: record(s, run_id).status == "running", 120, "the run to start")
    flow_run_id = record(s, run_id).prefect_flow_run_id
    assert flow_run_id and flow_run_processes(flow_run_id), worker.tail()
    # `conveyor worker` starts the engine itself. Prefect's own default first runs a
    # workspace supervisor (a Python process importing Prefect, preparing a workspace, then
    # exec'ing the engine: a second of CPU and of Run now per run), which marks the engine's
    # environment; cli/worker.py skips it.
    engine_env = [p.environ() for p in flow_run_processes(flow_run_id)]
    assert all("PREFECT__FLOW_ENTRYPOINT" not in e for e in engine_env), engine_env
    name = db.rsplit("/", 1)[1]
    reading = (
        "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
        f"AND datname = '{name}' AND state = 'active'"
    )
    wait_for(lambda: pg_rows(PG_ADMIN, reading)[0][0] > 0, 90, "the run to read the source")

    resp = admin_api.post(f"/api/v1/runs/{run_id}/cancel")
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["status"] == "running"  # until the worker has stopped the process
    assert body["waiting_reason"] == "Cancelling: requested by alice"

    try:
        wait_for(lambda: record(s, run_id).status == "cancelled", 90, "the record to close")
    except AssertionError:
        print(worker.tail())
        raise
    run = record(s, run_id)
    assert run.error == "Cancelled by alice." and run.waiting_reason is None
    assert run.finished_at is not None
    wait_for(lambda: flow_run_state(s, flow_run_id) == "CANCELLED", 60, "Prefect's state")
    assert flow_run_processes(flow_run_id) == []
    text = log_of(s, run_id)
    assert "Cancel requested by alice." in text
    assert "INFO prefect.task_runs: Finished in state Completed()" in text  # from the flow
    assert "Cancelled by alice; the flow process was stopped." in text
    again = admin_api.post(f"/api/v1/runs/{run_id}/cancel")
    assert again.status_code == 409 and "is cancelled" in again.json()["detail"]


def test_cancel_a_run_not_started_closes_it_at_once(s: Settings, admin_api: ApiUser) -> None:
    # No worker: the flow run stays Scheduled in Prefect.
    src = s.home / "in"
    src.mkdir()
    cid = ConnectorFactory(s)(
        ("filesystem", {"path": str(src), "file_pattern": "*.csv"}), ("duckdb", {})
    )
    reconcile(s)
    run_id = trigger(s, cid)
    flow_run_id = record(s, run_id).prefect_flow_run_id
    assert flow_run_id and flow_run_state(s, flow_run_id) == "SCHEDULED"

    resp = admin_api.post(f"/api/v1/runs/{run_id}/cancel")
    assert resp.status_code == 202, resp.text
    assert resp.json()["status"] == "cancelled"
    run = record(s, run_id)
    assert run.status == "cancelled" and run.error == "Cancelled by alice before it started."
    assert flow_run_state(s, flow_run_id) == "CANCELLED"


def test_run_through_worker_keeps_its_full_log(
    s: Settings, process_worker: Any, tmp_path: Path
) -> None:
    src = tmp_path / "csv"
    src.mkdir()
    (src / "a.csv").write_text("id,v\n" + "".join(f"{i},{i}\n" for i in range(1, 21)))
    cid = ConnectorFactory(s)(
        ("filesystem", {"path": str(src), "file_pattern": "*.csv", "table_name": "numbers"}),
        ("duckdb", {}),
    )
    reconcile(s)
    worker = process_worker(s.default_work_pool, worker_env(s, RUNTIME__LOG_LEVEL="INFO"))
    run_id = trigger(s, cid)
    wait_for(lambda: record(s, run_id).status not in ("scheduled", "running"), 120, "the run")
    run = record(s, run_id)
    assert run.status == "succeeded", worker.tail()
    text = log_of(s, run_id)
    assert " INFO prefect.flow_runs: connector " in text and "Loaded 20 rows" in text, text
    assert " INFO dlt: " in text, text
    assert run.log_bytes == len(text.encode()) and not run.log_truncated


def test_closed_or_local_runs_cannot_be_cancelled(settings: Settings) -> None:
    from conveyor.errors import Conflict
    from conveyor.services.cancel import cancel

    def never(*a: Any, **k: Any) -> str:
        raise AssertionError("Prefect must not be asked")

    cid = ConnectorFactory(settings)(
        ("filesystem", {"path": str(settings.home), "file_pattern": "*.csv"}), ("duckdb", {})
    )
    with session_scope(settings.effective_database_url) as session:
        done = ConnectorRun(connector_id=cid, status="succeeded", trigger="manual")
        local = ConnectorRun(connector_id=cid, status="running", trigger="manual")
        session.add_all([done, local])
        session.flush()
        ids = (done.id, local.id)
    for run_id, says in zip(ids, ("is succeeded", "runs outside Prefect"), strict=True):
        with pytest.raises(Conflict, match=says):
            cancel(run_id, settings=settings, actor=SYSTEM, cancel_flow_run=never)
        assert record(settings, run_id).waiting_reason is None


def test_prefect_unreachable_leaves_the_run_as_it_was(settings: Settings) -> None:
    from conveyor.errors import ExternalError
    from conveyor.services.cancel import cancel
    from conveyor.sync.flow_runs import cancel_flow_run
    from tests.fixtures.net import free_port

    down = settings.model_copy(update={"prefect_api_url": f"http://127.0.0.1:{free_port()}/api"})
    cid = ConnectorFactory(settings)(
        ("filesystem", {"path": str(settings.home), "file_pattern": "*.csv"}), ("duckdb", {})
    )
    flow_run_id = "6f1c2d1e-0000-4000-8000-000000000001"
    with session_scope(settings.effective_database_url) as session:
        run = ConnectorRun(
            connector_id=cid, status="running", trigger="manual", prefect_flow_run_id=flow_run_id
        )
        session.add(run)
        session.flush()
        run_id = run.id
    with pytest.raises(ExternalError):
        cancel(run_id, settings=down, actor=SYSTEM, cancel_flow_run=cancel_flow_run)
    after = record(settings, run_id)
    assert after.status == "running" and after.waiting_reason is None
    text = log_of(settings, run_id)
    assert "Cancel requested by system." in text and "Cancel request not carried out." in text


def test_watchdog_closes_a_cancelled_run_whose_hook_never_ran(s: Settings) -> None:
    from conveyor.services.cancel import CANCELLING
    from conveyor.sync.flow_runs import cancel_flow_run
    from conveyor.sync.loop import open_gateway
    from conveyor.sync.watchdog import one_pass

    src = s.home / "in"
    src.mkdir()
    cid = ConnectorFactory(s)(
        ("filesystem", {"path": str(src), "file_pattern": "*.csv"}), ("duckdb", {})
    )
    reconcile(s)
    run_id = trigger(s, cid)
    flow_run_id = record(s, run_id).prefect_flow_run_id
    assert flow_run_id
    # Cancel asked for by alice; Prefect ended the flow run, but no hook closed the record.
    with session_scope(s.effective_database_url) as session:
        session.get(ConnectorRun, run_id).waiting_reason = CANCELLING + "alice"  # type: ignore[union-attr]
    assert cancel_flow_run(s.prefect_api_url or "", flow_run_id, message="x") == "CANCELLED"
    assert record(s, run_id).status == "scheduled"

    async def watchdog() -> int:
        async with open_gateway(s) as gateway:
            return await one_pass(settings=s, gateway=gateway)

    assert asyncio.run(watchdog()) == 1
    run = record(s, run_id)
    assert (run.status, run.error, run.waiting_reason) == ("cancelled", "Cancelled by alice.", None)
