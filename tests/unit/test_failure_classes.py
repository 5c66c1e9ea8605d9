"""Failure classes from real library exceptions (no servers): what a run's record says and
whether it is retried. The PostgreSQL ones are in tests/integration/test_failure_classes.py."""

from __future__ import annotations

import socket
import sqlite3

import duckdb
import httpx
import pytest

from conveyor.pipelines.explain import explain
from conveyor.pipelines.registry import get_type


def _raised(fn: object) -> BaseException:
    try:
        fn()  # type: ignore[operator]
    except BaseException as exc:
        return exc
    raise AssertionError("nothing raised")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_refused_connection_is_transient() -> None:
    import psycopg

    port = _closed_port()
    exc = _raised(
        lambda: psycopg.connect(f"postgresql://u:p@127.0.0.1:{port}/db", connect_timeout=3)
    )
    why = explain(exc, source=get_type("source", "sql_database"))
    assert why.failure_class == "transient", why
    assert why.side == "source"
    assert f"127.0.0.1:{port}" in why.message
    plain = _raised(lambda: socket.create_connection(("127.0.0.1", port), timeout=3))
    assert isinstance(plain, ConnectionRefusedError)
    assert explain(plain).failure_class == "transient"


def test_rows_that_do_not_fit_are_data_failures_of_the_destination() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE t (id INTEGER NOT NULL)")
    conversion = _raised(lambda: con.execute("INSERT INTO t VALUES ('abc')"))
    constraint = _raised(lambda: con.execute("INSERT INTO t VALUES (NULL)"))
    lite = sqlite3.connect(":memory:")
    lite.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    lite.execute("INSERT INTO t VALUES (1)")
    duplicate = _raised(lambda: lite.execute("INSERT INTO t VALUES (1)"))
    src = get_type("source", "sql_database")
    dst = get_type("destination", "duckdb")
    for exc in (conversion, constraint, duplicate):
        why = explain(exc, source=src, destination=dst)
        assert why.failure_class == "data", (exc, why)
        assert why.side == "destination", (exc, why)
        assert not why.transient
        assert "does not fit" in why.message


def test_a_schema_conflict_is_a_data_failure() -> None:
    from dlt.common.schema.exceptions import CannotCoerceColumnException

    exc = CannotCoerceColumnException("schema", "orders", "amount", "bigint", "text", "x")
    why = explain(exc)
    assert why.failure_class == "data"
    assert "schema" in why.message


@pytest.mark.parametrize(
    ("status", "expected"),
    [(503, "transient"), (502, "transient"), (429, "transient"), (401, "config"), (404, "config")],
)
def test_http_answers(status: int, expected: str) -> None:
    request = httpx.Request("GET", "https://api.example.test/items")
    response = httpx.Response(status, request=request)
    exc = _raised(response.raise_for_status)
    why = explain(exc, source=get_type("source", "rest_api"))
    assert why.failure_class == expected, why
    assert why.side == "source"


def test_a_missing_file_and_a_denied_path_are_config(tmp_path: object) -> None:
    missing = _raised(lambda: open("/nonexistent/conveyor/file.csv"))  # noqa: SIM115
    assert explain(missing).failure_class == "config"
    assert explain(PermissionError(13, "Permission denied", "/root/x")).failure_class == "config"


def test_a_locked_duckdb_file_is_transient() -> None:
    why = explain(
        duckdb.IOException(
            'IO Error: Could not set lock on file "/data/x.duckdb": Conflicting lock'
        ),
        destination=get_type("destination", "duckdb"),
    )
    assert why.failure_class == "transient"
    assert why.side == "destination"


def test_what_nothing_recognises_is_internal() -> None:
    why = explain(KeyError("a bug"))
    assert why.failure_class == "internal"
    assert why.side is None
    assert "KeyError" in why.message


def test_conveyor_errors_keep_their_meaning() -> None:
    from conveyor.errors import ExternalError, ValidationFailed

    assert explain(ValidationFailed.field("query", "bad")).failure_class == "config"
    assert explain(ExternalError("down", transient=True)).failure_class == "transient"
