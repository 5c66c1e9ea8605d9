"""SQL databases (PostgreSQL, MySQL, SQLite, any SQLAlchemy URL) as a source."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from conveyor.pipelines import failures
from conveyor.pipelines.config import (
    CopyOptions,
    DatabaseConnection,
    TypeConfig,
    WriteDisposition,
    connection_url,
)
from conveyor.pipelines.contract import Capabilities, CopyField, SourceType, TypeContext

if TYPE_CHECKING:
    from conveyor.settings import Settings


class TableSpec(BaseModel):
    """One table to copy, optionally with a column subset, its own keys and write mode
    (unset: the connector-wide ones)."""

    name: str = Field(min_length=1)
    columns: list[str] | None = None
    primary_key: str | list[str] | None = None
    cursor_column: str | None = None
    write_disposition: WriteDisposition | None = None

    def problem(self, default_key: Any) -> str | None:
        """Why this table's settings cannot work (None: they can). Checked by the config
        (not here), so the API's error is one sentence naming the table, not a union's."""
        if self.columns is not None and not self.columns:
            return f"table '{self.name}': columns is empty (leave it out to copy every column)"
        if self.write_disposition == "merge" and not (self.primary_key or default_key):
            return f"table '{self.name}': write mode merge needs a primary key"
        if self.columns is None:
            return None
        keys = [self.primary_key] if isinstance(self.primary_key, str) else self.primary_key
        for role, names in (("primary key", keys or []), ("cursor", [self.cursor_column])):
            missing = [n for n in names if n and n not in self.columns]
            if missing:
                return (
                    f"table '{self.name}': {role} column {', '.join(missing)} "
                    "is not among the columns to copy"
                )
        return None


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
        for t in self.tables or []:
            problem = t.problem(self.primary_key) if isinstance(t, TableSpec) else None
            if problem:
                raise ValueError(problem)
        return self

    @field_validator("query")
    @classmethod
    def _one_select(cls, query: str | None, info: ValidationInfo) -> str | None:
        if query is not None:
            from conveyor.pipelines import readonly

            driver = info.data.get("connection_string") or info.data.get("drivername")
            readonly.check_query(query, readonly.dialect_of(driver))
        return query

    def sql_dialect(self) -> str | None:
        """The sqlglot dialect the query is parsed with (None: generic SQL)."""
        from conveyor.pipelines import readonly

        return readonly.dialect_of(self.connection_string or self.drivername)


# --- runtime (dlt and SQLAlchemy are imported lazily) ------------------------------

# SQLAlchemy type names connectorx turns into Arrow faithfully; a table with any other
# column type (arrays, JSON, intervals, unbounded NUMERIC, ...) is read with pyarrow.
_CONNECTORX_SAFE = {
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "REAL",
    "DOUBLE_PRECISION",
    "DOUBLE",
    "FLOAT",
    "VARCHAR",
    "CHAR",
    "TEXT",
    "DATE",
    "TIMESTAMP",
    "BOOLEAN",
}
_CONNECTORX_DIALECTS = {"postgresql"}

__all__ = ["SqlDatabaseConfig", "SqlDatabaseSource", "TableSpec", "connection_url"]


def table_options(cfg: SqlDatabaseConfig, spec: TableSpec) -> CopyOptions:
    """The table's own keys and cursor, falling back to the connector-wide ones."""
    return CopyOptions(
        write_disposition=spec.write_disposition or cfg.write_disposition,
        primary_key=spec.primary_key or cfg.primary_key,
        cursor_column=spec.cursor_column or cfg.cursor_column,
        initial_value=cfg.initial_value,
    )


def choose_backend(table: Any, dialect: str, requested: str) -> str:
    """connectorx (streamed Arrow batches) where every column type is safe, else pyarrow."""
    if requested != "auto":
        return requested
    if dialect not in _CONNECTORX_DIALECTS:
        return "pyarrow"
    for column in table.columns:
        type_name = type(column.type).__name__.upper()
        if type_name == "NUMERIC" or type_name == "DECIMAL":
            precision = getattr(column.type, "precision", None)
            # connectorx reads NUMERIC as decimal128(38, 10): 28 integer digits at most.
            if precision is None or precision > 28:
                return "pyarrow"
            continue
        if type_name not in _CONNECTORX_SAFE:
            return "pyarrow"
    return "connectorx"


