"""Waiting says why: a run that finds the DuckDB file held by another process says so on its
record while it waits, and no longer once it moves on; a failure that is not retried (no
Prefect here) closes the record failed with its class."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from conveyor.db.models import ConnectorRun
from conveyor.db.session import session_scope
from conveyor.pipelines.flow import RunFailed, run_connector
from conveyor.settings import Settings
from tests.fixtures.net import wait_for
from tests.fixtures.pipelines import duckdb_file_held, duckdb_rows, last_run, pg_exec


def _reason(settings: Settings, cid: int) -> str | None:
    with session_scope(settings.effective_database_url) as s:
        run = s.query(ConnectorRun).filter_by(connector_id=cid).order_by(ConnectorRun.id).first()
        return run.waiting_reason if run is not None and run.status == "running" else None


def test_a_run_waiting_for_the_duckdb_file_says_so(
    factory: Any, pg_database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor.pipelines import runner

    monkeypatch.setattr(runner, "LOCK_BACKOFF", 2.0)
    db = pg_database()
    pg_exec(db, "CREATE TABLE t (id int)", "INSERT INTO t SELECT generate_series(1, 10)")
    cid = factory(
        ("sql_database", {"connection_string": db, "query": "SELECT id FROM t"}), ("duckdb", {})
    )
    s = factory.settings
    result: dict[str, Any] = {}
    with duckdb_file_held(s, seconds=5):
        worker = threading.Thread(target=lambda: result.update(run_connector(cid, settings=s)))
        worker.start()
        seen = wait_for(lambda: _reason(s, cid), 20, "the record to say why it waits")
        assert seen.startswith("waiting for the DuckDB file held by another process, attempt ")
        assert seen.endswith(f" of {runner.LOCK_ATTEMPTS}")
    worker.join(60)
    assert result["status"] == "succeeded"
    run = last_run(s, cid)
    assert (run.status, run.waiting_reason, run.failure_class) == ("succeeded", None, None)
    assert duckdb_rows(s, f"SELECT count(*) FROM connector_{cid}.query_result") == [(10,)]


def test_a_failure_without_prefect_is_closed_with_its_class(factory: Any) -> None:
    from tests.fixtures.servers import free_port

    url = f"postgresql://app:pw@127.0.0.1:{free_port()}/db"
    cid = factory(("sql_database", {"connection_string": url, "tables": ["t"]}), ("duckdb", {}))
    with pytest.raises(RunFailed):
        run_connector(cid, settings=factory.settings)
    run = last_run(factory.settings, cid)
    # Transient, but a run outside Prefect has nothing to schedule a retry with.
    assert (run.status, run.failure_class, run.failure_side) == ("failed", "transient", "source")
    assert (run.attempt, run.attempts, run.waiting_reason) == (1, [], None)
