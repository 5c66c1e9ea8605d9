"""Incremental cursors kept where dlt keeps them: its pipeline state at the destination.

The fast path (``conveyor.pipelines.direct``) and dlt's path read and write the same record,
so a connector can move between them from one run to the next and continue where the other
stopped. dlt stores a pipeline's state as a row of ``<dataset>._dlt_pipeline_state`` (a
zlib-compressed, base64 JSON document) whose load is listed as finished in
``<dataset>._dlt_loads``; it restores the newest such row at the start of each run. The fast
path reads the same row, changes only its own tables' cursor entries
(``sources.<pipeline>.resources.<table>.incremental.<cursor>``) and writes the new state and
its ``_dlt_loads`` row **in the transaction that writes the rows**: the cursor moves exactly
when the data commits.

dlt's JSON marks decimals, dates and timestamps with a private-use character in front of the
string (its "typed JSON"); this module reads and writes those few itself, so a run on the
fast path never imports dlt (about a second on a busy machine). Every other value of the
document is kept as it was read.

The cursor entry's ``unique_hashes`` are dlt's way of not loading rows that carry the last
value twice. The fast path writes none: it deduplicates those rows against the destination
itself (merge: by key; append: rows already there), and dlt's path after it reads rows with
the last value again — harmless for merge (they replace themselves by key), see
docs/design.md for append.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import secrets
import time
import zlib
from collections.abc import Callable
from decimal import Decimal
from typing import Any

# dlt's typed JSON (dlt.common.json): the first character of a string says its type.
_PUA = 0xF026
_DECIMAL, _DATETIME, _DATE = chr(_PUA), chr(_PUA + 1), chr(_PUA + 2)

STATE_TABLE = "_dlt_pipeline_state"
LOADS_TABLE = "_dlt_loads"


def decode_value(value: Any) -> Any:
    """A value of dlt's typed JSON as Python (Decimal, datetime, date; others unchanged)."""
    if isinstance(value, str) and value:
        tag, rest = value[0], value[1:]
        if tag == _DECIMAL:
            return Decimal(rest)
        if tag == _DATETIME:
            return dt.datetime.fromisoformat(rest)
        if tag == _DATE:
            return dt.date.fromisoformat(rest)
    return value


def encode_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return _DECIMAL + str(value)
    if isinstance(value, dt.datetime):
        return _DATETIME + value.isoformat()
    if isinstance(value, dt.date):
        return _DATE + value.isoformat()
    return value


def decompress(text: str) -> dict[str, Any]:
    try:
        raw = zlib.decompress(base64.b64decode(text, validate=True))
    except Exception:
        raw = text.encode()  # dlt reads uncompressed state too
    state: dict[str, Any] = json.loads(raw)
    return state


