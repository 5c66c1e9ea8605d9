"""SQL databases (PostgreSQL, MySQL, SQLite, any SQLAlchemy URL) as a source."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from conveyor.pipelines.config import CopyOptions, DatabaseConnection, TypeConfig


class TableSpec(BaseModel):
    """One table to copy, optionally with a column subset and its own keys."""

    name: str = Field(min_length=1)
    columns: list[str] | None = None
    primary_key: str | list[str] | None = None
    cursor_column: str | None = None


class SqlDatabaseConfig(CopyOptions, DatabaseConnection, TypeConfig):
    """Tables (or one read-only SELECT) from a SQL database."""

    source_schema: str | None = Field(default=None, alias="schema")
    tables: list[str | TableSpec] | None = None
    query: str | None = None
    query_table_name: str = "query_result"
    batch_size: int = Field(default=50_000, ge=1, le=10_000_000)
    backend: Literal["auto", "connectorx", "pyarrow", "sqlalchemy"] = "auto"

    @model_validator(mode="after")
    def _tables_or_query(self) -> SqlDatabaseConfig:
        if self.tables is not None and self.query is not None:
            raise ValueError("give tables or query, not both")
        if self.query is not None:
            first = self.query.lstrip().split(None, 1)[0].lower() if self.query.strip() else ""
            if first not in ("select", "with"):
                raise ValueError("query must be a read-only SELECT statement")
        return self
