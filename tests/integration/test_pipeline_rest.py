"""REST API sources (dlt rest_api: auth, paginator, incremental) into databases."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.pipelines.flow import run_connector
from tests.fixtures.pipelines import duckdb_rows, pg_rows


def items(n: int, start: int = 1, stamp: str = "2024-02-01T00:00:00") -> list[dict[str, Any]]:
    return [
        {"id": i, "name": f"thing {i}", "price": i * 1.5, "updated_at": f"{stamp[:-2]}{i % 60:02d}"}
        for i in range(start, start + n)
    ]


def rest_source(server: Any, **extra: Any) -> tuple[str, dict[str, Any]]:
    return (
        "rest_api",
        {
            "base_url": server.base_url + "/api/",
            "auth_type": "bearer_token",
            "token": server.state.token,
            "paginator": {"type": "cursor", "cursor_path": "next_page", "cursor_param": "page"},
            "resources": [
                {
                    "name": "items",
                    "endpoint": {
                        "path": "items",
                        "data_selector": "data",
                        "params": {
                            "updated_since": {
                                "type": "incremental",
                                "cursor_path": "updated_at",
                                "initial_value": "2000-01-01T00:00:00",
                            }
                        },
                    },
                }
            ],
            **extra,
        },
    )


def test_rest_to_duckdb_paginated_incremental_merge(factory: Any, rest_server: Any) -> None:
    rest_server.state.items = items(25)
    cid = factory(rest_source(rest_server), ("duckdb", {}), source_override={"primary_key": "id"})
    assert run_connector(cid, settings=factory.settings)["tables"] == {"items": 25}
    first_requests = rest_server.state.requests
    assert first_requests == 3  # 3 pages of 10

    # two changed, one new: only those are fetched (updated_since) and merged by id
    changed = items(2, 1, "2024-03-01T00:00:00") + items(1, 26, "2024-03-01T00:00:00")
    for row in changed:
        row["name"] = "changed"
    rest_server.state.items = rest_server.state.items[2:] + changed
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 3
    rows = duckdb_rows(
        factory.settings,
        f"SELECT count(*), count(DISTINCT id), count(*) FILTER (name = 'changed') "
        f"FROM connector_{cid}.items",
    )
    assert rows == [(26, 26, 3)]


def test_rest_to_postgres(factory: Any, rest_server: Any, pg_database: Any) -> None:
    rest_server.state.items = items(12)
    target = pg_database()
    cid = factory(rest_source(rest_server), ("postgres", {"connection_string": target}))
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 12
    assert pg_rows(target, f"SELECT count(*), sum(price) FROM connector_{cid}.items") == [
        (12, 117.0)
    ]


def test_rest_to_s3_jsonl_and_sftp_parquet(
    factory: Any, rest_server: Any, s3_server: Any, sftp_server: Any
) -> None:
    import gzip
    import io
    import json

    import pyarrow.parquet as pq

    rest_server.state.items = items(7)
    bucket = s3_server.new_bucket()
    to_s3 = factory(
        rest_source(rest_server),
        ("filesystem", {"bucket": bucket, "format": "jsonl", **s3_server.config()}),
    )
    assert run_connector(to_s3, settings=factory.settings)["rows_loaded"] == 7
    s3 = s3_server.client()
    keys = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"connector_{to_s3}/items/")["Contents"]
    ]
    body = s3.get_object(Bucket=bucket, Key=keys[0])["Body"].read()
    lines = (gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body).decode().splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == list(range(1, 8))

    to_sftp = factory(rest_source(rest_server), ("sftp", sftp_server.config(f"/rest-{bucket}")))
    assert run_connector(to_sftp, settings=factory.settings)["rows_loaded"] == 7
    files = list(
        (sftp_server.root / f"rest-{bucket}" / f"connector_{to_sftp}" / "items").glob("*.parquet")
    )
    assert sum(pq.read_table(io.BytesIO(f.read_bytes())).num_rows for f in files) == 7


def _auth(kind: str, token: str) -> dict[str, Any]:
    if kind == "api_key":
        return {"auth_type": "api_key", "api_key": token, "api_key_name": "X-API-Key"}
    if kind == "basic":
        return {"auth_type": "basic", "username": "conveyor", "password": token}
    return {"auth_type": "bearer_token", "token": token}


@pytest.mark.parametrize("kind", ["api_key", "basic"])
def test_other_auth_types_both_ways(factory: Any, rest_server: Any, kind: str) -> None:
    rest_server.state.items = items(4)
    source = rest_source(rest_server)
    source[1].pop("token")
    source[1].update(_auth(kind, rest_server.state.token))
    sink = {"url": rest_server.base_url + "/ingest", **_auth(kind, rest_server.state.token)}
    cid = factory(source, ("rest_api", sink))
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 4
    assert sorted(r["id"] for r in rest_server.state.rows()) == [1, 2, 3, 4]
