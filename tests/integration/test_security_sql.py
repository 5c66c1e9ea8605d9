"""SQL sources are read-only for real: the query parser refuses anything but one SELECT, and
the sessions cannot write even when the parser is fooled (real PostgreSQL, SQLite and,
where a driver is installed, MariaDB)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from conveyor.errors import ValidationFailed
from conveyor.pipelines import readonly
from conveyor.pipelines.flow import RunFailed, run_connector
from conveyor.pipelines.registry import validate_config
from tests.fixtures.pipelines import last_run, pg_exec, pg_rows

ATTACKS = [
    "SELECT 1 AS x; COMMIT; UPDATE victim SET v = 'pwned'",
    "SELECT 1 AS x; COMMIT; DROP TABLE victim",
    "SELECT 1; DELETE FROM victim",
    "WITH gone AS (DELETE FROM victim RETURNING *) SELECT * FROM gone",
    "SELECT * INTO stolen FROM victim",
    "SELECT * FROM victim FOR UPDATE",
    "SELECT * FROM victim FOR SHARE",
    "SELECT * FROM victim FOR NO KEY UPDATE",
    "UPDATE victim SET v = 'pwned'",
    "COMMIT; DROP TABLE victim",
    "EXPLAIN ANALYZE DELETE FROM victim",
    "SET default_transaction_read_only = off",
    "SELECT 'a\\'; DROP TABLE victim; --'",
    "SELECT FROM WHERE (",
    "",
]
FINE = [
    "SELECT 1 AS x",
    "select * from victim where v = 'a;b';",
    "WITH w AS (SELECT id FROM victim) SELECT * FROM w",
    "(SELECT id FROM victim) UNION ALL (SELECT 2)",
    "SELECT id -- a comment; DROP TABLE victim\nFROM victim",
]


@pytest.mark.parametrize("query", ATTACKS)
def test_the_validator_refuses_anything_but_one_select(query: str) -> None:
    config = {"connection_string": "postgresql://u@db.example.com/x", "query": query}
    with pytest.raises(ValidationFailed, match=r"config\.query: query "):
        validate_config("source", "sql_database", config)


@pytest.mark.parametrize("query", FINE)
def test_the_validator_accepts_plain_queries(query: str) -> None:
    config = {"connection_string": "postgresql://u@db.example.com/x", "query": query}
    validate_config("source", "sql_database", config)


def test_mysql_executable_comments_are_refused() -> None:
    with pytest.raises(ValueError, match="executable comments"):
        readonly.check_query("SELECT 1 /*! ; DROP TABLE victim */", "mysql")


@pytest.fixture
def victim(pg_database: Any) -> str:
    url = pg_database()
    pg_exec(
        url,
        "CREATE TABLE victim (id int PRIMARY KEY, v text)",
        "INSERT INTO victim VALUES (1, 'a'), (2, 'b')",
    )
    return str(url)


def _intact(url: str) -> None:
    assert pg_rows(url, "SELECT id, v FROM victim ORDER BY id") == [(1, "a"), (2, "b")]


@pytest.mark.parametrize(
    "query",
    ["SELECT 1 AS x; COMMIT; UPDATE victim SET v = 'pwned'", "SELECT 1; COMMIT; DROP TABLE victim"],
)
def test_refused_on_save_and_at_run_time_stored_past_the_validator(
    factory: Any, victim: str, query: str
) -> None:
    with pytest.raises(ValidationFailed, match=r"config\.query"):
        factory.endpoint("source", "sql_database", {"connection_string": victim, "query": query})
    cid = factory(
        ("sql_database", {"connection_string": victim, "query": "SELECT id FROM victim"}),
        ("duckdb", {}),
    )
    factory.update_source(cid, {"connection_string": victim, "query": query})
    with pytest.raises(RunFailed, match="query"):
        run_connector(cid, settings=factory.settings)
    assert last_run(factory.settings, cid).status == "failed"
    _intact(victim)


@pytest.mark.parametrize(
    "query",
    [
        "SELECT 1 AS x; COMMIT; UPDATE victim SET v = 'pwned'",
        "SELECT 1 AS x; COMMIT; DROP TABLE victim",
        "SELECT 1 AS x; COMMIT; SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; "
        "DELETE FROM victim",
    ],
)
def test_a_fooled_parser_still_cannot_write(
    factory: Any, victim: str, query: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session is read-only for its whole life: COMMIT does not end it."""
    cid = factory(
        ("sql_database", {"connection_string": victim, "query": "SELECT id FROM victim"}),
        ("duckdb", {}),
    )
    factory.update_source(cid, {"connection_string": victim, "query": query})
    monkeypatch.setattr(readonly, "check_query", lambda sql, dialect: None)  # fooled
    with pytest.raises(RunFailed):
        run_connector(cid, settings=factory.settings)
    _intact(victim)
    # The same, straight on the engine every source session comes from.
    engine = readonly.engine(victim)
    try:
        with engine.connect() as conn, pytest.raises(Exception, match="read-only transaction"):
            conn.exec_driver_sql(query)
    finally:
        engine.dispose()
    _intact(victim)


