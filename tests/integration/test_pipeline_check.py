"""check() and discover() against real servers: ok, or the reason in words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conveyor.errors import ExternalError
from conveyor.pipelines.check import check, discover
from tests.fixtures.pipelines import pg_exec
from tests.fixtures.servers import free_port


@pytest.fixture
def source_db(pg_database: Any) -> str:
    url = pg_database()
    pg_exec(url, "CREATE TABLE orders (id int PRIMARY KEY, amount numeric(10,2) NOT NULL)")
    return str(url)


def test_sql_source_check_and_discover(source_db: str) -> None:
    ok = check("source", "sql_database", {"connection_string": source_db, "tables": ["orders"]})
    assert ok.ok, ok.message
    missing = check("source", "sql_database", {"connection_string": source_db, "tables": ["x"]})
    assert not missing.ok and "x" in missing.message
    found = discover("sql_database", {"connection_string": source_db})
    assert found["tables"] == [
        {
            "name": "orders",
            "columns": [
                {"name": "id", "type": "INTEGER", "nullable": False, "primary_key": True},
                {
                    "name": "amount",
                    "type": "NUMERIC(10, 2)",
                    "nullable": False,
                    "primary_key": False,
                },
            ],
        }
    ]


def test_unreachable_and_invalid() -> None:
    port = free_port()
    result = check(
        "source",
        "sql_database",
        {"host": "127.0.0.1", "port": port, "database": "d", "password": "pw-secret-1"},
    )
    assert not result.ok and "Cannot reach the server" in result.message
    assert "pw-secret-1" not in result.message
    bad = check("destination", "postgres", {"host": "h"})
    assert not bad.ok and bad.message.startswith("The configuration is invalid")
    with pytest.raises(ExternalError, match="Cannot reach"):
        discover("sql_database", {"connection_string": f"postgresql://u@127.0.0.1:{port}/d"})


def test_check_times_out() -> None:
    import socket

    with socket.socket() as listener:  # accepts, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = check("destination", "rest_api", {"url": f"http://127.0.0.1:{port}/x"}, timeout=1)
    assert not result.ok and "No answer within 1 seconds" in result.message


def test_destination_write_checks(
    pipeline_settings: Any, pg_database: Any, s3_server: Any, sftp_server: Any, tmp_path: Path
) -> None:
    s = pipeline_settings
    assert check("destination", "duckdb", {}, settings=s).ok
    assert check("destination", "postgres", {"connection_string": pg_database()}, settings=s).ok
    bucket = s3_server.new_bucket()
    assert check(
        "destination", "filesystem", {"bucket": bucket, **s3_server.config()}, settings=s
    ).ok
    missing = check(
        "destination",
        "filesystem",
        {"bucket": "no-such-bucket-x", **s3_server.config()},
        settings=s,
    )
    assert not missing.ok and "bucket" in missing.message.lower()
    assert check("destination", "sftp", sftp_server.config("/chk"), settings=s).ok
    wrong = check(
        "destination", "sftp", {**sftp_server.config(), "password": "nope-1234"}, settings=s
    )
    assert not wrong.ok and "refused" in wrong.message
    assert check("destination", "filesystem", {"path": str(tmp_path / "ok")}, settings=s).ok


def test_files_and_rest_sources(s3_server: Any, rest_server: Any) -> None:
    bucket = s3_server.new_bucket()
    s3_server.client().put_object(Bucket=bucket, Key="in/a.csv", Body=b"x\n1\n")
    s3_server.client().put_object(Bucket=bucket, Key="in/b.txt", Body=b"no")
    cfg = {"bucket": bucket, "path": "in", "file_pattern": "*.csv", **s3_server.config()}
    assert check("source", "filesystem", cfg).ok
    found = discover("filesystem", cfg)
    assert [f["path"] for f in found["files"]] == ["a.csv"] and found["table"] == "files"
    rest = {
        "base_url": rest_server.base_url + "/api/",
        "auth_type": "bearer_token",
        "token": rest_server.state.token,
        "resources": ["items"],
    }
    assert check("source", "rest_api", rest).ok
    assert discover("rest_api", rest)["resources"] == [{"name": "items", "endpoint": "items"}]
    denied = check("source", "rest_api", {**rest, "token": "bad-token-1"})
    assert not denied.ok and "401" in denied.message