def build(cfg: SqlDatabaseConfig) -> list[Any]:
    """dlt resources for the configured tables (or the query), one per destination table."""
    import sqlalchemy as sa

    from conveyor.pipelines.netguard import pin_url

    # Checked and pinned (libpq hostaddr) here: connectorx connects without Python sockets.
    url = pin_url(connection_url(cfg))
    if cfg.query is not None:
        return [_query_resource(cfg, url)]

    from dlt.sources.sql_database import sql_table

    from conveyor.pipelines import readonly

    engine = readonly.engine(url)
    try:
        metadata = sa.MetaData(schema=cfg.source_schema)
        specs = [TableSpec(name=t) if isinstance(t, str) else t for t in cfg.tables or []]
        if not specs:
            names = sa.inspect(engine).get_table_names(schema=cfg.source_schema)
            specs = [TableSpec(name=n) for n in sorted(names)]
        resources = []
        for spec in specs:
            table = sa.Table(spec.name, metadata, autoload_with=engine)
            backend = choose_backend(table, engine.dialect.name, cfg.backend)
            opts = table_options(cfg, spec)
            incremental = None
            if opts.cursor_column:
                import dlt

                incremental = dlt.sources.incremental(
                    opts.cursor_column,
                    initial_value=_typed_initial_value(
                        table, opts.cursor_column, opts.initial_value
                    ),
                )
            columns = spec.columns
            reflected = [c.name for c in table.primary_key.columns]
            if columns and opts.primary_key is None and opts.cursor_column:
                # Incremental reads dedupe the rows at the cursor boundary by the table's key:
                # read the key columns too, even when the chosen columns leave them out.
                columns = columns + [k for k in reflected if k not in columns]
            resources.append(
                sql_table(
                    credentials=engine,  # read-only sessions, its URL too (connectorx)
                    table=spec.name,
                    schema=cfg.source_schema,
                    metadata=metadata,
                    incremental=incremental,
                    chunk_size=cfg.batch_size,
                    backend=backend,  # type: ignore[arg-type]
                    backend_kwargs=_backend_kwargs(backend, cfg.batch_size),
                    reflection_level="full_with_precision",
                    included_columns=columns,
                    write_disposition=opts.effective_write_disposition(),
                    primary_key=opts.primary_key,  # type: ignore[arg-type]
                )
            )
        return resources
    finally:
        engine.dispose()


def _typed_initial_value(table: Any, cursor: str, value: Any) -> Any:
    """A connector's config is JSON, so a start value arrives as text: give it the cursor
    column's type (comparing "2024-01-01" with a timestamp fails inside dlt)."""
    import datetime as dt
    from decimal import Decimal

    import sqlalchemy as sa

    if not isinstance(value, str) or cursor not in table.columns:
        return value
    column_type = table.columns[cursor].type
    try:
        if isinstance(column_type, sa.DateTime):
            parsed = dt.datetime.fromisoformat(value)
            if not getattr(column_type, "timezone", False):  # timestamp without time zone
                return parsed.astimezone(dt.UTC).replace(tzinfo=None) if parsed.tzinfo else parsed
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
        if isinstance(column_type, sa.Date):
            return dt.date.fromisoformat(value)
        if isinstance(column_type, sa.Integer):
            return int(value)
        if isinstance(column_type, sa.Numeric):
            return Decimal(value)
    except ValueError as exc:
        raise ValueError(
            f"initial_value {value!r} does not fit cursor column {cursor} ({column_type}): {exc}"
        ) from None
    return value


def _backend_kwargs(backend: str, batch_size: int) -> dict[str, Any]:
    if backend == "connectorx":
        # Streamed record batches: memory stays flat however large the table.
        return {"return_type": "arrow_stream", "batch_size": batch_size}
    if backend == "pyarrow":
        return {"tz": "UTC"}
    return {}


def _query_resource(cfg: SqlDatabaseConfig, url: str) -> Any:
    """One read-only SELECT, streamed from a server-side cursor in Arrow batches."""
    import dlt
    import sqlalchemy as sa
    from dlt.sources.sql_database.arrow_helpers import row_tuples_to_arrow

    from conveyor.pipelines import readonly

    query = cfg.query or ""
    # Again at run time: a config stored past the validator never runs a write.
    readonly.check_query(query, cfg.sql_dialect())
    opts = CopyOptions(
        write_disposition=cfg.write_disposition,
        primary_key=cfg.primary_key,
        cursor_column=cfg.cursor_column,
        initial_value=cfg.initial_value,
    )
    cursor = opts.cursor_column

    def rows(
        incremental: Any = (
            dlt.sources.incremental(cursor, initial_value=opts.initial_value) if cursor else None
        ),
    ) -> Iterator[Any]:
        engine = readonly.engine(url)
        try:
            with engine.connect() as conn:
                _read_only(conn)
                sql, params = query.rstrip().rstrip(";"), {}
                if incremental is not None and incremental.last_value is not None:
                    sql = (
                        f"SELECT * FROM ({sql}) AS conveyor_q "
                        f"WHERE {_quote(conn, cursor or '')} >= :last"
                    )
                    params["last"] = incremental.last_value
                result = conn.execution_options(
                    stream_results=True, yield_per=cfg.batch_size
                ).execute(sa.text(sql), params)
                names = list(result.keys())
                columns: dict[str, Any] = {n: {"name": n} for n in names}
                for part in result.partitions(cfg.batch_size):
                    yield row_tuples_to_arrow([tuple(r) for r in part], columns=columns, tz="UTC")
        finally:
            engine.dispose()

    return dlt.resource(
        rows,
        name=cfg.query_table_name,
        write_disposition=opts.effective_write_disposition(),
        primary_key=opts.primary_key,  # type: ignore[arg-type]
    )()


