"""The fast path writes dlt's pipeline state in dlt's own format: dlt must read it back."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from conveyor.pipelines import cursor_state


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC),
        dt.datetime(2024, 1, 2, 3, 4, 5),
        dt.date(2024, 1, 2),
        Decimal("12345.67"),
        42,
    ],
)
def test_dlt_reads_the_cursor_the_fast_path_wrote(value: object) -> None:
    from dlt.common.versioned_state import compress_state, decompress_state

    def advance(state: Any) -> Any:
        return cursor_state.advanced(
            state,
            pipeline="p",
            dataset="d",
            destination="duckdb",
            resource="t",
            cursor="c",
            value=value,
            initial_value=None,
        )

    written = advance(None)
    state = decompress_state(cursor_state.compress(written))  # dlt's reader
    entry = state["sources"]["p"]["resources"]["t"]["incremental"]["c"]
    assert entry["last_value"] == value and type(entry["last_value"]) is type(value)
    assert entry["unique_hashes"] == []
    # and the fast path reads what dlt writes, keeping every other value as it was
    state["sources"]["p"]["resources"]["other"] = {"x": Decimal("1.5")}
    back = cursor_state.decompress(compress_state(state))
    assert cursor_state.last_value(back, "p", "t", "c") == value
    again = advance(back)
    assert again["_state_version"] == written["_state_version"] + 1
    assert decompress_state(cursor_state.compress(again))["sources"]["p"]["resources"]["other"] == {
        "x": Decimal("1.5")
    }
