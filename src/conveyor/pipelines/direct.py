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

Everything else — incremental cursors, merge on keys, custom queries, other databases, types
outside PostgreSQL's built-ins, an explicitly chosen dlt backend — goes through dlt
(``plan`` says which). A table lands where dlt would put
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


Disposition = Literal["replace", "append"]


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


@dataclass(frozen=True)
class Plan:
    tables: list[DirectTable]
    rest: SqlDatabaseConfig | None  # the tables left for dlt (None: nothing left)


class DirectWriter(Protocol):
    """What a destination type with ``capabilities.direct_copy`` hands the direct copy."""

    max_identifier_length: int | None  # dlt shortens longer table and column names

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
        return None
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
