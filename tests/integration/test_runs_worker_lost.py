"""Killing only the worker (invariant 8 of docs/design.md): the flow-run process lives in a
session of its own and finishes its load; the run is recorded as succeeded with its rows,
and the next run of the incremental connector adds no duplicates."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest

from conveyor.db.models import ConnectorRun
from conveyor.db.session import session_scope
from conveyor.settings import Settings
from tests.fixtures.net import wait_for
from tests.fixtures.pipelines import ConnectorFactory, duckdb_rows, pg_exec
from tests.fixtures.sync import delete_all_conveyor_deployments
from tests.integration.test_pipeline_prefect import reconcile, run_status, trigger, worker_env

pytestmark = [pytest.mark.prefect, pytest.mark.timeout(300)]


@pytest.fixture
def lost_settings(tmp_path: Path, prefect_api_url: str) -> Settings:
    """As test_pipeline_prefect's: a fresh Conveyor database (ids repeat across tests)."""
    from cryptography.fernet import Fernet

    from tests.fixtures.db import migrated_sqlite_url

    delete_all_conveyor_deployments()
    home = tmp_path / "home"
    home.mkdir()
    return Settings(
        home=home,
        database_url=migrated_sqlite_url(tmp_path / "conveyor.db"),
        secret_key=Fernet.generate_key().decode(),
        prefect_api_url=prefect_api_url,
        default_work_pool=f"lost-{uuid.uuid4().hex[:8]}",
        run_heartbeat_timeout=6,
    )


def record(s: Settings, run_id: int) -> ConnectorRun:
    with session_scope(s.effective_database_url) as session:
        run = session.get(ConnectorRun, run_id)
        assert run is not None
        session.expunge(run)
        return run


def test_worker_killed_alone_run_that_committed_is_succeeded(
    lost_settings: Settings, process_worker: Any, pg_database: Any
) -> None:
    s = lost_settings
    db = pg_database()
    pg_exec(
        db, "CREATE TABLE t (id int PRIMARY KEY)", "INSERT INTO t SELECT generate_series(1, 10)"
    )
    slow = "SELECT t.id FROM t, (SELECT pg_sleep(6)) AS wait"
    cid = ConnectorFactory(s)(
        ("sql_database", {"connection_string": db}),
        ("duckdb", {}),
        source_override={
            "query": slow,
            "cursor_column": "id",
            "primary_key": ["id"],
            "write_disposition": "append",
        },
    )
    reconcile(s)
    worker = process_worker(s.default_work_pool, worker_env(s))
    first = trigger(s, cid)
    wait_for(lambda: run_status(s, first) == "running", 120, "the run to start")
    assert worker.proc is not None
    os.kill(worker.proc.pid, signal.SIGKILL)  # the worker only: its flow process lives on
    worker.proc.wait()
    table = f"connector_{cid}.query_result"
    # The orphaned flow process finishes its load (its console output, which went to the
    # dead worker's pipe, is dropped instead of aborting it) and records it.
    wait_for(lambda: run_status(s, first) not in ("scheduled", "running"), 90, "the record")
    done = record(s, first)
    assert (done.status, done.rows_loaded) == ("succeeded", 10), done.error
    assert done.committed_at is not None
    assert _count(s, table) == 10

    process_worker(s.default_work_pool, worker_env(s))
    second = trigger(s, cid)
    wait_for(lambda: run_status(s, second) not in ("scheduled", "running"), 120, "the rerun")
    assert record(s, second).status == "succeeded"
    assert duckdb_rows(s, f"SELECT count(*), count(DISTINCT id) FROM {table}") == [(10, 10)]
    assert record(s, second).rows_loaded == 0  # nothing loaded twice


def _count(s: Settings, table: str) -> int:
    try:
        return int(duckdb_rows(s, f"SELECT count(*) FROM {table}")[0][0])
    except Exception:  # no table yet: nothing committed
        return 0
