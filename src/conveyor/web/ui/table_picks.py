"""Per-table choices in the connector form.

"Discover tables" lists each table with its columns, types and primary key; every ticked
table gets its own columns to copy, write mode, primary key (prefilled from the discovered
key) and cursor column. They are stored as the source override's ``tables`` items
(``{"name", "columns", "write_disposition", "primary_key", "cursor_column"}``, a bare name
when nothing is set): the shape the API takes and the runner honours.

The discovery travels with the form as one hidden JSON input (``discovered_tables``) so a
page re-rendered after an error, or the copy section refreshed, shows the same tables.
Plain functions over form values, so they are tested without a browser.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from conveyor.errors import FieldProblem

DISCOVERED = "discovered_tables"


@dataclass
class Column:
    name: str
    type: str = ""
    primary_key: bool = False


@dataclass
class TableRow:
    """One table in the form: what discovery said about it and what the user chose."""

    name: str
    columns: list[Column] | None = None  # None: not discovered (columns typed as text)
    chosen: bool = False
    copy_columns: list[str] | None = None  # None: every column
    write_disposition: str = ""
    primary_key: str = ""
    cursor_column: str = ""

    @property
    def discovered_key(self) -> list[str]:
        return [c.name for c in self.columns or [] if c.primary_key]

    def input(self, part: str) -> str:
        """The form input's name for one of this table's settings."""
        return f"table.{self.name}.{part}"

    def copies(self, column: str) -> bool:
        return self.copy_columns is None or column in self.copy_columns


def split(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"[,\n]", text) if p.strip()]


def _getlist(form: Mapping[str, Any], key: str) -> list[str]:
    getlist = getattr(form, "getlist", None)
    if getlist is None:
        value = form.get(key)
        values = value if isinstance(value, list) else [value] if value else []
        return [str(v) for v in values if v]
    return [str(v) for v in getlist(key) if v]


# --- discovery ----------------------------------------------------------------------


def discovered_from(items: Any) -> dict[str, list[Column]]:
    """Table name → columns, from a type's discover result (or the hidden JSON copy)."""
    out: dict[str, list[Column]] = {}
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or not item.get("name"):
            continue
        cols = item.get("columns")
        out[str(item["name"])] = [
            Column(str(c["name"]), str(c.get("type") or ""), bool(c.get("primary_key")))
            for c in (cols if isinstance(cols, list) else [])
            if isinstance(c, dict) and c.get("name")
        ]
    return out


def discovered_json(tables: dict[str, list[Column]]) -> str:
    return json.dumps(
        [{"name": n, "columns": [c.__dict__ for c in cols]} for n, cols in tables.items()]
    )


def discovered_in_form(form: Mapping[str, Any]) -> dict[str, list[Column]]:
    try:
        return discovered_from(json.loads(str(form.get(DISCOVERED) or "[]")))
    except ValueError:
        return {}


# --- stored settings ------------------------------------------------------------------


def _key_text(pk: Any) -> str:
    return ", ".join(str(k) for k in pk) if isinstance(pk, list) else str(pk or "")


def settings_from_override(tables: Any) -> dict[str, dict[str, Any]]:
    """Table name → its stored settings, from the override's ``tables`` list."""
    out: dict[str, dict[str, Any]] = {}
    for item in tables if isinstance(tables, list) else []:
        if isinstance(item, dict) and item.get("name"):
            cols = item.get("columns")
            out[str(item["name"])] = {
                "columns": [str(c) for c in cols] if isinstance(cols, list) else None,
                "write_disposition": str(item.get("write_disposition") or ""),
                "primary_key": _key_text(item.get("primary_key")),
                "cursor_column": str(item.get("cursor_column") or ""),
            }
        elif isinstance(item, str):
            out[item] = {}
    return out


