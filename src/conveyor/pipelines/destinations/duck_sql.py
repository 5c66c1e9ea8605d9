"""DuckDB SQL text for the direct copy (``duckdb``, ``duck_incremental``, ``ducklake``):
the attached source's alias, quoted identifiers and string literals, and a cursor value as
a literal of DuckDB's type for it."""

from __future__ import annotations

import datetime as dt
from typing import Any

ALIAS = "conveyor_source"  # the source database, attached read-only


def literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def ident(*parts: str) -> str:
    return ".".join('"' + p.replace('"', '""') + '"' for p in parts)


# DuckDB's names for the cursor types the fast path takes (``direct._CURSOR_TYPES``).
def duck_type(pg_type: str) -> str:
    if pg_type.startswith("timestamp"):
        return "TIMESTAMP" if "without" in pg_type else "TIMESTAMPTZ"
    if pg_type.startswith("numeric"):
        return "DECIMAL" + pg_type[len("numeric") :]
    return {"smallint": "SMALLINT", "integer": "INTEGER", "bigint": "BIGINT"}.get(pg_type, "DATE")


def cursor_literal(value: Any, pg_type: str) -> str:
    """A cursor value as a DuckDB literal of the column's type."""
    return f"CAST({literal(_text(value))} AS {duck_type(pg_type)})"


def _text(value: Any) -> str:
    return value.isoformat() if isinstance(value, dt.date | dt.datetime) else str(value)
