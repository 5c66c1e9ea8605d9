"""The DuckDB half of pipelines/direct.py keeps the source password out of what it says."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from conveyor.pipelines import direct


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_duckdb_attach_error_names_the_server_not_the_password(tmp_path: Path) -> None:
    assert direct.postgres_extension(), "the PostgreSQL scanner for DuckDB is installed"
    url = f"postgresql://reader:s3cr3t-'pw@127.0.0.1:{_closed_port()}/sales?sslmode=disable"
    with pytest.raises(Exception) as caught:
        with direct._duckdb(str(tmp_path / "d.duckdb"), url):
            pass
    text = str(caught.value)
    assert "127.0.0.1" in text and "sales" in text  # says where it tried to connect
    assert "s3cr3t" not in text


def test_conninfo_carries_every_part_of_the_url() -> None:
    info = direct.conninfo("postgresql+psycopg://u:p%20w@db.example:6543/d?sslmode=require")
    from psycopg.conninfo import conninfo_to_dict

    assert conninfo_to_dict(info) == {
        "host": "db.example",
        "port": "6543",
        "user": "u",
        "password": "p w",
        "dbname": "d",
        "sslmode": "require",
    }
