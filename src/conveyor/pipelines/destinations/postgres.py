"""PostgreSQL as a destination."""

from __future__ import annotations

from pydantic import Field

from conveyor.pipelines.config import DatabaseConnection, TypeConfig


class PostgresDestinationConfig(DatabaseConnection, TypeConfig):
    """A PostgreSQL database; ``schema`` is where the tables land (the dlt dataset)."""

    target_schema: str | None = Field(default=None, alias="schema")
