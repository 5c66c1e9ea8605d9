"""MySQL/MariaDB sources against a real MariaDB server (tests/fixtures/mariadb.py), read by a
user that may only SELECT: whole tables through DuckDB's MySQL scanner, cursors and merges
through dlt's sql_database over PyMySQL, and the network policy on both clients."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from conveyor.pipelines.check import check
from conveyor.pipelines.flow import RunFailed, run_connector
from tests.fixtures.pipelines import duckdb_rows, last_run, pg_rows

SOURCE = (
    "CREATE TABLE `OrderLines` (`OrderID` bigint NOT NULL, line int NOT NULL,"
    " amount decimal(12,2), flag tinyint(1), shipped date, at datetime(6) NOT NULL,"
    " note varchar(200), kind enum('a','b'), PRIMARY KEY (`OrderID`, line))",
    "INSERT INTO `OrderLines` WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1"
    " FROM g WHERE n < 500) SELECT n DIV 4, n MOD 4, n * 0.25, n MOD 2,"
    " DATE '2024-01-01' + INTERVAL (n MOD 300) DAY,"
    " TIMESTAMP '2024-01-01 00:00:00' + INTERVAL n MINUTE,"
    " IF(n MOD 10 = 0, NULL, CONCAT('note ', n, ' with, comma \"and\" quote')),"
    " IF(n MOD 2 = 0, 'a', 'b') FROM g",
    "CREATE TABLE docs (id int PRIMARY KEY, opens time)",
    "INSERT INTO docs VALUES (1, '10:11:12'), (2, NULL)",
    "CREATE TABLE events (id int PRIMARY KEY, v varchar(10), updated_at datetime NOT NULL)",
    "INSERT INTO events VALUES (1, 'one', '2024-01-01 00:00:00'),"
    " (2, 'two', '2024-01-02 00:00:00')",
)


@pytest.fixture
def source(mysql_database: Any) -> Any:
    db = mysql_database()
    db.execute(*SOURCE)
    return db


def copied_directly(summary: str) -> bool:
    return "copy " in summary and "extract " not in summary


def test_whole_tables_go_through_duckdbs_mysql_scanner(factory: Any, source: Any) -> None:
    config = {"connection_string": source.url, "tables": ["OrderLines", "docs"]}
    cid = factory(("sql_database", config), ("duckdb", {}))
    result = run_connector(cid, settings=factory.settings)
    assert result["tables"] == {"order_lines": 500, "docs": 2}
    run = last_run(factory.settings, cid)
    assert run.status == "succeeded" and run.bytes_loaded > 0
    # OrderLines by the scanner, docs (a TIME column) by dlt in the same run.
    assert "copy " in run.log_summary and "extract " in run.log_summary
    ds = f"connector_{cid}"
    assert duckdb_rows(
        factory.settings,
        f'SELECT count(*), sum(amount), count(note), min("at"), max(shipped), sum(flag),'
        f" count(*) FILTER (WHERE kind = 'a') FROM {ds}.order_lines",
    ) == [
        (500, Decimal("31312.50"), 450, _ts("2024-01-01 00:01:00"), _date("2024-10-26"), 250, 250)
    ]
    assert duckdb_rows(
        factory.settings, f"SELECT note FROM {ds}.order_lines WHERE order_id = 0 AND line = 1"
    ) == [('note 1 with, comma "and" quote',)]
    assert duckdb_rows(factory.settings, f"SELECT id FROM {ds}.docs ORDER BY id") == [(1,), (2,)]

    # A second run replaces (no doubling); a new column in the source is added.
    source.execute(
        "ALTER TABLE `OrderLines` ADD COLUMN extra int", "UPDATE `OrderLines` SET extra = 7"
    )
    assert run_connector(cid, settings=factory.settings)["tables"]["order_lines"] == 500
    assert duckdb_rows(factory.settings, f"SELECT count(*), sum(extra) FROM {ds}.order_lines") == [
        (500, 3500)
    ]
    assert copied_directly(last_run(factory.settings, cid).log_summary) is False  # docs: dlt


MERGE = {
    "tables": ["events"],
    "write_disposition": "merge",
    "primary_key": ["id"],
    "cursor_column": "updated_at",
}


def events(settings: Any, cid: int) -> list[tuple[Any, ...]]:
    return duckdb_rows(settings, f"SELECT id, v FROM connector_{cid}.events ORDER BY id")


def test_merge_with_a_cursor_takes_the_fast_path(factory: Any, source: Any) -> None:
    cid = factory(("sql_database", {"connection_string": source.url, **MERGE}), ("duckdb", {}))
    assert run_connector(cid, settings=factory.settings)["tables"] == {"events": 2}
    assert copied_directly(last_run(factory.settings, cid).log_summary)
    source.execute(
        "UPDATE events SET v = 'ONE', updated_at = '2024-01-03 00:00:00' WHERE id = 1",
        # the boundary value again, and a later one: neither lost nor doubled
        "INSERT INTO events VALUES (3, 'three', '2024-01-03 00:00:00'),"
        " (4, 'four', '2024-01-04 00:00:00')",
    )
    result = run_connector(cid, settings=factory.settings)
    assert copied_directly(last_run(factory.settings, cid).log_summary)
    assert result["tables"] == {"events": 3}  # the rows from the last cursor on, no more
    assert events(factory.settings, cid) == [(1, "ONE"), (2, "two"), (3, "three"), (4, "four")]
    # The boundary row is read again and dropped: it is loaded already.
    assert run_connector(cid, settings=factory.settings)["tables"] == {"events": 0}
    assert events(factory.settings, cid) == [(1, "ONE"), (2, "two"), (3, "three"), (4, "four")]


def test_a_connector_moves_between_dlt_and_the_fast_path(factory: Any, source: Any) -> None:
    # backend pyarrow: dlt's path over PyMySQL; auto: the scanner. Same tables, same cursor.
    config = {"connection_string": source.url, **MERGE, "backend": "pyarrow"}
    cid = factory(("sql_database", config), ("duckdb", {}))
    run_connector(cid, settings=factory.settings)
    assert "extract " in last_run(factory.settings, cid).log_summary
    source.execute("UPDATE events SET v = 'TWO', updated_at = '2024-01-05 00:00:00' WHERE id = 2")
    factory.update_source(cid, {**config, "backend": "auto"})
    assert run_connector(cid, settings=factory.settings)["tables"] == {"events": 1}
    assert copied_directly(last_run(factory.settings, cid).log_summary)
    source.execute("INSERT INTO events VALUES (5, 'five', '2024-01-06 00:00:00')")
    factory.update_source(cid, config)
    run_connector(cid, settings=factory.settings)
    assert "extract " in last_run(factory.settings, cid).log_summary
    assert events(factory.settings, cid) == [(1, "one"), (2, "TWO"), (5, "five")]


def test_mysql_into_postgres_through_dlt(factory: Any, source: Any, pg_database: Any) -> None:
    target = pg_database()
    config = {"connection_string": source.url, "tables": ["OrderLines"]}
    cid = factory(("sql_database", config), ("postgres", {"connection_string": target}))
    assert run_connector(cid, settings=factory.settings)["tables"] == {"order_lines": 500}
    assert pg_rows(target, f"SELECT count(*), sum(amount) FROM connector_{cid}.order_lines") == [
        (500, Decimal("31312.50"))
    ]


def test_the_reader_cannot_write_and_the_source_is_unchanged(factory: Any, source: Any) -> None:
    import pymysql

    reader = pymysql.connect(
        host=source.server.host,
        port=source.server.port,
        user=source.user,
        password=source.password,
        database=source.name,
    )
    with reader.cursor() as cur, pytest.raises(pymysql.err.OperationalError, match="denied"):
        cur.execute("DELETE FROM events")
    reader.close()
    cid = factory(("sql_database", {"connection_string": source.url}), ("duckdb", {}))
    run_connector(cid, settings=factory.settings)
    assert source.rows("SELECT count(*) FROM events") == [(2,)]


def test_production_refuses_a_loopback_mysql_source_on_both_clients(
    factory: Any, source: Any
) -> None:
    from conveyor.pipelines import direct_mysql, netguard
    from conveyor.pipelines.network import NetworkDenied

    local = factory.settings
    production = local.model_copy(update={"env": "production"})
    config = {"connection_string": source.url, "tables": ["OrderLines"]}
    refused = check("source", "sql_database", config, settings=production)
    assert not refused.ok and "loopback" in refused.message
    cid = factory(("sql_database", config), ("duckdb", {}))
    with pytest.raises(RunFailed, match="loopback"):
        run_connector(cid, settings=production)
    # Below the field check: the scanner's C client is pinned to a checked address, and a
    # name that resolves to loopback is refused there too.
    netguard.activate(production)
    by_name = source.url.replace("127.0.0.1", "localhost")
    with (
        pytest.raises(NetworkDenied, match="loopback"),
        direct_mysql.scanner_connection(":memory:", by_name),
    ):
        pass
    netguard.activate(local)
    assert netguard.pin_mysql("localhost", 3306, "x") in ("127.0.0.1", "::1")


def _ts(text: str) -> Any:
    import datetime as dt

    return dt.datetime.fromisoformat(text)


def _date(text: str) -> Any:
    import datetime as dt

    return dt.date.fromisoformat(text)
