"""DuckDB files: the embedded default destination."""

from __future__ import annotations

from conveyor.pipelines.config import TypeConfig


class DuckdbConfig(TypeConfig):
    """A DuckDB database file (default: ``CONVEYOR_HOME/data/conveyor.duckdb``)."""

    path: str | None = None
    dataset_name: str | None = None  # default: one per connector