def test_whole_table_reads_and_the_direct_copy_are_read_only_sessions(victim: str) -> None:
    import psycopg

    from conveyor.pipelines.direct import conninfo

    url = readonly.read_only_url(victim)
    assert "default_transaction_read_only" in url
    with (
        psycopg.connect(conninfo(url), autocommit=True) as conn,
        pytest.raises(psycopg.errors.ReadOnlySqlTransaction),
    ):
        conn.execute("DROP TABLE victim")
    import connectorx as cx
    import sqlalchemy as sa

    # connectorx gets the URL dlt derives from the engine: read-only there too.
    plain = sa.engine.make_url(url).set(drivername="postgresql").render_as_string(False)
    sql = "SELECT current_setting('default_transaction_read_only') AS ro"
    table = cx.read_sql(plain, sql, return_type="arrow")
    assert table.column("ro").to_pylist() == ["on"]
    _intact(victim)


def test_tables_from_postgres_still_load(factory: Any, victim: str) -> None:
    cid = factory(("sql_database", {"connection_string": victim}), ("duckdb", {}))
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 2
    _intact(victim)


def test_sqlite_sources_are_opened_read_only(factory: Any, tmp_path: Path) -> None:
    db = tmp_path / "src.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE victim (id INTEGER PRIMARY KEY, v TEXT)")
        con.execute("INSERT INTO victim VALUES (1, 'a'), (2, 'b')")
    engine = readonly.engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn, pytest.raises(Exception, match=r"readonly|query_only"):
            conn.exec_driver_sql("DELETE FROM victim")
    finally:
        engine.dispose()
    cid = factory(
        ("sql_database", {"connection_string": f"sqlite:///{db}", "query": "SELECT * FROM victim"}),
        ("duckdb", {}),
    )
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 2
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT count(*) FROM victim").fetchone() == (2,)


def test_mariadb_sessions_are_read_only(mysql_database: Any) -> None:
    db = mysql_database()
    db.execute("CREATE TABLE victim (id int, v text)", "INSERT INTO victim VALUES (1, 'a')")
    admin = db.server  # a user that may write: only the session's lock stops it
    url = f"mysql+pymysql://{admin.user}:{admin.password}@{admin.host}:{admin.port}/{db.name}"
    engine = readonly.engine(url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
            conn.commit()
            with pytest.raises(Exception, match=r"READ ONLY|read only|read-only"):
                conn.exec_driver_sql("UPDATE victim SET v = 'pwned'")
            conn.rollback()
            conn.exec_driver_sql("COMMIT")
            with pytest.raises(Exception, match=r"READ ONLY|read only|read-only"):
                conn.exec_driver_sql("DELETE FROM victim")
    finally:
        engine.dispose()
    assert db.rows("SELECT id, v FROM victim") == [(1, "a")]
