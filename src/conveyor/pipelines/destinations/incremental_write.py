"""The cursor-state steps the fast path's incremental writers share (``duck_incremental``
for DuckDB and DuckLake, ``pg_incremental`` for PostgreSQL): the cursor's last value read
from dlt's state at the destination before the read, and the new value written into that
state afterwards, in the load's own transaction (``conveyor.pipelines.cursor_state``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from conveyor.pipelines import cursor_state
from conveyor.pipelines.direct import DirectTable, cursor_python, typed_initial_value

Execute = Callable[[str, list[Any]], list[tuple[Any, ...]]]
Qualify = Callable[[str], str]


@dataclass(frozen=True)
class StateStore:
    """dlt's state tables at one destination: how to run a statement there and name a
    table of the dataset, and that destination's dialect."""

    execute: Execute
    qualify: Qualify
    pipeline: str
    dataset: str
    destination: str  # dlt's name for the destination type
    types: tuple[str, str]  # the text and timestamp types of dlt's tables there
    placeholder: str  # "%s" or "?"


def start(store: StateStore, table: DirectTable, *, has_state: bool) -> tuple[Any, Any]:
    """dlt's state at the destination (None without its tables) and the value the read
    starts from: the cursor's last value, else the connector's initial value (None without
    a cursor, or before any load without an initial value)."""
    state = (
        cursor_state.read(store.execute, store.qualify, store.pipeline, store.placeholder)
        if has_state
        else None
    )
    cursor = table.cursor
    last = None
    if cursor is not None:
        last = cursor_state.last_value(state, store.pipeline, table.resource, cursor.name)
        if last is None:
            last = typed_initial_value(table)
    return state, last


def advance(store: StateStore, state: Any, *, table: DirectTable, last: Any, newest: Any) -> None:
    """Write the highest cursor value read (``newest``) into dlt's state when it is past
    ``last``."""
    cursor = table.cursor
    if cursor is None or newest is None:
        return
    value = cursor_python(newest, cursor.pg_type)
    if last is not None and not value > last:
        return
    cursor_state.create_tables(store.execute, store.qualify, *store.types)
    new_state = cursor_state.advanced(
        state,
        pipeline=store.pipeline,
        dataset=store.dataset,
        destination=store.destination,
        resource=table.resource,
        cursor=cursor.name,
        value=value,
        initial_value=typed_initial_value(table),
    )
    cursor_state.write(store.execute, store.qualify, new_state, store.placeholder)
