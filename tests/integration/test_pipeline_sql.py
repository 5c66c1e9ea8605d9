"""SQL database sources into every destination, against real servers on loopback."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from conveyor.pipelines.flow import run_connector
from tests.fixtures.pipelines import duckdb_rows, last_run, pg_exec, pg_rows

ORDERS = """
CREATE TABLE orders (
    id integer PRIMARY KEY,
    customer text NOT NULL,
    amount numeric(12, 2),
    created_on date,
    updated_at timestamptz NOT NULL
);
INSERT INTO orders
SELECT g, 'customer ' || (g % 7), g * 1.25, DATE '2024-01-01' + g,
       TIMESTAMPTZ '2024-01-01 00:00:00+00' + g * INTERVAL '1 minute'
FROM generate_series(1, 500) g;
CREATE TABLE tags (id serial PRIMARY KEY, labels text[], meta jsonb);
INSERT INTO tags (labels, meta) VALUES (ARRAY['a','b'], '{"k": 1}'), (NULL, NULL);
"""


@pytest.fixture
def source_db(pg_database: Any) -> str:
    url = pg_database()
    pg_exec(url, ORDERS)
    return str(url)


def sql_source(url: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    return ("sql_database", {"connection_string": url, **extra})


def test_postgres_to_duckdb_replace_then_merge(factory: Any, source_db: str) -> None:
    cid = factory(sql_source(source_db, tables=["orders", "tags"]), ("duckdb", {}))
    result = run_connector(cid, settings=factory.settings)
    assert result["tables"] == {"orders": 500, "tags": 2}
    ds = f"connector_{cid}"
    rows = duckdb_rows(factory.settings, f"SELECT count(*), sum(amount), max(id) FROM {ds}.orders")
    assert rows == [(500, Decimal("156562.50"), 500)]
    # arrays and JSON come through the pyarrow fallback
    tags = duckdb_rows(factory.settings, f"SELECT labels, meta FROM {ds}.tags ORDER BY id")
    assert json.loads(tags[0][1]) == {"k": 1} if isinstance(tags[0][1], str) else tags[0][1]
    run = last_run(factory.settings, cid)
    assert run.status == "succeeded" and run.trigger == "manual"
    assert run.rows_loaded == 502 and run.bytes_loaded > 0
    assert run.table_stats == {"orders": {"rows": 500}, "tags": {"rows": 2}}
    assert {c["table"] for c in run.schema_changes} == {"orders", "tags"}
    assert "orders: 500" in run.log_summary

    # replace (no keys): a rerun keeps exactly one copy
    run_connector(cid, settings=factory.settings)
    assert duckdb_rows(factory.settings, f"SELECT count(*) FROM {ds}.orders") == [(500,)]


def test_postgres_to_duckdb_incremental_merge(factory: Any, source_db: str) -> None:
    cid = factory(
        sql_source(source_db, tables=["orders"]),
        ("duckdb", {"dataset_name": "sales"}),
        source_override={"primary_key": "id", "cursor_column": "updated_at"},
    )
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 500
    pg_exec(
        source_db,
        "UPDATE orders SET amount = 0, updated_at = now() WHERE id <= 3",
        "INSERT INTO orders VALUES (501, 'new', 1, NULL, now())",
    )
    second = run_connector(cid, settings=factory.settings)
    # only the changed and new rows are read; merge updates in place
    assert second["rows_loaded"] == 4
    rows = duckdb_rows(
        factory.settings, "SELECT count(*), count(DISTINCT id), sum(amount) FROM sales.orders"
    )
    assert rows == [(501, 501, Decimal("156562.50") - Decimal("7.50") + 1)]
    # nothing new: nothing loaded
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 0
    assert last_run(factory.settings, cid).log_summary.startswith("No new rows")


def test_postgres_to_postgres_with_columns_and_append(
    factory: Any, source_db: str, pg_database: Any
) -> None:
    target = pg_database()
    cid = factory(
        sql_source(
            source_db,
            tables=[{"name": "orders", "columns": ["id", "amount", "updated_at"]}],
        ),
        ("postgres", {"connection_string": target, "schema": "landing"}),
        source_override={"cursor_column": "updated_at"},
    )
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 500
    cols = pg_rows(
        target,
        "SELECT column_name FROM information_schema.columns WHERE table_schema='landing' "
        "AND table_name='orders' AND column_name NOT LIKE '\\_dlt%' ORDER BY column_name",
    )
    assert [c[0] for c in cols] == ["amount", "id", "updated_at"]
    pg_exec(source_db, "INSERT INTO orders VALUES (600, 'x', 2.5, NULL, now() + interval '1 day')")
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 1
    assert pg_rows(target, "SELECT count(*), sum(amount) FROM landing.orders") == [
        (501, Decimal("156565.00"))
    ]


def test_incremental_from_a_text_start_value_with_chosen_columns(
    factory: Any, source_db: str
) -> None:
    # The start value arrives as JSON text; the chosen columns leave out the key.
    cid = factory(
        sql_source(source_db, tables=[{"name": "orders", "columns": ["amount", "updated_at"]}]),
        ("duckdb", {}),
        source_override={"cursor_column": "updated_at", "initial_value": "2024-01-01T08:00:00Z"},
    )
    # minute 480 (08:00) to minute 500
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 21
    # the boundary row is not loaded twice: the key is read too, to tell rows apart
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 0
    ds = f"connector_{cid}"
    cols = duckdb_rows(factory.settings, f"SELECT column_name FROM (DESCRIBE {ds}.orders)")
    assert sorted(c[0] for c in cols) == ["amount", "id", "updated_at"]


def test_query_source_read_only_incremental(factory: Any, source_db: str) -> None:
    cid = factory(
        sql_source(
            source_db,
            query="SELECT customer, count(*) AS n, max(updated_at) AS updated_at "
            "FROM orders GROUP BY customer",
            query_table_name="per_customer",
        ),
        ("duckdb", {}),
    )
    assert run_connector(cid, settings=factory.settings)["tables"] == {"per_customer": 7}
    rows = duckdb_rows(factory.settings, f"SELECT sum(n) FROM connector_{cid}.per_customer")
    assert rows == [(500,)]


def test_sqlite_source_uses_pyarrow(factory: Any, tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "src.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL)")
        conn.executemany(
            "INSERT INTO items VALUES (?, ?, ?)", [(i, f"item {i}", i / 4) for i in range(1, 101)]
        )
    cid = factory(sql_source(f"sqlite:///{db}", tables=["items"]), ("duckdb", {}))
    assert run_connector(cid, settings=factory.settings)["tables"] == {"items": 100}
    assert duckdb_rows(factory.settings, f"SELECT sum(price) FROM connector_{cid}.items") == [
        (sum(i / 4 for i in range(1, 101)),)
    ]


def test_per_table_columns_and_write_modes(factory: Any, tmp_path: Path) -> None:
    """What the connector form's per-table choices store: each table its own columns and
    write mode (items: append two columns; prices: merge on its key, every column)."""
    import sqlite3

    db = tmp_path / "shop.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, secret TEXT)")
        conn.execute("CREATE TABLE prices (sku INTEGER PRIMARY KEY, price REAL)")
        conn.executemany("INSERT INTO items VALUES (?, ?, 'x')", [(i, f"i{i}") for i in range(5)])
        conn.executemany("INSERT INTO prices VALUES (?, ?)", [(i, i / 2) for i in range(3)])
    tables = [
        {"name": "items", "columns": ["id", "name"], "write_disposition": "append"},
        {"name": "prices", "primary_key": "sku", "write_disposition": "merge"},
    ]
    cid = factory(sql_source(f"sqlite:///{db}", tables=tables), ("duckdb", {}))
    assert run_connector(cid, settings=factory.settings)["tables"] == {"items": 5, "prices": 3}
    assert run_connector(cid, settings=factory.settings)["tables"] == {"items": 5, "prices": 3}
    ds = f"connector_{cid}"
    cols = duckdb_rows(factory.settings, f"SELECT column_name FROM (DESCRIBE {ds}.items)")
    assert sorted(c[0] for c in cols if not c[0].startswith("_dlt")) == ["id", "name"]
    assert duckdb_rows(factory.settings, f"SELECT count(*) FROM {ds}.items") == [(10,)]
    assert duckdb_rows(factory.settings, f"SELECT count(*) FROM {ds}.prices") == [(3,)]
    # dlt staged the merge in connector_<id>_staging; the page says it holds nothing between
    # runs, so it must be empty now (dlt keeps the last load's rows there by default).
    assert duckdb_rows(factory.settings, f"SELECT count(*) FROM {ds}_staging.prices") == [(0,)]


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_postgres_to_local_files(factory: Any, source_db: str, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "out"
    cid = factory(
        sql_source(source_db, tables=["orders"]),
        ("filesystem", {"path": str(out), "format": fmt}),
    )
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 500
    files = [p for p in (out / f"connector_{cid}" / "orders").rglob("*") if p.is_file()]
    assert files
    assert _count_rows(files, fmt) == 500


def _count_rows(files: list[Path], fmt: str) -> int:
    import gzip

    total = 0
    for path in files:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        if fmt == "parquet":
            total += pq.read_table(io.BytesIO(data)).num_rows
        elif fmt == "csv":
            total += len(data.decode().strip().splitlines()) - 1
        else:
            total += len(data.decode().strip().splitlines())
    return total


def test_postgres_to_s3_parquet(factory: Any, source_db: str, s3_server: Any) -> None:
    bucket = s3_server.new_bucket()
    cid = factory(
        sql_source(source_db, tables=["orders"]),
        ("filesystem", {"bucket": bucket, "prefix": "lake", **s3_server.config()}),
    )
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 500
    s3 = s3_server.client()
    keys = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"lake/connector_{cid}/orders/")[
            "Contents"
        ]
    ]
    total = sum(
        pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=k)["Body"].read())).num_rows
        for k in keys
        if k.endswith(".parquet")
    )
    assert total == 500


def test_postgres_to_sftp_csv_with_key(factory: Any, source_db: str, sftp_server: Any) -> None:
    cid = factory(
        sql_source(source_db, tables=["orders"]),
        ("sftp", {**sftp_server.config("/exports", use_key=True), "format": "csv"}),
    )
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 500
    files = [
        p
        for p in (sftp_server.root / "exports" / f"connector_{cid}" / "orders").rglob("*")
        if p.is_file()
    ]
    assert _count_rows(files, "csv") == 500


def test_postgres_to_rest_endpoint(factory: Any, source_db: str, rest_server: Any) -> None:
    rest_server.state.fail_posts = 2  # two 503s: retried with backoff, then accepted
    cid = factory(
        sql_source(source_db, tables=["orders"]),
        (
            "rest_api",
            {
                "url": rest_server.base_url + "/ingest",
                "auth_type": "bearer_token",
                "token": rest_server.state.token,
                "batch_size": 200,
            },
        ),
    )
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 500
    rows = rest_server.state.rows()
    assert len(rows) == 500 and len({r["id"] for r in rows}) == 500
    assert {b["table"] for b in rest_server.state.received} == {"orders"}
    assert rows[0]["amount"] is not None
