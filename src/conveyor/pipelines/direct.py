"""Whole tables from PostgreSQL straight into DuckDB or PostgreSQL, database to database.

A full copy of a table (no cursor column, written with ``replace`` or ``append``) is the
common first load and the largest one. Going through dlt's extract → normalize → load means
reading every row into Python, writing load files and reading them again; here the data never
becomes Python objects:

- into **DuckDB**, DuckDB's own PostgreSQL scanner reads the table with parallel binary
  ``COPY`` and inserts it in the same statement (``direct_duckdb``);
- into **PostgreSQL**, the source's ``COPY ... TO STDOUT`` is piped into the destination's
  ``COPY ... FROM STDIN`` (``direct_postgres``).

Which ends take part is declared by the types (``capabilities.direct_copy``); each such
destination type hands over its writer (``DestinationType.direct_writer``).

Whole tables from MySQL/MariaDB go into DuckDB through DuckDB's MySQL scanner
(``direct_mysql.py``, through the DuckDB writer's ``plan_source``).

**Incremental cursors and merges** (the fast path) from PostgreSQL go database to database
too (``DirectTable.incremental``): the cursor predicate ``cursor >= last value`` is pushed
into the source's own query (``DirectTable.select_sql``, so its index on the cursor serves
it), the rows land in a temporary table without becoming Python objects (DuckDB:
``postgres_query`` through the scanner; PostgreSQL: ``COPY`` piped into a ``TEMP`` table),
and one set-based write follows in the destination's transaction (merge into DuckDB:
``DELETE ... USING`` the staged keys + ``INSERT``, dlt's delete-insert; into PostgreSQL:
``INSERT ... ON CONFLICT DO UPDATE`` on the key's unique index; append: an ``INSERT``).
The new cursor is written to dlt's own pipeline state in that same transaction
(``cursor_state``), so the cursor moves exactly when the rows commit, and dlt's path
continues from it (and the fast path from dlt's). Rows carrying the last value are read
again; those already at the destination as they are now are neither written again nor
counted (neither lost nor doubled). A key the source does
not hold unique is deduplicated: one row per key, the latest cursor wins. Cursor types: integers,
``numeric(p,s)``, ``date``, ``timestamp[tz]``; others stay with dlt.

Everything else — custom queries, other databases, types outside PostgreSQL's built-ins, a
text or float cursor, append with a key or a column subset, an explicitly chosen dlt
backend — goes through dlt (``plan`` says which). A table lands where dlt would put
it: the same dataset (schema), table and column names (dlt's snake_case naming), so a
connector can move between the two paths from one run to the next. Each table is written in
one destination transaction: readers see the old rows or the new ones, never half a copy.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from conveyor.pipelines.netguard import pin_conninfo

if TYPE_CHECKING:
    from conveyor.pipelines.resolved import ResolvedConnector, RunStats
    from conveyor.pipelines.sources.sql_database import SqlDatabaseConfig, TableSpec
    from conveyor.settings import Settings


Disposition = Literal["replace", "append", "merge"]


@dataclass(frozen=True)
class Column:
    name: str  # in the source
    dest: str  # dlt-normalized name at the destination
    pg_type: str  # format_type() in the source, e.g. numeric(15,2)
    not_null: bool


@dataclass(frozen=True)
class DirectTable:
    """One source table copied database to database."""

    schema: str
    name: str
    dest: str
    columns: tuple[Column, ...]
    disposition: Disposition
    # Incremental reads and merges (the fast path): the cursor column (source name), the
    # merge key (source names), whether the source guarantees that key unique (a unique
    # index on exactly those columns: no deduplication needed), where dlt's state keeps the
    # cursor (its resource name) and the start value for a first run.
    cursor: Column | None = None
    key: tuple[Column, ...] = ()
    key_unique: bool = False
    resource: str = ""
    initial_value: Any = None

    @property
    def incremental(self) -> bool:
        """Read with a cursor or merged on a key: staged, then one set-based write."""
        return self.cursor is not None or self.disposition == "merge"

    def select_sql(self, last: Any) -> str:
        """The source read in PostgreSQL's SQL: the columns, and the cursor predicate pushed
        down (``cursor >= last``) so the source's index on the cursor is used."""
        cols = ", ".join(_q(c.name) for c in self.columns)
        text = f"SELECT {cols} FROM {_q(self.schema)}.{_q(self.name)}"
        if self.cursor is not None and last is not None:
            text += f" WHERE {_q(self.cursor.name)} >= {pg_literal(last, self.cursor.pg_type)}"
        return text


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def pg_literal(value: Any, pg_type: str) -> str:
    """A cursor value as a typed SQL literal (it is a number, date or timestamp, rendered
    here, never text from a user)."""
    import datetime as dt

    text = value.isoformat() if isinstance(value, dt.date | dt.datetime) else str(value)
    return "'" + text.replace("'", "''") + "'::" + pg_type


# Cursor types the fast path compares the same way in PostgreSQL, DuckDB and Python: numbers
# and times. Text (collations differ), floats, unbounded numeric (DuckDB reads it as a
# double) and everything else stay with dlt.
_CURSOR_TYPES = re.compile(
    r"smallint|integer|bigint|numeric\(\d+,\d+\)|date"
    r"|timestamp(\(\d\))? with(out)? time zone"
)


