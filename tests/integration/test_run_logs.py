"""A run's full log, stored by Conveyor (issue 17), on SQLite and PostgreSQL: a run without
Prefect (``run_connector``) keeps Conveyor's and dlt's lines with secrets masked, the API
serves it as plain text (whole, ``?tail=N``, as a download), the size cap truncates and says
so, and the log goes with its run. The flow process's capture is exercised through a real
Prefect worker in test_run_cancel.py."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from conveyor.db.models import ConnectorRun, RunLogChunk
from conveyor.db.session import session_scope
from conveyor.pipelines import flow, runner
from conveyor.services import run_logs
from conveyor.settings import Settings
from tests.fixtures.pipelines import ConnectorFactory, last_run, pg_exec
from tests.fixtures.web import ApiUser

CANARY = f"canary-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def pg_connector(settings: Settings, pg_database: Callable[[], str]) -> int:
    """A PostgreSQL source whose password is the canary (the test server trusts loopback
    connections, so any password connects)."""
    db = pg_database()
    pg_exec(db, "CREATE TABLE t (id int PRIMARY KEY, v text)", "INSERT INTO t VALUES (1,'a')")
    host_db = db.rsplit("/", 1)[1]
    config = {
        "host": "127.0.0.1",
        "port": 5432,
        "database": host_db,
        "username": "postgres",
        "password": CANARY,
        "tables": ["t"],
    }
    return ConnectorFactory(settings)(("sql_database", config), ("duckdb", {}))


@pytest.fixture
def chatty_type(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Makes the copy log its connector's password, as a careless plugin type would, on
    Conveyor's and dlt's loggers, plus ``n`` filler lines."""
    lines = {"n": 0}
    real = runner.run

    def run(connector: Any, settings: Settings) -> Any:
        logging.getLogger("conveyor.pipelines.sources.x").info("connecting with %s", CANARY)
        logging.getLogger("dlt").warning("dlt says the password is %s", CANARY)
        for i in range(lines["n"]):
            logging.getLogger("conveyor.pipelines.runner").info("filler line %05d %s", i, "x" * 40)
        return real(connector, settings)

    monkeypatch.setattr(runner, "run", run)
    return lambda n: lines.__setitem__("n", n)


def stored_log(settings: Settings, run_id: int) -> str:
    with session_scope(settings.effective_database_url) as s:
        return run_logs.read(run_id, session=s)


def test_run_log_keeps_conveyor_and_dlt_lines_with_secrets_masked(
    settings: Settings, pg_connector: int, chatty_type: Callable[[int], None], admin: ApiUser
) -> None:
    flow.run_connector(pg_connector, settings=settings)
    run = last_run(settings, pg_connector)
    assert run.status == "succeeded", run.error
    text = stored_log(settings, run.id)
    assert CANARY not in text
    lines = text.splitlines()
    assert any(
        line.endswith("INFO conveyor.pipelines.sources.x: connecting with ********")
        for line in lines
    ), text
    assert any("WARNING dlt: dlt says the password is ********" in line for line in lines)
    assert any(
        "INFO conveyor.pipelines.flow: connector" in x and "Loaded 1 rows" in x for x in lines
    )
    # Each line: "YYYY-MM-DD HH:MM:SS LEVEL logger: text".
    assert all(line[4] == "-" and line[10] == " " and line[13] == ":" for line in lines)
    assert run.log_bytes == len(text.encode()) and run.log_truncated is False

    resp = admin.get(f"/api/v1/runs/{run.id}/logs")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    assert resp.text == text and "content-disposition" not in resp.headers
    tail = admin.get(f"/api/v1/runs/{run.id}/logs", params={"tail": 2})
    assert tail.text.splitlines() == lines[-2:]
    down = admin.get(f"/api/v1/runs/{run.id}/logs", params={"download": 1})
    assert down.headers["content-disposition"] == f"attachment; filename=run-{run.id}.log"


def test_bad_tail_is_refused_naming_it(admin: ApiUser) -> None:
    for tail in ("0", "-1", "100001", "ten"):
        resp = admin.get("/api/v1/runs/1/logs", params={"tail": tail})
        assert resp.status_code == 422, resp.text
        assert resp.json()["errors"][0]["field"].endswith("tail"), resp.text
    assert admin.get("/api/v1/runs/999999/logs").status_code == 404


def test_cap_truncates_and_says_how_much_was_left_out(
    settings: Settings, pg_connector: int, chatty_type: Callable[[int], None]
) -> None:
    capped = settings.model_copy(update={"run_log_max_bytes": 2_000})
    chatty_type(200)  # ~200 x 90 bytes, far past the cap
    flow.run_connector(pg_connector, settings=capped)
    run = last_run(settings, pg_connector)
    assert run.status == "succeeded", run.error
    text = stored_log(settings, run.id)
    assert run.log_truncated is True
    assert run.log_bytes <= 2_000 and len(text.encode()) < 2_000 + 300
    assert "filler line 00000" in text and "filler line 00199" not in text
    last = text.splitlines()[-1]
    assert "log truncated:" in last and "CONVEYOR_RUN_LOG_MAX_BYTES=2000" in last, last
    kept = text.count("filler line")
    left_out = int(last.split("log truncated: ")[1].split()[0])
    assert left_out == 200 - kept + 1  # the rest of the filler, and the run's summary line


def test_tail_reads_across_chunks(settings: Settings, pg_connector: int) -> None:
    flow.run_connector(pg_connector, settings=settings)
    run_id = last_run(settings, pg_connector).id
    with session_scope(settings.effective_database_url) as s:
        for i in range(5):
            run_logs.append_chunk(run_id, f"a{i}\nb{i}\n", session=s)
    with session_scope(settings.effective_database_url) as s:
        assert run_logs.read(run_id, session=s, tail=3) == "b3\na4\nb4\n"
        assert run_logs.read(run_id, session=s).endswith("a3\nb3\na4\nb4\n")


def test_log_goes_with_its_run(settings: Settings, pg_connector: int) -> None:
    flow.run_connector(pg_connector, settings=settings)
    run_id = last_run(settings, pg_connector).id

    def chunks() -> int:
        with session_scope(settings.effective_database_url) as s:
            q = select(func.count()).where(RunLogChunk.run_id == run_id)
            return int(s.scalar(q) or 0)

    assert chunks() >= 1
    with session_scope(settings.effective_database_url) as s:
        s.delete(s.get(ConnectorRun, run_id))
    assert chunks() == 0


def test_a_later_attempt_adds_to_the_log_within_the_same_cap(
    settings: Settings, pg_connector: int
) -> None:
    flow.run_connector(pg_connector, settings=settings)
    run = last_run(settings, pg_connector)
    first = stored_log(settings, run.id)
    capped = settings.model_copy(update={"run_log_max_bytes": run.log_bytes + 1_000})
    with run_logs.LogCapture(run.id, settings=capped):
        for i in range(50):
            logging.getLogger("conveyor.test").info("attempt 2 line %03d %s", i, "y" * 40)
    text = stored_log(settings, run.id)
    after = last_run(settings, pg_connector)
    assert text.startswith(first) and "attempt 2 line 000" in text
    assert "attempt 2 line 049" not in text and "log truncated:" in text.splitlines()[-1]
    assert after.log_truncated and after.log_bytes <= run.log_bytes + 1_000
