"""A run's schema changes in words: one row per table, for the run page.

Runs record each change as ``{"table", "columns", "types"}`` (``types`` since the
``schema_changes`` policy; older runs have names only). dlt never changes a column's type in
place: a value of another type goes to a variant column ``<column>__v_<type>``, so such a
column is shown as a changed type of the original column, not as a new column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

VARIANT = "__v_"


@dataclass
class SchemaChangeRow:
    table: str
    added: list[str] = field(default_factory=list)  # "name (type)" or "name"
    changed: list[str] = field(default_factory=list)  # "name → type"


def schema_change_rows(changes: list[Any] | None) -> list[SchemaChangeRow]:
    """Rows for the run page, tables in the order the run met them (merged by table)."""
    rows: dict[str, SchemaChangeRow] = {}
    for change in changes or []:
        if not isinstance(change, dict) or not change.get("table"):
            continue
        row = rows.setdefault(str(change["table"]), SchemaChangeRow(str(change["table"])))
        types = change.get("types") or {}
        for column in change.get("columns") or []:
            name = str(column)
            if VARIANT in name:
                base, _, kind = name.partition(VARIANT)
                row.changed.append(f"{base} → {types.get(name) or kind} (stored in {name})")
            elif types.get(name):
                row.added.append(f"{name} ({types[name]})")
            else:
                row.added.append(name)
    return list(rows.values())
