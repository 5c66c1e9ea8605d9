"""Runs into a DuckLake through the real runner: the catalog in the real PostgreSQL (a
scratch database), the data on S3 (moto's server) or in a local folder; two runs writing at
once both land. Read back the way a user would: ``ATTACH 'ducklake:postgres:...'``."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from conveyor.pipelines.destinations.ducklake_attach import extension_file
from conveyor.pipelines.flow import run_connector
from conveyor.pipelines.registry import validate_config
from tests.fixtures.pipelines import last_run, pg_exec
from tests.fixtures.servers import S3Server

SOURCE = """
CREATE TABLE orders (id integer PRIMARY KEY, amount numeric(10, 2), note text);
INSERT INTO orders SELECT g, g * 1.5, 'order ' || g FROM generate_series(1, 300) g;
CREATE TABLE customers (id integer PRIMARY KEY, name text);
INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 40) g;
"""


@pytest.fixture
def source_db(pg_database: Any) -> str:
    url = str(pg_database())
    pg_exec(url, SOURCE)
    return url


def lake_reader(catalog: str, data_path: str, s3: S3Server | None = None) -> Any:
    """A fresh DuckDB with the lake attached as a user would (extensions from the wheels)."""
    import duckdb

    con = duckdb.connect()
    for name in ("ducklake", "postgres_scanner", "httpfs"):
        con.execute(f"LOAD '{extension_file(name)}'")
    if s3 is not None:
        endpoint = s3.endpoint_url.removeprefix("http://")
        con.execute(
            f"CREATE SECRET (TYPE S3, KEY_ID '{s3.access_key}', SECRET '{s3.secret_key}', "
            f"ENDPOINT '{endpoint}', USE_SSL false, URL_STYLE 'path', REGION 'us-east-1')"
        )
    options = ", METADATA_SCHEMA 'ducklake'" if catalog.startswith("postgres:") else ""
    con.execute(f"ATTACH 'ducklake:{catalog}' AS lake (DATA_PATH '{data_path}'{options})")
    return con


def pg_catalog(url: str) -> str:
    """``postgres:dbname=... host=...`` for ATTACH (the test server trusts loopback)."""
    u = make_url(url)
    return f"postgres:dbname={u.database} host={u.host} port={u.port or 5432} user={u.username}"


def test_two_runs_at_once_land_in_one_lake_on_s3(
    factory: Any, source_db: str, pg_database: Any, s3_server: S3Server
) -> None:
    catalog = str(pg_database())
    bucket = s3_server.new_bucket()
    lake = {"catalog_url": catalog, "data_path": f"s3://{bucket}/lake", **s3_server.config()}
    # Whole table: DuckDB's scanner straight into the lake. Merge on a key: dlt's ducklake.
    whole = factory(
        ("sql_database", {"connection_string": source_db, "tables": ["orders"]}),
        ("ducklake", lake),
    )
    merged = factory(
        ("sql_database", {"connection_string": source_db}),
        ("ducklake", lake),
        source_override={"tables": ["customers"], "primary_key": "id"},
    )
    results: dict[int, Any] = {}

    def run(cid: int) -> None:
        try:
            results[cid] = run_connector(cid, settings=factory.settings)
        except BaseException as exc:  # reported below with the other run's outcome
            results[cid] = exc

    threads = [threading.Thread(target=run, args=(cid,)) for cid in (whole, merged)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert all(not isinstance(r, BaseException) for r in results.values()), results
    for cid in (whole, merged):
        assert last_run(factory.settings, cid).status == "succeeded"
    con = lake_reader(pg_catalog(catalog), f"s3://{bucket}/lake", s3_server)
    assert con.execute(
        f"SELECT count(*), sum(amount) FROM lake.connector_{whole}.orders"
    ).fetchone() == (300, 67725)
    assert con.execute(f"SELECT count(*) FROM lake.connector_{merged}.customers").fetchone() == (
        40,
    )
    # The rows are Parquet files in the bucket; the catalog is in PostgreSQL.
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert any(k.startswith(f"lake/connector_{whole}/orders/") for k in keys), keys
    assert any(k.endswith(".parquet") for k in keys)


def test_a_lake_on_a_local_folder_with_a_catalog_file(factory: Any, source_db: str) -> None:
    lake = {"catalog_url": "lake/catalog.ducklake", "data_path": "lake/files"}
    cid = factory(
        ("sql_database", {"connection_string": source_db, "tables": ["orders"]}),
        ("ducklake", lake),
    )
    run_connector(cid, settings=factory.settings)
    run_connector(cid, settings=factory.settings)  # replace: still 300 rows
    data = factory.settings.data_dir / "lake"
    con = lake_reader(str(data / "catalog.ducklake"), str(data / "files"))
    assert con.execute(f"SELECT count(*) FROM lake.connector_{cid}.orders").fetchone() == (300,)
    con.close()
    assert list((data / "files").rglob("*.parquet"))


def test_lake_config_is_checked_on_its_fields(pipeline_settings: Any) -> None:
    from conveyor.errors import ValidationFailed

    def problems(config: dict[str, Any]) -> str:
        with pytest.raises(ValidationFailed) as caught:
            validate_config("destination", "ducklake", config, settings=pipeline_settings)
        return str(caught.value)

    assert "aws_secret_access_key" in problems(
        {"catalog_url": "postgresql://u:p@db.example.com/lake", "data_path": "s3://b/x"}
    )
    assert "gs:// is not supported" in problems(
        {"catalog_url": "c.ducklake", "data_path": "gs://b"}
    )
    assert "mysql:// catalog is not supported" in problems(
        {"catalog_url": "mysql://u:p@db.example.com/lake", "data_path": "lake"}
    )
    # The path policy: a folder outside the allowed roots is refused on its field.
    assert "config.data_path" in problems({"catalog_url": "c.ducklake", "data_path": "/etc/lake"})
    # The network policy: the catalog may not be Conveyor's own database.
    own = pipeline_settings.model_copy(
        update={"database_url": "postgresql://conveyor:pw@127.0.0.1:5432/conveyor"}
    )
    with pytest.raises(ValidationFailed) as caught:
        validate_config(
            "destination",
            "ducklake",
            {"catalog_url": "postgresql://x:y@127.0.0.1:5432/conveyor", "data_path": "lake"},
            settings=own,
        )
    assert "config.catalog_url" in str(caught.value) and "own" in str(caught.value)
