"""Bad input and faults: the run ends ``failed`` with a readable message, and a rerun after
the fix loads exactly what is missing."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from conveyor.errors import ValidationFailed
from conveyor.pipelines.flow import RunFailed, run_connector
from tests.fixtures.pipelines import duckdb_rows, last_run, pg_exec, pg_rows
from tests.fixtures.servers import free_port
from tests.integration.test_pipeline_rest import items, rest_source


@pytest.fixture
def source_db(pg_database: Any) -> str:
    url = pg_database()
    pg_exec(
        url,
        "CREATE TABLE orders (id int PRIMARY KEY, amount int)",
        "INSERT INTO orders SELECT g, g FROM generate_series(1, 100) g",
    )
    return str(url)


def failed(factory: Any, cid: int, match: str) -> Any:
    with pytest.raises(RunFailed, match=match):
        run_connector(cid, settings=factory.settings)
    run = last_run(factory.settings, cid)
    assert run.status == "failed" and run.finished_at is not None
    assert run.rows_loaded is None
    return run


def test_unreachable_source_then_fixed(factory: Any, source_db: str) -> None:
    port = free_port()  # nothing listens there
    cid = factory(
        (
            "sql_database",
            {
                "host": "127.0.0.1",
                "port": port,
                "database": "x",
                "username": "u",
                "password": "hunter2-secret",
                "tables": ["orders"],
            },
        ),
        ("duckdb", {}),
    )
    run = failed(factory, cid, "Cannot reach the server")
    assert f"127.0.0.1:{port}" in run.error
    assert "hunter2-secret" not in (run.error + run.log_summary)
    factory.update_source(cid, {"connection_string": source_db, "tables": ["orders"]})
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 100


def test_unreachable_destination(factory: Any, source_db: str) -> None:
    cid = factory(
        ("sql_database", {"connection_string": source_db, "tables": ["orders"]}),
        ("postgres", {"connection_string": f"postgresql://u:pw-9876@127.0.0.1:{free_port()}/d"}),
    )
    run = failed(factory, cid, "Cannot reach the server")
    assert "pw-9876" not in run.error + run.log_summary


def test_missing_table_then_created(factory: Any, source_db: str) -> None:
    cid = factory(
        ("sql_database", {"connection_string": source_db, "tables": ["orders", "refunds"]}),
        ("duckdb", {}),
    )
    run = failed(factory, cid, "Table 'refunds' does not exist")
    assert "refunds" in run.error
    pg_exec(
        source_db, "CREATE TABLE refunds (id int PRIMARY KEY)", "INSERT INTO refunds VALUES (1)"
    )
    assert run_connector(cid, settings=factory.settings)["tables"] == {"orders": 100, "refunds": 1}


def test_non_select_queries_are_refused(factory: Any, source_db: str) -> None:
    # A data-modifying CTE passes a first-word check: the parser refuses it on save.
    sneaky = "WITH gone AS (DELETE FROM orders RETURNING *) SELECT * FROM gone"
    with pytest.raises(ValidationFailed, match="contains DELETE"):
        factory(("sql_database", {"connection_string": source_db, "query": sneaky}), ("duckdb", {}))
    cid = factory(
        ("sql_database", {"connection_string": source_db, "query": "SELECT * FROM orders"}),
        ("duckdb", {}),
    )
    # Stored configs that bypassed validation (e.g. an older version) are refused at run time.
    for query, why in (
        (sneaky, "query must only read, but it contains DELETE"),
        ("DELETE FROM orders", "query must be a SELECT statement, not DELETE"),
    ):
        factory.update_source(cid, {"connection_string": source_db, "query": query})
        failed(factory, cid, why)
        assert pg_rows(source_db, "SELECT count(*) FROM orders") == [(100,)]


def test_malformed_csv_row_then_fixed(factory: Any, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.csv").write_text("id,name,qty\n1,a,1\n2,b,2\n")
    (src / "b.csv").write_text("id,name,qty\n3,c,3\n4,d,4,extra\n")
    cid = factory(
        ("filesystem", {"path": str(src), "file_pattern": "*.csv", "table_name": "stock"}),
        ("duckdb", {}),
        source_override={"write_disposition": "append"},
    )
    run = failed(factory, cid, "A source file could not be read")
    assert "b.csv" in run.error and "Expected 3 columns, got 4" in run.error
    (src / "b.csv").write_text("id,name,qty\n3,c,3\n4,d,4\n")
    later = time.time() + 5
    os.utime(src / "b.csv", (later, later))
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 4
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 0
    rows = duckdb_rows(
        factory.settings, f"SELECT count(*), count(DISTINCT id) FROM connector_{cid}.stock"
    )
    assert rows == [(4, 4)]


def test_api_500_then_recovers_without_duplicates(
    factory: Any, rest_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNTIME__REQUEST_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("RUNTIME__REQUEST_BACKOFF_FACTOR", "0.01")
    rest_server.state.items = items(15)
    cid = factory(rest_source(rest_server), ("duckdb", {}), source_override={"primary_key": "id"})
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 15
    rest_server.state.items += items(5, 16, "2024-04-01T00:00:00")
    rest_server.state.fail_gets = 100
    run = failed(factory, cid, r"is failing \(HTTP 500")
    assert "/api/items" in run.error
    rest_server.state.fail_gets = 0
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 5
    rows = duckdb_rows(
        factory.settings, f"SELECT count(*), count(DISTINCT id) FROM connector_{cid}.items"
    )
    assert rows == [(20, 20)]


def test_wrong_api_token(factory: Any, rest_server: Any) -> None:
    rest_server.state.items = items(3)
    src = rest_source(rest_server)
    src[1]["token"] = "wrong-token-0000"
    cid = factory(src, ("duckdb", {}))
    run = failed(factory, cid, "refused the credentials")
    assert "wrong-token-0000" not in run.error + run.log_summary


def test_wrong_sftp_password(factory: Any, source_db: str, sftp_server: Any) -> None:
    cfg = {**sftp_server.config("/x"), "password": "not-the-password"}
    cid = factory(
        ("sql_database", {"connection_string": source_db, "tables": ["orders"]}), ("sftp", cfg)
    )
    run = failed(factory, cid, "SFTP server refused")
    assert "not-the-password" not in run.error + run.log_summary


def test_rest_destination_down_then_delivers_each_row_once(
    factory: Any, source_db: str, rest_server: Any
) -> None:
    rest_server.state.fail_posts = 10_000
    cid = factory(
        ("sql_database", {"connection_string": source_db, "tables": ["orders"]}),
        (
            "rest_api",
            {
                "url": rest_server.base_url + "/ingest",
                "auth_type": "bearer_token",
                "token": rest_server.state.token,
                "batch_size": 30,
                "max_retries": 1,
            },
        ),
        source_override={"cursor_column": "id"},
    )
    failed(factory, cid, "did not accept")
    assert rest_server.state.rows() == []
    rest_server.state.fail_posts = 0
    pg_exec(source_db, "INSERT INTO orders VALUES (101, 101)")
    run_connector(cid, settings=factory.settings)
    ids = [r["id"] for r in rest_server.state.rows()]
    assert sorted(ids) == list(range(1, 102))  # nothing skipped, nothing twice