def compress(state: dict[str, Any]) -> str:
    raw = json.dumps(state, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.b64encode(zlib.compress(raw, 9)).decode("ascii")


def cursor_entry(
    state: dict[str, Any] | None, pipeline: str, resource: str, cursor: str
) -> dict[str, Any] | None:
    if not state:
        return None
    found = (
        state.get("sources", {})
        .get(pipeline, {})
        .get("resources", {})
        .get(resource, {})
        .get("incremental", {})
        .get(cursor)
    )
    return found if isinstance(found, dict) else None


def last_value(state: dict[str, Any] | None, pipeline: str, resource: str, cursor: str) -> Any:
    """The cursor's last value in the state (None: no run has recorded one)."""
    entry = cursor_entry(state, pipeline, resource, cursor)
    return decode_value(entry.get("last_value")) if entry else None


def advanced(
    state: dict[str, Any] | None,
    *,
    pipeline: str,
    dataset: str,
    destination: str,
    resource: str,
    cursor: str,
    value: Any,
    initial_value: Any,
) -> dict[str, Any]:
    """A copy of ``state`` (or a new one) with the cursor at ``value`` and the version bumped."""
    new: dict[str, Any] = (
        json.loads(json.dumps(state))
        if state
        else {
            "_state_version": 0,
            "_state_engine_version": 4,
            "pipeline_name": pipeline,
            "dataset_name": dataset,
            "schema_names": [],
            "destination_type": f"dlt.destinations.{destination}",
            "destination_name": None,
        }
    )
    resources = new.setdefault("sources", {}).setdefault(pipeline, {}).setdefault("resources", {})
    entries = resources.setdefault(resource, {}).setdefault("incremental", {})
    entry = entries.setdefault(
        cursor, {"initial_value": encode_value(initial_value), "start_value": None}
    )
    entry["last_value"] = encode_value(value)
    entry["unique_hashes"] = []
    new["_state_version"] = int(new.get("_state_version", 0)) + 1
    new.pop("_version_hash", None)
    digest = hashlib.sha256(json.dumps(new, sort_keys=True).encode()).digest()
    new["_version_hash"] = base64.b64encode(digest).decode("ascii")
    return new


def load_id() -> str:
    """A load id as dlt makes them (a Unix time): dlt takes the newest state by this id."""
    return repr(time.time())


# --- SQL, shared by both destinations (DuckDB takes ``?`` parameters, psycopg ``%s``) ----

Execute = Callable[[str, list[Any]], list[tuple[Any, ...]]]


def read(execute: Execute, qualify: Callable[[str], str], pipeline: str, mark: str) -> Any:
    """The newest finished state of ``pipeline`` (dict), None if there is none."""
    rows = execute(
        f"SELECT s.state FROM {qualify(STATE_TABLE)} AS s JOIN {qualify(LOADS_TABLE)} AS l"
        f" ON l.load_id = s._dlt_load_id WHERE s.pipeline_name = {mark} AND l.status = 0"
        " ORDER BY l.load_id DESC LIMIT 1",
        [pipeline],
    )
    return decompress(rows[0][0]) if rows else None


def create_tables(execute: Execute, qualify: Callable[[str], str], text: str, ts: str) -> None:
    """dlt's two state tables, with dlt's own columns, unless they exist."""
    execute(
        f"CREATE TABLE IF NOT EXISTS {qualify(LOADS_TABLE)} (load_id {text} NOT NULL,"
        f" schema_name {text}, status BIGINT NOT NULL, inserted_at {ts} NOT NULL,"
        f" schema_version_hash {text})",
        [],
    )
    execute(
        f"CREATE TABLE IF NOT EXISTS {qualify(STATE_TABLE)} (version BIGINT NOT NULL,"
        f" engine_version BIGINT NOT NULL, pipeline_name {text} NOT NULL, state {text} NOT NULL,"
        f" created_at {ts} NOT NULL, version_hash {text}, _dlt_load_id {text} NOT NULL,"
        f" _dlt_id {text} NOT NULL)",
        [],
    )


def write(
    execute: Execute, qualify: Callable[[str], str], state: dict[str, Any], mark: str
) -> None:
    """Insert the state and its finished load (in the caller's transaction)."""
    lid = load_id()
    now = dt.datetime.now(dt.UTC)
    pipeline = state["pipeline_name"]
    m = ", ".join([mark] * 8)
    execute(
        f"INSERT INTO {qualify(STATE_TABLE)} (version, engine_version, pipeline_name, state,"
        f" created_at, version_hash, _dlt_load_id, _dlt_id) VALUES ({m})",
        [
            state["_state_version"],
            state.get("_state_engine_version", 4),
            pipeline,
            compress(state),
            now,
            state["_version_hash"],
            lid,
            secrets.token_urlsafe(10)[:14],
        ],
    )
    m = ", ".join([mark] * 4)
    execute(
        f"INSERT INTO {qualify(LOADS_TABLE)} (load_id, schema_name, status, inserted_at)"
        f" VALUES ({m})",
        [lid, pipeline, 0, now],
    )