def _read_only(conn: Any) -> None:
    """Make the transaction refuse writes, whatever the query says."""
    dialect = conn.dialect.name
    if dialect in ("postgresql", "mysql", "mariadb"):
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")
    elif dialect == "sqlite":
        conn.exec_driver_sql("PRAGMA query_only = ON")


def _quote(conn: Any, name: str) -> str:
    return str(conn.dialect.identifier_preparer.quote(name))


def discover(cfg: SqlDatabaseConfig) -> dict[str, Any]:
    """Tables (and views) with their columns, types, nullability and primary keys."""
    import sqlalchemy as sa

    from conveyor.pipelines import readonly

    engine = readonly.engine(connection_url(cfg))
    try:
        insp = sa.inspect(engine)
        schema = cfg.source_schema
        tables = []
        names = sorted(insp.get_table_names(schema=schema)) + sorted(
            insp.get_view_names(schema=schema)
        )
        for name in names:
            pk = insp.get_pk_constraint(name, schema=schema).get("constrained_columns") or []
            tables.append(
                {
                    "name": name,
                    "columns": [
                        {
                            "name": c["name"],
                            "type": str(c["type"]),
                            "nullable": bool(c.get("nullable", True)),
                            "primary_key": c["name"] in pk,
                        }
                        for c in insp.get_columns(name, schema=schema)
                    ],
                }
            )
        return {"schema": schema, "tables": tables}
    finally:
        engine.dispose()


def check(cfg: SqlDatabaseConfig) -> str:
    """Connect and run a trivial query; name the tables to copy that are missing."""
    import sqlalchemy as sa

    from conveyor.pipelines import readonly

    url = connection_url(cfg)
    engine = readonly.engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            wanted = [t if isinstance(t, str) else t.name for t in cfg.tables or []]
            if wanted:
                present = set(sa.inspect(conn).get_table_names(schema=cfg.source_schema))
                present |= set(sa.inspect(conn).get_view_names(schema=cfg.source_schema))
                missing = [t for t in wanted if t not in present]
                if missing:
                    raise LookupError(f"table(s) not found: {', '.join(missing)}")
        return f"connected to {sa.engine.make_url(url).render_as_string(hide_password=True)}"
    finally:
        engine.dispose()


# --- the type ---------------------------------------------------------------------


class SqlDatabaseSource(SourceType):
    """Tables or one read-only query from any SQLAlchemy database."""

    name = "sql_database"
    title = "SQL database"
    config_model = SqlDatabaseConfig
    capabilities = Capabilities(merge=True, incremental=True, direct_copy=True)
    failures = failures.DATABASE
    copy_form = (
        CopyField(
            "tables",
            "Tables",
            help=(
                "Tick them after “Discover tables” (each with its columns, write mode and keys), "
                "or type names, comma-separated. None at all: every table."
            ),
            many=True,
            choice="tables",
            choice_label="Whole tables",
            discover="Discover tables",
            per_table=True,
        ),
        CopyField(
            "query",
            "SQL query (read-only SELECT)",
            multiline=True,
            choice="query",
            choice_label="The result of a query",
        ),
    )
    extra_copy_fields = frozenset({"query_table_name"})

    def build(self, config: Any, context: TypeContext) -> Any:
        return build(config)

    def check(self, config: Any, context: TypeContext) -> str:
        return check(config)

    def discover(self, config: Any, context: TypeContext) -> dict[str, Any]:
        return discover(config)

    def local_paths(self, config: Any, settings: Settings) -> list[tuple[str, str]]:
        from conveyor.pipelines import paths

        out = super().local_paths(config, settings)
        try:
            db = paths.database_file(connection_url(config))
        except Exception:
            db = None
        if db is not None:  # an SQLite or DuckDB file
            out.append(("connection_string" if config.connection_string else "database", str(db)))
        return out
