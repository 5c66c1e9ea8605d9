"""Failure classes from a real PostgreSQL server's own errors (issue 17): what needs a person is
``config``, what a later attempt can get past is ``transient``, rows the destination refuses
are ``data`` of the destination. The driver-free ones are in tests/unit/test_failure_classes.py;
a wrong password and a server stopped mid-run go through Prefect in test_retries_prefect.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from conveyor.pipelines.explain import Explanation, explain
from conveyor.pipelines.registry import get_type
from tests.fixtures.pipelines import PG_ADMIN, last_run, pg_exec

SQL_SOURCE = get_type("source", "sql_database")
PG_DESTINATION = get_type("destination", "postgres")


def raised(fn: Callable[[], Any]) -> BaseException:
    try:
        fn()
    except Exception as exc:
        return exc
    raise AssertionError("nothing raised")


def on_source(exc: BaseException) -> Explanation:
    return explain(exc, source=SQL_SOURCE, destination=PG_DESTINATION)


def test_what_a_person_must_fix_is_config(pg_database: Any) -> None:
    import psycopg
    import sqlalchemy as sa

    db = pg_database()
    role = f"reader_{db.rsplit('_', 1)[1]}"
    pg_exec(db, "CREATE TABLE t (id int)", f"CREATE ROLE {role}")
    try:
        with psycopg.connect(db) as conn:
            missing = raised(lambda: conn.execute("SELECT * FROM no_such_table"))
        with psycopg.connect(db) as conn:
            conn.execute(f"SET ROLE {role}")
            denied = raised(lambda: conn.execute("SELECT * FROM t"))
        no_db = raised(lambda: psycopg.connect(db + "_gone", connect_timeout=5))
        engine = sa.create_engine(db.replace("postgresql://", "postgresql+psycopg://"))
        with engine.connect() as conn:  # as dlt's sql_database meets it: wrapped by SQLAlchemy
            wrapped = raised(lambda: conn.execute(sa.text("SELECT nope FROM t")))
        engine.dispose()
    finally:
        pg_exec(db, f"DROP ROLE IF EXISTS {role}")
    for exc in (missing, denied, no_db, wrapped):
        why = on_source(exc)
        assert (why.failure_class, why.side) == ("config", "source"), (exc, why)
        assert not why.transient
    assert "does not exist" in on_source(no_db).message


def test_a_connection_broken_off_by_the_server_is_transient(pg_database: Any) -> None:
    import psycopg

    db = pg_database()
    with psycopg.connect(db, autocommit=True) as conn:
        pid = conn.info.backend_pid
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        terminated = raised(lambda: conn.execute("SELECT 1"))
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("SET statement_timeout = 50")
        timed_out = raised(lambda: conn.execute("SELECT pg_sleep(2)"))
    for exc in (terminated, timed_out):
        why = on_source(exc)
        assert why.failure_class == "transient", (exc, why)


def test_rows_the_destination_refuses_are_data(pg_database: Any) -> None:
    import psycopg

    db = pg_database()
    pg_exec(db, "CREATE TABLE t (id int PRIMARY KEY, code varchar(3) NOT NULL)")
    pg_exec(db, "INSERT INTO t VALUES (1, 'a')")
    with psycopg.connect(db, autocommit=True) as conn:
        duplicate = raised(lambda: conn.execute("INSERT INTO t VALUES (1, 'b')"))
        too_long = raised(lambda: conn.execute("INSERT INTO t VALUES (2, 'abcd')"))
        null = raised(lambda: conn.execute("INSERT INTO t VALUES (3, NULL)"))
    for exc in (duplicate, too_long, null):
        why = on_source(exc)
        assert (why.failure_class, why.side) == ("data", "destination"), (exc, why)


def test_a_run_against_a_missing_table_is_recorded_as_config(
    factory: Any, pg_database: Any
) -> None:
    from conveyor.pipelines.flow import RunFailed, run_connector

    db = pg_database()
    cid = factory(("sql_database", {"connection_string": db, "tables": ["gone"]}), ("duckdb", {}))
    with pytest.raises(RunFailed):
        run_connector(cid, settings=factory.settings)
    run = last_run(factory.settings, cid)
    assert (run.status, run.failure_class, run.failure_side) == ("failed", "config", "source")
    assert "gone" in (run.error or "")