@dataclass(frozen=True)
class Plan:
    tables: list[DirectTable]
    rest: SqlDatabaseConfig | None  # the tables left for dlt (None: nothing left)


class DirectWriter(Protocol):
    """What a destination type with ``capabilities.direct_copy`` hands the direct copy."""

    max_identifier_length: int | None  # dlt shortens longer table and column names
    # Optional: ``plan_source(cfg, url) -> Plan | None`` for source databases other than
    # PostgreSQL that the writer reads itself (DuckDB: MySQL, ``direct_mysql``).

    def available(self) -> bool: ...

    def run(
        self,
        connector: ResolvedConnector,
        tables: list[DirectTable],
        settings: Settings,
        stats: RunStats,
    ) -> None: ...


# --- planning ----------------------------------------------------------------------


def postgres_extension() -> str | None:
    """The PostgreSQL scanner extension file for the installed DuckDB, if it is installed."""
    try:
        import duckdb
        import duckdb_extension_postgres_scanner as ext
    except ImportError:
        return None
    pattern = os.path.join(
        os.path.dirname(ext.__file__), "extensions", f"v{duckdb.__version__}", "*.duckdb_extension"
    )
    found = glob.glob(pattern)
    return found[0] if found else None


def _is_postgres(url: str) -> bool:
    from sqlalchemy.engine import make_url

    return make_url(url).get_backend_name() == "postgresql"


def conninfo(url: str) -> str:
    """A libpq connection string for a SQLAlchemy/libpq URL (password included: memory only)."""
    from psycopg.conninfo import make_conninfo
    from sqlalchemy.engine import make_url

    u = make_url(url)
    params: dict[str, Any] = {k: v for k, v in u.query.items() if isinstance(v, str)}
    parts = {
        "host": u.host,
        "port": u.port,
        "user": u.username,
        "password": u.password,
        "dbname": u.database,
    }
    params.update({k: v for k, v in parts.items() if v is not None})
    return make_conninfo("", **params)


def plan(connector: ResolvedConnector) -> Plan | None:
    """Which tables go database to database; None when the connector is not eligible at all."""
    from conveyor.pipelines.sources.sql_database import (
        SqlDatabaseConfig,
        TableSpec,
        connection_url,
        table_options,
    )

    cfg = connector.source
    src, dst = connector.source_info, connector.destination_info
    if not (src.capabilities.direct_copy and dst.capabilities.direct_copy):
        return None
    if not isinstance(cfg, SqlDatabaseConfig):
        return None
    if cfg.query is not None or cfg.backend != "auto":
        return None  # custom queries and an explicitly chosen dlt backend stay with dlt
    writer: DirectWriter = dst.direct_writer()
    if not writer.available():
        return None
    url = connection_url(cfg)
    if not _is_postgres(url):
        # Other databases a writer reads itself (DuckDB: MySQL through direct_mysql.py).
        other = getattr(writer, "plan_source", None)
        if other is None:
            return None
        from conveyor.pipelines.readonly import read_only_url

        planned: Plan | None = other(cfg, read_only_url(url))
        return planned
    from conveyor.pipelines.readonly import read_only_url

    url = read_only_url(url)  # the source session cannot write, whatever it is sent

    import psycopg

    max_length = writer.max_identifier_length
    with psycopg.connect(pin_conninfo(conninfo(url)), connect_timeout=30) as conn:
        current = conn.execute("SELECT current_schema()").fetchone()
        schema = cfg.source_schema or str(current[0] if current else "public")
        specs = [TableSpec(name=t) if isinstance(t, str) else t for t in cfg.tables or []]
        if not cfg.tables:
            rows = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename",
                (schema,),
            ).fetchall()
            specs = [TableSpec(name=r[0]) for r in rows]
        direct: list[DirectTable] = []
        rest: list[TableSpec] = []
        for spec in specs:
            opts = table_options(cfg, spec)
            disposition = opts.effective_write_disposition()
            table = None
            if not opts.cursor_column and disposition in ("replace", "append"):
                table = _describe(conn, schema, spec, disposition, max_length)
            elif opts.cursor_column or disposition == "merge":
                table = _describe_incremental(conn, schema, spec, opts, max_length)
            if table is None:
                rest.append(spec)
            else:
                direct.append(table)
    if not direct:
        return None
    left = cfg.model_copy(update={"tables": rest}) if rest else None
    return Plan(tables=direct, rest=left)


_PLAIN = re.compile(r"[a-z_][a-z0-9_]*")


def dlt_name(name: str, max_length: int | None = None) -> str:
    """The table or column name dlt gives ``name`` (its default snake_case naming).

    A name that is already plain snake case is its own dlt name; only others need dlt,
    whose import costs about 0.7 s of a run that otherwise never loads it."""
    if (
        _PLAIN.fullmatch(name)
        and "__" not in name
        and not name.endswith("_")
        and (max_length is None or len(name) <= max_length)
    ):
        return name
    from dlt.common.normalizers.naming.snake_case import NamingConvention

    naming = NamingConvention(max_length) if max_length else NamingConvention()
    return str(naming.normalize_identifier(name))