def settings_from_form(form: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Table name → the settings its row in the submitted form holds (rows shown only)."""
    out: dict[str, dict[str, Any]] = {}
    for key in form:
        if not (key.startswith("table.") and key.endswith(".write_disposition")):
            continue
        name = key[len("table.") : -len(".write_disposition")]
        cols = [c for v in _getlist(form, f"table.{name}.columns") for c in split(v)]
        out[name] = {
            "columns": cols,
            "write_disposition": str(form.get(key) or ""),
            "primary_key": str(form.get(f"table.{name}.primary_key") or "").strip(),
            "cursor_column": str(form.get(f"table.{name}.cursor_column") or "").strip(),
        }
    return out


def rows(
    discovered: dict[str, list[Column]], settings: dict[str, dict[str, Any]], chosen: list[str]
) -> list[TableRow]:
    """Every discovered table, then chosen tables discovery did not list, with settings."""
    out = []
    for name in list(discovered) + [n for n in chosen if n not in discovered]:
        columns = discovered.get(name)
        row = TableRow(name, columns if name in discovered else None, name in chosen)
        s = settings.get(name)
        if s is None:  # never set: the discovered key is the natural merge key
            row.primary_key = ", ".join(row.discovered_key)
        else:
            row.copy_columns = s.get("columns") or None
            if columns is not None and row.copy_columns is not None:
                known = [c.name for c in columns]
                row.copy_columns = [c for c in row.copy_columns if c in known] or None
            row.write_disposition = s.get("write_disposition", "")
            row.primary_key = s.get("primary_key", "")
            row.cursor_column = s.get("cursor_column", "")
        out.append(row)
    return out


def discovered_context(form: Mapping[str, Any], items: Any, typed: list[str]) -> dict[str, Any]:
    """What the table list needs after "Discover tables": fresh tables and columns, the
    settings already in the form kept, typed and ticked names chosen."""
    found = discovered_from(items)
    chosen = list(dict.fromkeys(_getlist(form, "table") + typed))
    return {
        "rows": rows(found, settings_from_form(form), chosen),
        "discovered_json": discovered_json(found),
    }


def rows_from_form(form: Mapping[str, Any], typed: list[str] | None = None) -> list[TableRow]:
    chosen = list(dict.fromkeys(_getlist(form, "table") + (typed or [])))
    return rows(discovered_in_form(form), settings_from_form(form), chosen)


# --- saving -----------------------------------------------------------------------------


def items_from_form(
    form: Mapping[str, Any], names: list[str], kept: Any, problems: list[FieldProblem]
) -> list[Any]:
    """The ``tables`` list to store: one item per name, with the settings of its row in the
    form; a name without a row (typed) keeps what was stored for it."""
    stored = {
        (t.get("name") if isinstance(t, dict) else t): t
        for t in (kept if isinstance(kept, list) else [])
    }
    discovered = discovered_in_form(form)
    in_form = settings_from_form(form)
    out: list[Any] = []
    for name in names:
        s = in_form.get(name)
        if s is None:
            out.append(stored.get(name, name))
            continue
        out.append(_item(name, s, discovered.get(name), problems))
    return out


def _item(
    name: str, s: dict[str, Any], columns: list[Column] | None, problems: list[FieldProblem]
) -> Any:
    loc = f"table.{name}."
    item: dict[str, Any] = {"name": name}
    picked: list[str] = s["columns"]
    if columns is not None:
        known = [c.name for c in columns]
        if not picked:
            problems.append(FieldProblem(loc + "columns", "tick at least one column to copy"))
        elif set(picked) != set(known):
            item["columns"] = [c for c in known if c in picked]
    elif picked:
        item["columns"] = list(dict.fromkeys(picked))
    copied = item.get("columns")
    pk = split(s["primary_key"])
    if pk:
        item["primary_key"] = pk[0] if len(pk) == 1 else pk
    if s["cursor_column"]:
        item["cursor_column"] = s["cursor_column"]
    if s["write_disposition"]:
        item["write_disposition"] = s["write_disposition"]
    if s["write_disposition"] == "merge" and not pk:
        problems.append(FieldProblem(loc + "primary_key", "merge needs a primary key"))
    for part, wanted in (("primary_key", pk), ("cursor_column", [s["cursor_column"]])):
        missing = [c for c in wanted if c and copied is not None and c not in copied]
        if missing:
            problems.append(
                FieldProblem(loc + part, f"{', '.join(missing)} is not among the columns to copy")
            )
    return item if len(item) > 1 else name
