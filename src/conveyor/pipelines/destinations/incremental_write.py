"""The cursor-state steps the fast path's incremental writers share (``duck_incremental``
for DuckDB and DuckLake, ``pg_incremental`` for PostgreSQL): the cursor's last value read
from dlt's state at the destination before the read, and the new value written into that
state afterwards, in the load's own transaction (``conveyor.pipelines.cursor_state``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conveyor.pipelines import cursor_state
from conveyor.pipelines.direct import DirectTable, cursor_python, typed_initial_value

Execute = Callable[[str, list[Any]], list[tuple[Any, ...]]]
Qualify = Callable[[str], str]


def start(
    execute: Execute,
    qualify: Qualify,
    *,
    has_state: bool,
    pipeline: str,
    table: DirectTable,
    placeholder: str,
) -> tuple[Any, Any]:
    """dlt's state at the destination (None without its tables) and the value the read
    starts from: the cursor's last value, else the connector's initial value (None without
    a cursor, or before any load without an initial value)."""
    state = cursor_state.read(execute, qualify, pipeline, placeholder) if has_state else None
    cursor = table.cursor
    last = None
    if cursor is not None:
        last = cursor_state.last_value(state, pipeline, table.resource, cursor.name)
        if last is None:
            last = typed_initial_value(table)
    return state, last


def advance(
    execute: Execute,
    qualify: Qualify,
    state: Any,
    *,
    table: DirectTable,
    last: Any,
    newest: Any,
    pipeline: str,
    dataset: str,
    destination: str,
    types: tuple[str, str],
    placeholder: str,
) -> None:
    """Write the highest cursor value read (``newest``) into dlt's state when it is past
    ``last``; ``types`` are the destination's text and timestamp types for dlt's tables."""
    cursor = table.cursor
    if cursor is None or newest is None:
        return
    value = cursor_python(newest, cursor.pg_type)
    if last is not None and not value > last:
        return
    cursor_state.create_tables(execute, qualify, *types)
    new_state = cursor_state.advanced(
        state,
        pipeline=pipeline,
        dataset=dataset,
        destination=destination,
        resource=table.resource,
        cursor=cursor.name,
        value=value,
        initial_value=typed_initial_value(table),
    )
    cursor_state.write(execute, qualify, new_state, placeholder)