def _describe(
    conn: Any, schema: str, spec: TableSpec, disposition: Disposition, max_length: int | None
) -> DirectTable | None:
    """The table's columns, or None when a column's type is not one of PostgreSQL's own
    (enums, domains, extension types: dlt's type mapping handles those)."""
    from psycopg import sql

    qualified = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(spec.name))
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,"
        " t.typnamespace = 'pg_catalog'::regnamespace"
        " FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
        " WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped"
        " ORDER BY a.attnum",
        (qualified.as_string(conn),),
    ).fetchall()
    if not rows:
        return None  # missing table: dlt's path reports it in its own words
    wanted = spec.columns
    columns = []
    for name, pg_type, not_null, builtin in rows:
        if wanted is not None and name not in wanted:
            continue
        if not builtin:
            return None
        columns.append(Column(name, dlt_name(name, max_length), pg_type, bool(not_null)))
    if not columns or (wanted and len(columns) != len(set(wanted))):
        return None
    return DirectTable(
        schema=schema,
        name=spec.name,
        dest=dlt_name(spec.name, max_length),
        columns=tuple(columns),
        disposition=disposition,
    )


def _describe_incremental(
    conn: Any, schema: str, spec: TableSpec, opts: Any, max_length: int | None
) -> DirectTable | None:
    """An incremental (cursor) or merge table for the fast path, or None for dlt's path:
    a cursor of a type compared alike everywhere, key and cursor among the copied columns."""
    from dataclasses import replace

    disposition = opts.effective_write_disposition()
    table = _describe(conn, schema, spec, disposition, max_length)
    if table is None:
        return None
    by_name = {c.name: c for c in table.columns}
    cursor = None
    if opts.cursor_column:
        cursor = by_name.get(opts.cursor_column)
        if cursor is None or not _CURSOR_TYPES.fullmatch(cursor.pg_type):
            return None
    key: tuple[Column, ...] = ()
    if disposition == "merge":
        names = [opts.primary_key] if isinstance(opts.primary_key, str) else opts.primary_key
        if not names or any(n not in by_name for n in names):
            return None
        key = tuple(by_name[n] for n in names)
    elif opts.primary_key or spec.columns is not None:
        return None  # append deduplicates boundary rows by whole row; dlt's rules otherwise
    return replace(
        table,
        cursor=cursor,
        key=key,
        key_unique=bool(key) and _unique(conn, schema, spec.name, [c.name for c in key]),
        resource=spec.name,
        initial_value=opts.initial_value,
    )


def _unique(conn: Any, schema: str, table: str, columns: list[str]) -> bool:
    """True when a unique index (or primary key) of the source covers exactly ``columns``."""
    from conveyor.pipelines.destinations.pg_copy import pg_indexes

    indexes = pg_indexes(conn, schema, table)
    return any(unique and sorted(cols) == sorted(columns) for cols, unique in indexes)


def typed_initial_value(table: DirectTable) -> Any:
    """The connector's ``initial_value`` (JSON: text or a number) as the cursor's type."""
    import datetime as dt
    from decimal import Decimal

    value, cursor = table.initial_value, table.cursor
    if value is None or cursor is None:
        return None
    t = cursor.pg_type
    try:
        if t.startswith("timestamp"):
            parsed = dt.datetime.fromisoformat(str(value))
            if "without" in t:
                return parsed.astimezone(dt.UTC).replace(tzinfo=None) if parsed.tzinfo else parsed
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
        if t == "date":
            return dt.date.fromisoformat(str(value))
        if t.startswith("numeric"):
            return Decimal(str(value))
        return int(value)
    except ValueError as exc:
        raise ValueError(
            f"initial_value {value!r} does not fit cursor column {cursor.name} ({t}): {exc}"
        ) from None


def cursor_python(value: Any, pg_type: str) -> Any:
    """A cursor value read back from a destination as the type dlt's state keeps: UTC
    datetimes for time zone columns, Decimal for numeric, int for integers."""
    import datetime as dt
    from decimal import Decimal

    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if "without" in pg_type:
            return value.replace(tzinfo=None)
        return value.astimezone(dt.UTC)
    if pg_type.startswith("numeric"):
        return Decimal(value)
    return value


# --- copying -----------------------------------------------------------------------


def run(
    connector: ResolvedConnector, tables: list[DirectTable], settings: Settings, stats: RunStats
) -> None:
    """Copy the tables, each in its own destination transaction."""
    writer: DirectWriter = connector.destination_info.direct_writer()
    writer.run(connector, tables, settings, stats)


def check_required(existing: dict[str, tuple[str, bool]], table: DirectTable) -> None:
    copied = {c.dest for c in table.columns}
    required = sorted(n for n, (_, req) in existing.items() if req and n not in copied)
    if required:
        raise ValueError(
            f"destination table {table.dest} requires column(s) {', '.join(required)}, "
            f"which table {table.name} does not have"
        )
