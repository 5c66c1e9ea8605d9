"""pipelines/direct.py without a database: what DuckDB says on a failed connection, the
connection strings and the names it gives tables and columns."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from conveyor.pipelines import direct
from conveyor.pipelines.destinations import duckdb as duck_dest


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_duckdb_attach_error_names_the_server_not_the_password(tmp_path: Path) -> None:
    assert direct.postgres_extension(), "the PostgreSQL scanner for DuckDB is installed"
    url = f"postgresql://reader:s3cr3t-'pw@127.0.0.1:{_closed_port()}/sales?sslmode=disable"
    with (
        pytest.raises(Exception) as caught,
        duck_dest.scanner_connection(str(tmp_path / "d.duckdb"), url),
    ):
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


@pytest.mark.parametrize("max_length", [None, 63, 10])
def test_names_are_the_ones_dlt_gives(max_length: int | None) -> None:
    from dlt.common.normalizers.naming.snake_case import NamingConvention

    naming = NamingConvention(max_length) if max_length else NamingConvention()
    names = [
        "lineitem", "l_orderkey", "_hidden", "OrderLines", "OrderID", "a__b", "trailing_",
        "9lives", "with space", "Ünïcode", "x-y+z", "averyveryverylongcolumnname_of_more_than_63_"
        "characters_in_all_to_be_shortened", "_", "a1", "camelCaseName", "UPPER",
    ]  # fmt: skip
    for name in names:
        assert direct.dlt_name(name, max_length) == naming.normalize_identifier(name), name
