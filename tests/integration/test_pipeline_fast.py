"""Incremental and merge on the fast path (pipelines/direct.py), through the flow's runner,
against real PostgreSQL: first load, a delta, the source's index used, the cursor kept in
dlt's state so the next run continues wherever it runs."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.pipelines import cursor_state, direct
from conveyor.pipelines.flow import load_connector, run_connector
from tests.fixtures.pipelines import duckdb_rows, last_run, pg_exec, pg_rows

SOURCE = """
CREATE TABLE lines (
    order_id bigint NOT NULL, line integer NOT NULL, amount numeric(12, 2), note text,
    updated_at timestamptz NOT NULL, PRIMARY KEY (order_id, line)
);
CREATE INDEX lines_updated_at ON lines (updated_at);
INSERT INTO lines
SELECT g / 4, g % 4, g * 0.25, CASE WHEN g % 7 = 0 THEN NULL ELSE 'n' || g END,
       TIMESTAMPTZ '2024-01-01 00:00:00+00' + (g / 10) * INTERVAL '1 minute'
FROM generate_series(1, 2000) g;
ANALYZE lines;
"""
COLUMNS = "order_id, line, amount, note, updated_at"
# Half updates, half inserts, one row updated twice; the new rows reuse the last value.
DELTA = (
    "UPDATE lines SET amount = amount + 1, note = NULL,"
    " updated_at = TIMESTAMPTZ '2024-01-02 00:00:00+00' WHERE order_id < 10",
    "UPDATE lines SET amount = amount + 1, updated_at = TIMESTAMPTZ '2024-01-02 00:00:00+00'"
    " WHERE order_id = 3",
    "INSERT INTO lines SELECT 1000 + g, 0, g, 'new', TIMESTAMPTZ '2024-01-01 03:20:00+00'"
    " FROM generate_series(1, 40) g",
)


@pytest.fixture
def source_db(pg_database: Any) -> str:
    url = pg_database()
    pg_exec(url, SOURCE)
    return str(url)


def fast(summary: str) -> bool:
    return "copy " in summary and "extract " not in summary


def dest_rows(kind: str, settings: Any, target: str, sql: str) -> list[tuple[Any, ...]]:
    return duckdb_rows(settings, sql) if kind == "duckdb" else pg_rows(target, sql)


@pytest.mark.parametrize("destination", ["duckdb", "postgres"])
def test_merge_first_load_then_delta(
    destination: str, factory: Any, source_db: str, pg_database: Any
) -> None:
    target = pg_database() if destination == "postgres" else ""
    cfg = {"connection_string": target} if target else {}
    src = {
        "connection_string": source_db,
        "tables": ["lines"],
        "primary_key": ["order_id", "line"],
        "cursor_column": "updated_at",
    }
    cid = factory(("sql_database", src), (destination, cfg))
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 2000
    assert fast(last_run(factory.settings, cid).log_summary)

    pg_exec(source_db, *DELTA)
    # rows at or past the last value (03:20): the 39 updated and the 40 new; the row
    # loaded with 03:20 is read again and, unchanged, not counted
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 79
    run = last_run(factory.settings, cid)
    assert run.status == "succeeded" and fast(run.log_summary)
    order = "ORDER BY order_id, line"
    got = dest_rows(
        destination,
        factory.settings,
        target,
        f"SELECT {COLUMNS} FROM connector_{cid}.lines {order}",
    )
    assert got == pg_rows(source_db, f"SELECT {COLUMNS} FROM lines {order}")

    # the cursor sits in dlt's state, and dlt's path continues from it: nothing new, no
    # row twice
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 0
    factory.update_source(cid, {**src, "backend": "connectorx"})
    run_connector(cid, settings=factory.settings)
    run = last_run(factory.settings, cid)
    assert run.status == "succeeded" and not fast(run.log_summary)
    assert dest_rows(
        destination, factory.settings, target, f"SELECT count(*) FROM connector_{cid}.lines"
    ) == [(2040,)]


@pytest.mark.parametrize("destination", ["duckdb", "postgres"])
def test_incremental_append_after_dlt(
    destination: str, factory: Any, source_db: str, pg_database: Any
) -> None:
    """dlt's path loads first; the fast path reads dlt's cursor and adds only what is new,
    including rows that arrived later with the last value."""
    target = pg_database() if destination == "postgres" else ""
    cfg = {"connection_string": target} if target else {}
    src = {"connection_string": source_db, "tables": ["lines"], "cursor_column": "updated_at"}
    cid = factory(("sql_database", {**src, "backend": "connectorx"}), (destination, cfg))
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 2000
    assert not fast(last_run(factory.settings, cid).log_summary)

    factory.update_source(cid, src)
    pg_exec(source_db, *DELTA)
    # the 39 updated and 40 new rows; the one loaded with 03:20 is not added again
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 79
    run = last_run(factory.settings, cid)
    assert run.status == "succeeded" and fast(run.log_summary)
    counts = dest_rows(
        destination,
        factory.settings,
        target,
        f"SELECT count(*), count(DISTINCT (order_id, line, updated_at)) FROM connector_{cid}.lines",
    )
    assert counts == [(2079, 2079)]
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 0


def test_cursor_read_uses_the_source_index(factory: Any, source_db: str) -> None:
    cid = factory(
        (
            "sql_database",
            {"connection_string": source_db, "tables": ["lines"], "cursor_column": "updated_at"},
        ),
        ("duckdb", {}),
    )
    plan = direct.plan(load_connector(cid, settings=factory.settings))
    assert plan is not None
    (table,) = plan.tables
    import datetime as dt

    query = table.select_sql(dt.datetime(2024, 1, 1, 3, 0, tzinfo=dt.UTC))
    assert "WHERE \"updated_at\" >= '2024-01-01T03:00:00+00:00'::timestamp with time zone" in query
    explained = "\n".join(r[0] for r in pg_rows(source_db, f"EXPLAIN {query}"))
    assert "lines_updated_at" in explained, explained


def test_merge_on_a_key_the_source_does_not_hold_unique(factory: Any, pg_database: Any) -> None:
    """Two source rows with one key in a batch: one destination row, the latest cursor wins."""
    source = pg_database()
    pg_exec(
        source,
        "CREATE TABLE ev (k integer, v text, at integer NOT NULL)",
        "INSERT INTO ev VALUES (1, 'old', 1), (1, 'new', 2), (2, NULL, 1)",
    )
    cid = factory(
        (
            "sql_database",
            {
                "connection_string": source,
                "tables": ["ev"],
                "primary_key": "k",
                "cursor_column": "at",
            },
        ),
        ("duckdb", {}),
    )
    run_connector(cid, settings=factory.settings)
    pg_exec(source, "INSERT INTO ev VALUES (2, 'b', 3), (2, 'c', 4), (3, 'x', 2)")
    run_connector(cid, settings=factory.settings)
    assert fast(last_run(factory.settings, cid).log_summary)
    assert duckdb_rows(
        factory.settings, f'SELECT k, v, "at" FROM connector_{cid}.ev ORDER BY k'
    ) == [
        (1, "new", 2),
        (2, "c", 4),
        (3, "x", 2),
    ]
    state = duckdb_rows(
        factory.settings,
        f"SELECT state FROM connector_{cid}._dlt_pipeline_state ORDER BY version DESC LIMIT 1",
    )
    pipeline = load_connector(cid, settings=factory.settings).pipeline_name
    assert cursor_state.last_value(cursor_state.decompress(state[0][0]), pipeline, "ev", "at") == 4


def test_postgres_merge_upserts_on_a_unique_key_and_copes_with_repeated_keys(
    factory: Any, pg_database: Any
) -> None:
    """Into PostgreSQL the merge is an upsert on a unique index on the key; a table an
    append left with repeated keys cannot take one, and the merge still replaces every row
    of a key it brings."""
    source, target = pg_database(), pg_database()
    pg_exec(
        source,
        "CREATE TABLE ev (k integer NOT NULL, v text, at integer NOT NULL)",
        "INSERT INTO ev VALUES (1, 'a', 1), (1, 'b', 2), (2, 'c', 1), (3, 'd', 1)",
    )
    src = {"connection_string": source, "tables": ["ev"], "cursor_column": "at"}
    cid = factory(("sql_database", src), ("postgres", {"connection_string": target}))
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 4
    factory.update_source(cid, {**src, "primary_key": "k", "write_disposition": "merge"})
    pg_exec(source, "INSERT INTO ev VALUES (1, 'z', 3), (4, 'e', 3)")
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 2
    assert fast(last_run(factory.settings, cid).log_summary)
    table = f"connector_{cid}.ev"
    assert pg_rows(target, f"SELECT k, v, at FROM {table} ORDER BY k, at") == [
        (1, "z", 3),
        (2, "c", 1),
        (3, "d", 1),
        (4, "e", 3),
    ]

    # a merge connector's own table: a unique key index, rows upserted in place
    other = factory(
        ("sql_database", {**src, "primary_key": "k", "write_disposition": "merge"}),
        ("postgres", {"connection_string": target}),
    )
    run_connector(other, settings=factory.settings)
    unique = pg_rows(
        target,
        "SELECT count(*) FROM pg_index WHERE indisunique"
        f" AND indrelid = 'connector_{other}.ev'::regclass",
    )
    assert unique == [(1,)]
    pg_exec(source, "UPDATE ev SET v = 'y', at = 4 WHERE k = 2")
    # the row read again at the boundary (at = 3, unchanged) is not counted
    assert run_connector(other, settings=factory.settings)["rows_loaded"] == 1
    assert pg_rows(target, f"SELECT k, v FROM connector_{other}.ev ORDER BY k") == [
        (1, "z"),
        (2, "y"),
        (3, "d"),
        (4, "e"),
    ]
