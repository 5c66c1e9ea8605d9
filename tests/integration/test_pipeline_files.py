"""Files (local, S3) parsed into tables, and files transferred as they are."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conveyor.pipelines.flow import RunFailed, run_connector
from tests.fixtures.pipelines import duckdb_file_held, duckdb_rows, last_run, pg_rows


def write_csv(path: Path, start: int, n: int) -> None:
    lines = ["id,name,qty"] + [f"{i},item {i},{i % 5}" for i in range(start, start + n)]
    path.write_text("\n".join(lines) + "\n")


def touch_later(path: Path) -> None:
    # Modification times must move forward for the file to count as changed.
    t = time.time() + 5
    os.utime(path, (t, t))


def test_local_csv_jsonl_parquet_into_duckdb(factory: Any, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    write_csv(src / "sales_1.csv", 1, 30)
    write_csv(src / "sales_2.csv", 31, 20)
    (src / "events.jsonl").write_text(
        "\n".join(json.dumps({"id": i, "kind": "click", "v": i * 0.5}) for i in range(40)) + "\n"
    )
    pq.write_table(
        pa.table({"id": list(range(25)), "x": [i * 2 for i in range(25)]}), src / "m.parquet"
    )
    csv_c = factory(
        ("filesystem", {"path": str(src), "file_pattern": "sales_*.csv"}), ("duckdb", {})
    )
    json_c = factory(("filesystem", {"path": str(src), "file_pattern": "*.jsonl"}), ("duckdb", {}))
    pq_c = factory(
        ("filesystem", {"path": str(src), "file_pattern": "*.parquet", "table_name": "metrics"}),
        ("duckdb", {}),
    )
    assert run_connector(csv_c, settings=factory.settings)["tables"] == {"sales": 50}
    assert run_connector(json_c, settings=factory.settings)["tables"] == {"files": 40}
    assert run_connector(pq_c, settings=factory.settings)["tables"] == {"metrics": 25}
    s = factory.settings
    assert duckdb_rows(s, f"SELECT sum(qty), count(DISTINCT id) FROM connector_{csv_c}.sales") == [
        (sum(i % 5 for i in range(1, 51)), 50)
    ]
    assert duckdb_rows(s, f"SELECT sum(v) FROM connector_{json_c}.files") == [(390.0,)]
    assert duckdb_rows(s, f"SELECT sum(x) FROM connector_{pq_c}.metrics") == [(600,)]


def test_incremental_files_only_new_or_changed(factory: Any, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    write_csv(src / "a.csv", 1, 10)
    cid = factory(
        ("filesystem", {"path": str(src), "file_pattern": "*.csv", "table_name": "items"}),
        ("duckdb", {}),
        source_override={"write_disposition": "append"},
    )
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 10
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 0  # nothing new
    write_csv(src / "b.csv", 11, 5)
    touch_later(src / "b.csv")
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 5
    assert duckdb_rows(factory.settings, f"SELECT count(*) FROM connector_{cid}.items") == [(15,)]


def test_s3_csv_into_postgres_merge(
    factory: Any, s3_server: Any, pg_database: Any, tmp_path: Path
) -> None:
    bucket = s3_server.new_bucket()
    s3 = s3_server.client()
    s3.put_object(Bucket=bucket, Key="drop/one.csv", Body=b"id,name,qty\n1,a,1\n2,b,2\n")
    s3.put_object(Bucket=bucket, Key="drop/two.csv", Body=b"id,name,qty\n3,c,3\n")
    s3.put_object(Bucket=bucket, Key="drop/skip.txt", Body=b"not me")
    target = pg_database()
    cid = factory(
        (
            "filesystem",
            {"bucket": bucket, "path": "drop", "file_pattern": "*.csv", **s3_server.config()},
        ),
        ("postgres", {"connection_string": target}),
        source_override={"primary_key": "id", "table_name": "stock"},
    )
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 3
    time.sleep(1.1)  # S3 modification times have one-second resolution
    s3.put_object(Bucket=bucket, Key="drop/two.csv", Body=b"id,name,qty\n3,c,30\n4,d,4\n")
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 2
    rows = pg_rows(target, f"SELECT id, qty FROM connector_{cid}.stock ORDER BY id")
    assert rows == [(1, 1), (2, 2), (3, 30), (4, 4)]


# --- transfers -----------------------------------------------------------------------


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and ".conveyor" not in p.parts
    }


@pytest.fixture
def outbox(tmp_path: Path) -> Path:
    src = tmp_path / "outbox"
    (src / "sub").mkdir(parents=True)
    (src / "a.csv").write_bytes(b"id\n1\n")
    (src / "b.bin").write_bytes(os.urandom(1000))
    (src / "sub" / "c.json").write_bytes(b'{"x": 1}')
    return src


def test_transfer_local_to_nfs_path_then_only_new(
    factory: Any, outbox: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "nfs"
    cid = factory(
        ("filesystem", {"path": str(outbox), "file_pattern": "**/*", "mode": "transfer"}),
        ("filesystem", {"path": str(dest)}),
    )
    run_connector(cid, settings=factory.settings)
    assert _tree(dest) == _tree(outbox)
    run = last_run(factory.settings, cid)
    assert run.status == "succeeded" and run.bytes_loaded == 1000 + 5 + 8
    assert "Transferred 3 file(s)" in run.log_summary
    (outbox / "d.txt").write_text("new")
    run_connector(cid, settings=factory.settings)
    run = last_run(factory.settings, cid)
    assert "Transferred 1 file(s)" in run.log_summary and run.bytes_loaded == 3
    assert _tree(dest) == _tree(outbox)


def test_transfer_large_file_to_s3_multipart(factory: Any, s3_server: Any, tmp_path: Path) -> None:
    from conveyor.pipelines import transfer

    src = tmp_path / "big"
    src.mkdir()
    payload = os.urandom(transfer.MULTIPART_PART_SIZE + 3 * 1024 * 1024)
    (src / "big.bin").write_bytes(payload)
    (src / "small.txt").write_bytes(b"hello")
    bucket = s3_server.new_bucket()
    cid = factory(
        ("filesystem", {"path": str(src), "mode": "transfer"}),
        ("filesystem", {"bucket": bucket, "prefix": "in", **s3_server.config()}),
    )
    run_connector(cid, settings=factory.settings)
    s3 = s3_server.client()
    big = s3.get_object(Bucket=bucket, Key="in/big.bin")
    assert big["Body"].read() == payload
    # a multipart upload's ETag is "<md5>-<parts>"
    assert big["ETag"].strip('"').endswith("-2")
    assert s3.get_object(Bucket=bucket, Key="in/small.txt")["Body"].read() == b"hello"


def test_transfer_s3_to_sftp(factory: Any, s3_server: Any, sftp_server: Any) -> None:
    bucket = s3_server.new_bucket()
    s3 = s3_server.client()
    s3.put_object(Bucket=bucket, Key="x/r1.csv", Body=b"a\n1\n")
    s3.put_object(Bucket=bucket, Key="x/r2.csv", Body=b"a\n2\n")
    cid = factory(
        ("filesystem", {"bucket": bucket, "path": "x", "mode": "transfer", **s3_server.config()}),
        ("sftp", sftp_server.config(f"/transfer-{bucket}")),
    )
    run_connector(cid, settings=factory.settings)
    landed = sftp_server.root / f"transfer-{bucket}"
    assert (landed / "r1.csv").read_bytes() == b"a\n1\n"
    assert (landed / "r2.csv").read_bytes() == b"a\n2\n"
    # The manifest is named after the connector's state key (new on create and on reset).
    manifests = list((landed / ".conveyor" / "transfers").glob(f"connector_{cid}_*.json"))
    assert len(manifests) == 1


def test_transfer_to_rest_upload_failed_file_retried_next_run(
    factory: Any, outbox: Path, rest_server: Any
) -> None:
    rest_server.state.fail_upload_names = {"b.bin"}
    cid = factory(
        ("filesystem", {"path": str(outbox), "file_pattern": "**/*"}),
        (
            "rest_api",
            {
                "url": rest_server.base_url + "/upload",
                "auth_type": "bearer_token",
                "token": rest_server.state.token,
                "use_multipart": True,
                "max_retries": 1,
                "additional_fields": {"source": "conveyor"},
            },
        ),
    )
    with pytest.raises(RunFailed, match=r"1 of 3 file\(s\) could not be transferred"):
        run_connector(cid, settings=factory.settings)
    run = last_run(factory.settings, cid)
    assert run.status == "failed" and "b.bin" in run.error and "retried next run" in run.error
    got = {u["fields"]["path"] for u in rest_server.state.uploads}
    assert got == {"a.csv", "sub/c.json"}
    assert all(u["fields"]["source"] == "conveyor" for u in rest_server.state.uploads)

    rest_server.state.fail_upload_names = set()
    run_connector(cid, settings=factory.settings)
    paths = [u["fields"]["path"] for u in rest_server.state.uploads]
    assert sorted(paths) == ["a.csv", "b.bin", "sub/c.json"]  # b.bin once, nothing twice
    sent = next(u for u in rest_server.state.uploads if u["fields"]["path"] == "b.bin")
    assert sent["files"]["file"]["content"] == (outbox / "b.bin").read_bytes()


def test_parsed_files_into_rest_endpoint_and_sftp(
    factory: Any, tmp_path: Path, rest_server: Any, sftp_server: Any
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "e.jsonl").write_text("\n".join(json.dumps({"id": i, "v": i}) for i in range(12)) + "\n")
    to_rest = factory(
        ("filesystem", {"path": str(src), "file_pattern": "*.jsonl", "table_name": "events"}),
        (
            "rest_api",
            {
                "url": rest_server.base_url + "/ingest",
                "auth_type": "bearer_token",
                "token": rest_server.state.token,
                "batch_size": 5,
            },
        ),
    )
    assert run_connector(to_rest, settings=factory.settings)["rows_loaded"] == 12
    assert sorted(r["id"] for r in rest_server.state.rows()) == list(range(12))
    to_sftp = factory(
        ("filesystem", {"path": str(src), "file_pattern": "*.jsonl", "table_name": "events"}),
        ("sftp", {**sftp_server.config(f"/files-{to_rest}"), "format": "csv"}),
    )
    assert run_connector(to_sftp, settings=factory.settings)["rows_loaded"] == 12
    landed = list((sftp_server.root / f"files-{to_rest}").rglob("*.csv*"))
    assert landed


def test_locked_duckdb_file_waits_for_the_other_writer(
    factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor.pipelines import runner

    monkeypatch.setattr(runner, "LOCK_BACKOFF", 1.0)
    src = tmp_path / "in"
    src.mkdir()
    write_csv(src / "a.csv", 1, 5)
    cid = factory(("filesystem", {"path": str(src), "file_pattern": "*.csv"}), ("duckdb", {}))
    with duckdb_file_held(factory.settings):
        assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 5
