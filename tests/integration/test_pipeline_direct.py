"""Whole tables copied database to database (pipelines/direct.py), against real PostgreSQL."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from conveyor.pipelines import direct
from conveyor.pipelines.flow import load_connector, run_connector
from tests.fixtures.pipelines import duckdb_file_held, duckdb_rows, last_run, pg_exec, pg_rows

SOURCE = """
CREATE TYPE mood AS ENUM ('ok', 'meh');
CREATE TABLE "OrderLines" (
    "OrderID" bigint NOT NULL,
    line integer NOT NULL,
    amount numeric(12, 2),
    shipped date,
    at timestamptz NOT NULL,
    note text,
    tags text[],
    meta jsonb,
    PRIMARY KEY ("OrderID", line)
);
INSERT INTO "OrderLines"
SELECT g / 4, g % 4, g * 0.25, DATE '2024-01-01' + g % 300,
       TIMESTAMPTZ '2024-01-01 00:00:00+00' + g * INTERVAL '1 minute',
       CASE WHEN g % 10 = 0 THEN NULL ELSE 'note ' || g || ' with, comma "and" quote' END,
       ARRAY['t' || g % 3, 'x'], jsonb_build_object('g', g)
FROM generate_series(1, 1000) g;
CREATE TABLE feelings (id integer, m mood);
INSERT INTO feelings VALUES (1, 'ok'), (2, 'meh'), (3, NULL);
CREATE TABLE events (id integer, at timestamptz NOT NULL);
INSERT INTO events SELECT g, now() - g * INTERVAL '1 hour' FROM generate_series(1, 50) g;
"""

COLUMNS = '"OrderID", line, amount, shipped, at, note, tags, meta'
PICKED = ["OrderID", "line", "amount", "tags", "at"]
DEST_COLUMNS = "order_id, line, amount, shipped, at, note, tags, meta"


@pytest.fixture
def source_db(pg_database: Any) -> str:
    url = pg_database()
    pg_exec(url, SOURCE)
    return str(url)


def sql_source(url: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    return ("sql_database", {"connection_string": url, **extra})


def copied_directly(summary: str) -> bool:
    """The run summary lists the steps: a direct copy has ``copy`` and no dlt extract."""
    return "copy " in summary and "extract " not in summary


def pg_types(url: str, schema: str, table: str) -> list[tuple[str, str]]:
    return pg_rows(
        url,
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        f"WHERE attrelid = '{schema}.{table}'::regclass AND attnum > 0 AND NOT attisdropped "
        "ORDER BY attnum",
    )


def test_postgres_to_postgres_whole_table(factory: Any, source_db: str, pg_database: Any) -> None:
    target = pg_database()
    cid = factory(
        sql_source(source_db, tables=["OrderLines"]),
        ("postgres", {"connection_string": target, "schema": "landing"}),
    )
    assert run_connector(cid, settings=factory.settings)["tables"] == {"order_lines": 1000}
    run = last_run(factory.settings, cid)
    assert run.status == "succeeded" and copied_directly(run.log_summary)
    assert run.rows_loaded == 1000 and run.bytes_loaded > 0
    assert run.schema_changes == [{"table": "order_lines", "columns": DEST_COLUMNS.split(", ")}]
    # names as dlt would give them, types exactly as in the source
    source_types = [t for _, t in pg_types(source_db, "public", '"OrderLines"')]
    assert pg_types(target, "landing", "order_lines") == list(
        zip(DEST_COLUMNS.split(", "), source_types, strict=True)
    )
    # every value arrives unchanged: NULLs, quotes, arrays, JSON, time zones
    order = "ORDER BY 1, 2"
    assert pg_rows(target, f"SELECT {DEST_COLUMNS} FROM landing.order_lines {order}") == pg_rows(
        source_db, f'SELECT {COLUMNS} FROM "OrderLines" {order}'
    )

    # replace: a rerun keeps one copy, and changes no schema
    pg_exec(source_db, 'DELETE FROM "OrderLines" WHERE line = 0')
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 750
    assert pg_rows(target, "SELECT count(*) FROM landing.order_lines") == [(750,)]
    assert last_run(factory.settings, cid).schema_changes == []


def test_postgres_append_and_new_source_column(
    factory: Any, source_db: str, pg_database: Any
) -> None:
    target = pg_database()
    cid = factory(
        sql_source(source_db, tables=["OrderLines"], write_disposition="append"),
        ("postgres", {"connection_string": target}),
    )
    run_connector(cid, settings=factory.settings)
    run_connector(cid, settings=factory.settings)
    ds = f"connector_{cid}"
    assert pg_rows(target, f"SELECT count(*) FROM {ds}.order_lines") == [(2000,)]

    pg_exec(source_db, 'ALTER TABLE "OrderLines" ADD COLUMN "Discount" numeric(5, 2) DEFAULT 0.5')
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 1000
    run = last_run(factory.settings, cid)
    assert copied_directly(run.log_summary)
    assert run.schema_changes == [{"table": "order_lines", "columns": ["discount"]}]
    assert pg_rows(
        target, f"SELECT count(*), count(discount), sum(discount) FROM {ds}.order_lines"
    ) == [(3000, 1000, Decimal("500.00"))]


def test_postgres_to_duckdb_columns_append_then_incremental(factory: Any, source_db: str) -> None:
    cid = factory(
        sql_source(
            source_db,
            tables=[{"name": "OrderLines", "columns": PICKED}],
            write_disposition="append",
        ),
        ("duckdb", {}),
    )
    run_connector(cid, settings=factory.settings)
    assert run_connector(cid, settings=factory.settings)["tables"] == {"order_lines": 1000}
    run = last_run(factory.settings, cid)
    assert copied_directly(run.log_summary) and run.bytes_loaded > 0
    ds = f"connector_{cid}"
    assert duckdb_rows(factory.settings, f"DESCRIBE {ds}.order_lines") == [
        ("order_id", "BIGINT", "YES", None, None, None),
        ("line", "INTEGER", "YES", None, None, None),
        ("amount", "DECIMAL(12,2)", "YES", None, None, None),
        ("at", "TIMESTAMP WITH TIME ZONE", "YES", None, None, None),
        ("tags", "VARCHAR[]", "YES", None, None, None),
    ]
    assert duckdb_rows(
        factory.settings, f"SELECT count(*), sum(amount), max(order_id) FROM {ds}.order_lines"
    ) == [(2000, Decimal("250250.00"), 250)]
    tags = duckdb_rows(factory.settings, f"SELECT DISTINCT tags FROM {ds}.order_lines")
    assert sorted(t[0][0] for t in tags) == ["t0", "t1", "t2"]

    # The same connector made incremental goes through dlt and lands in the same table.
    factory.update_source(
        cid,
        {
            "connection_string": source_db,
            "tables": [{"name": "OrderLines", "columns": PICKED}],
            "cursor_column": "at",
            "initial_value": "2024-01-01T16:00:00+00:00",
        },
    )
    loaded = run_connector(cid, settings=factory.settings)["rows_loaded"]
    run = last_run(factory.settings, cid)
    assert run.status == "succeeded" and not copied_directly(run.log_summary)
    assert loaded == 1000 - 959  # rows at or after 16:00 (minute 960 onwards)
    assert duckdb_rows(
        factory.settings,
        f"SELECT count(*), count(DISTINCT (order_id, line)) FROM {ds}.order_lines "
        "WHERE \"at\" >= TIMESTAMPTZ '2024-01-01 16:00:00+00'",
    ) == [(3 * loaded, loaded)]


def test_what_goes_database_to_database(factory: Any, source_db: str, pg_database: Any) -> None:
    target = ("postgres", {"connection_string": pg_database()})
    tables = ["OrderLines", "feelings", {"name": "events", "cursor_column": "at"}]
    cid = factory(sql_source(source_db, tables=tables), target)
    plan = direct.plan(load_connector(cid, settings=factory.settings))
    assert plan is not None
    # enums are not PostgreSQL built-ins; a cursor read takes the fast path
    assert [t.name for t in plan.tables] == ["OrderLines", "events"]
    assert [t.incremental for t in plan.tables] == [False, True]
    assert plan.rest is not None
    assert [t if isinstance(t, str) else t.name for t in plan.rest.tables or []] == ["feelings"]
    # one run moves all three, each the right way
    assert run_connector(cid, settings=factory.settings)["tables"] == {
        "order_lines": 1000,
        "feelings": 3,
        "events": 50,
    }
    summary = last_run(factory.settings, cid).log_summary
    assert "copy " in summary and "extract " in summary

    # every table when none are listed; merge on keys goes database to database too;
    # custom queries, an explicitly chosen dlt backend and a text cursor stay with dlt
    every = factory(sql_source(source_db), target)
    plan = direct.plan(load_connector(every, settings=factory.settings))
    assert plan is not None and [t.name for t in plan.tables] == ["OrderLines", "events"]
    merge = factory(
        sql_source(source_db, tables=["OrderLines"], primary_key=["OrderID", "line"]), target
    )
    plan = direct.plan(load_connector(merge, settings=factory.settings))
    assert plan is not None and plan.rest is None
    assert [(t.disposition, [k.name for k in t.key], t.key_unique) for t in plan.tables] == [
        ("merge", ["OrderID", "line"], True)
    ]
    for extra in (
        {"query": "SELECT 1 AS x"},
        {"tables": ["OrderLines"], "backend": "pyarrow"},
        {"tables": ["OrderLines"], "cursor_column": "note"},
    ):
        other = factory(sql_source(source_db, **extra), target)
        assert direct.plan(load_connector(other, settings=factory.settings)) is None, extra


def test_direct_copy_waits_for_a_locked_duckdb_file(
    factory: Any, source_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor.pipelines import runner

    monkeypatch.setattr(runner, "LOCK_BACKOFF", 1.0)
    cid = factory(sql_source(source_db, tables=["OrderLines"]), ("duckdb", {}))
    with duckdb_file_held(factory.settings):
        assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 1000
    assert copied_directly(last_run(factory.settings, cid).log_summary)
    assert duckdb_rows(factory.settings, f"SELECT count(*) FROM connector_{cid}.order_lines") == [
        (1000,)
    ]
