"""Whole tables from PostgreSQL straight into DuckDB or PostgreSQL, database to database.

A full copy of a table (no cursor column, written with ``replace`` or ``append``) is the
common first load and the largest one. Going through dlt's extract → normalize → load means
reading every row into Python, writing load files and reading them again; here the data never
becomes Python objects:

- into **DuckDB**, DuckDB's own PostgreSQL scanner (the extension shipped on PyPI as
  ``duckdb-extension-postgres-scanner``) reads the table with parallel binary ``COPY`` and
  inserts it in the same statement;
- into **PostgreSQL**, the source's ``COPY ... TO STDOUT`` is piped into the destination's
  ``COPY ... FROM STDIN`` (binary when the column types match, text otherwise).

Everything else — incremental cursors, merge on keys, custom queries, other databases, types
outside PostgreSQL's built-ins, an explicitly chosen dlt backend — goes through dlt
(``plan`` says which). A table lands where dlt would put
it: the same dataset (schema), table and column names (dlt's snake_case naming), so a
connector can move between the two paths from one run to the next. Each table is written in
one destination transaction: readers see the old rows or the new ones, never half a copy.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from conveyor.pipelines.netguard import pin_conninfo

if TYPE_CHECKING:
    from conveyor.pipelines.runner import ResolvedConnector, RunStats
    from conveyor.pipelines.sources.sql_database import SqlDatabaseConfig, TableSpec
    from conveyor.settings import Settings


Disposition = Literal["replace", "append"]
_ALIAS = "conveyor_source"


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
    if connector.source_type != "sql_database" or not isinstance(cfg, SqlDatabaseConfig):
        return None
    if cfg.query is not None or cfg.backend != "auto":
        return None  # custom queries and an explicitly chosen dlt backend stay with dlt
    if connector.destination_type == "duckdb":
        if postgres_extension() is None:
            return None
    elif connector.destination_type != "postgres":
        return None
    url = connection_url(cfg)
    if not _is_postgres(url):
        return None
    from conveyor.pipelines.readonly import read_only_url

    url = read_only_url(url)  # the source session cannot write, whatever it is sent

    import psycopg

    max_length = 63 if connector.destination_type == "postgres" else None
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
    if connector.destination_type == "duckdb":
        _to_duckdb(connector, tables, settings, stats)
    else:
        _to_postgres(connector, tables, stats)


def _to_postgres(connector: ResolvedConnector, tables: list[DirectTable], stats: RunStats) -> None:
    import psycopg

    from conveyor.pipelines.destinations import postgres as pg_dest
    from conveyor.pipelines.readonly import read_only_url
    from conveyor.pipelines.sources.sql_database import connection_url

    dataset = pg_dest.dataset(connector.destination, connector.id)  # type: ignore[arg-type]
    # libpq connects without Python sockets: checked and pinned to the checked address here.
    src_url = read_only_url(connection_url(connector.source))  # type: ignore[arg-type]
    src_info = pin_conninfo(conninfo(src_url))
    dst_info = pin_conninfo(conninfo(pg_dest.connection_url(connector.destination)))  # type: ignore[arg-type]
    with (
        psycopg.connect(src_info, connect_timeout=30) as src,
        psycopg.connect(dst_info, connect_timeout=30) as dst,
    ):
        # One snapshot for every table of the run: the copies are consistent with each other.
        src.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        for table in tables:
            _pg_table(src, dst, dataset, table, stats)


def _pg_table(src: Any, dst: Any, dataset: str, table: DirectTable, stats: RunStats) -> None:
    from psycopg import sql

    target = sql.Identifier(dataset, table.dest)
    dst.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(dataset)))
    existing = _pg_columns(dst, dataset, table.dest)
    if existing is None:
        dst.execute(
            sql.SQL("CREATE TABLE {} ({})").format(
                target,
                sql.SQL(", ").join(
                    sql.SQL("{} {}{}").format(
                        sql.Identifier(c.dest),
                        sql.SQL(c.pg_type),
                        sql.SQL(" NOT NULL" if c.not_null else ""),
                    )
                    for c in table.columns
                ),
            )
        )
        stats.schema_changes.append(
            {"table": table.dest, "columns": [c.dest for c in table.columns]}
        )
        binary = True
    else:
        _check_required(existing, table)
        added = [c for c in table.columns if c.dest not in existing]
        for c in added:
            dst.execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                    target, sql.Identifier(c.dest), sql.SQL(c.pg_type)
                )
            )
        if added:
            stats.schema_changes.append({"table": table.dest, "columns": [c.dest for c in added]})
        binary = all(existing.get(c.dest, (c.pg_type,))[0] == c.pg_type for c in table.columns)
        if table.disposition == "replace":
            dst.execute(sql.SQL("TRUNCATE {}").format(target))
    fmt = sql.SQL("binary" if binary else "text")
    select = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT (FORMAT {})").format(
        sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns),
        sql.Identifier(table.schema, table.name),
        fmt,
    )
    insert = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT {})").format(
        target, sql.SQL(", ").join(sql.Identifier(c.dest) for c in table.columns), fmt
    )
    with dst.cursor() as wcur:
        with wcur.copy(insert) as writer:
            size = _pipe(src, select.as_string(src), writer.write)
        rows = wcur.rowcount
    dst.commit()
    stats.rows[table.dest] = stats.rows.get(table.dest, 0) + max(rows, 0)
    stats.bytes += size


# libpq hands out COPY data a row at a time; going through psycopg's Copy object for each
# row costs more CPU than both servers together (measured: 6M rows took 2.5x as long). So the
# source side is read straight off libpq and written on in blocks of about a megabyte.
_BLOCK = 1 << 20


def _pipe(src: Any, copy_to: str, write: Any) -> int:
    """Run ``COPY ... TO STDOUT`` on ``src`` and pass its data to ``write`` in large blocks;
    the number of bytes."""
    from psycopg import pq

    pgconn = src.pgconn
    encoding = src.info.encoding
    pgconn.send_query(copy_to.encode(encoding))
    result = pgconn.get_result()
    if result is None or result.status != pq.ExecStatus.COPY_OUT:
        _drain_results(pgconn)
        raise _error(pgconn, result, encoding)
    get = pgconn.get_copy_data
    block = bytearray()
    size = 0
    while True:
        nbytes, data = get(0)  # blocks until a row (or the end) arrives
        if nbytes <= 0:
            break
        block += data
        if len(block) >= _BLOCK:
            write(block)
            size += len(block)
            block = bytearray()
    if block:
        write(block)
        size += len(block)
    result = pgconn.get_result()
    _drain_results(pgconn)
    if result is None or result.status != pq.ExecStatus.COMMAND_OK:
        raise _error(pgconn, result, encoding)
    return size


def _error(pgconn: Any, result: Any, encoding: str) -> Exception:
    from psycopg import errors

    if result is None:
        return errors.OperationalError(pgconn.error_message.decode(encoding, "replace"))
    return errors.error_from_result(result, encoding=encoding)


def _drain_results(pgconn: Any) -> None:
    while pgconn.get_result() is not None:
        pass


def _pg_columns(conn: Any, schema: str, table: str) -> dict[str, tuple[str, bool]] | None:
    """Column name → (type, required-without-default) of a destination table, None if absent."""
    from psycopg import sql

    qualified = sql.Identifier(schema, table).as_string(conn)
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod),"
        " a.attnotnull AND NOT a.atthasdef"
        " FROM pg_attribute a WHERE a.attrelid = to_regclass(%s)"
        " AND a.attnum > 0 AND NOT a.attisdropped",
        (qualified,),
    ).fetchall()
    return {r[0]: (r[1], bool(r[2])) for r in rows} if rows else None


def _check_required(existing: dict[str, tuple[str, bool]], table: DirectTable) -> None:
    copied = {c.dest for c in table.columns}
    required = sorted(n for n, (_, req) in existing.items() if req and n not in copied)
    if required:
        raise ValueError(
            f"destination table {table.dest} requires column(s) {', '.join(required)}, "
            f"which table {table.name} does not have"
        )


def _to_duckdb(
    connector: ResolvedConnector, tables: list[DirectTable], settings: Settings, stats: RunStats
) -> None:
    from conveyor.pipelines.destinations import duckdb as duck_dest
    from conveyor.pipelines.readonly import read_only_url
    from conveyor.pipelines.sources.sql_database import connection_url
    from conveyor.pipelines.target import default_dataset

    path = duck_dest.confined_path(connector.destination, settings)  # type: ignore[arg-type]
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset = connector.destination.dataset_name or default_dataset(connector.id)  # type: ignore[attr-defined]
    # Read-only in PostgreSQL too, not only in DuckDB's ATTACH: the session option survives
    # anything the scanner sends.
    src_url = read_only_url(connection_url(connector.source))  # type: ignore[arg-type]
    with _duckdb(str(path), src_url) as con:
        for table in tables:
            _duck_table(con, dataset, table, stats)


@contextlib.contextmanager
def _duckdb(path: str, source_url: str) -> Iterator[Any]:
    """The DuckDB file, with the source attached read-only as ``conveyor_source``."""
    import duckdb
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(pin_conninfo(conninfo(source_url)))
    password = params.pop("password", None)
    con = duckdb.connect(path, config={"preserve_insertion_order": False})
    try:
        con.execute(f"LOAD {_literal(postgres_extension() or '')}")
        # The password goes into a temporary (in-memory) secret: DuckDB's errors repeat the
        # ATTACH string, which holds everything else (host, TLS options, ...).
        secret = f", PASSWORD {_literal(str(password))}" if password else ""
        con.execute(f"CREATE TEMPORARY SECRET {_ALIAS} (TYPE postgres{secret})")
        con.execute(
            f"ATTACH {_literal(make_conninfo('', **params))} AS {_ALIAS} "
            f"(TYPE postgres, SECRET {_ALIAS}, READ_ONLY)"
        )
        yield con
    finally:
        con.close()


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _ident(*parts: str) -> str:
    return ".".join('"' + p.replace('"', '""') + '"' for p in parts)


def _duck_table(con: Any, dataset: str, table: DirectTable, stats: RunStats) -> None:
    target = _ident(dataset, table.dest)
    source = _ident(_ALIAS, table.schema, table.name)
    select = ", ".join(f"{_ident(c.name)} AS {_ident(c.dest)}" for c in table.columns)
    con.execute("BEGIN")
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {_ident(dataset)}")
    existing = {
        r[0]: (r[1], not r[2])
        for r in con.execute(
            "SELECT column_name, data_type, is_nullable FROM duckdb_columns()"
            " WHERE database_name = current_database() AND schema_name = ? AND table_name = ?",
            [dataset, table.dest],
        ).fetchall()
    }
    if not existing:
        con.execute(f"CREATE TABLE {target} AS SELECT {select} FROM {source}")
        rows = con.execute(f"SELECT count(*) FROM {target}").fetchone()[0]
        stats.schema_changes.append(
            {"table": table.dest, "columns": [c.dest for c in table.columns]}
        )
    else:
        _check_required(existing, table)
        added = [c for c in table.columns if c.dest not in existing]
        if added:
            # The scanner's own mapping of each new column's type, read from the source.
            types = con.execute(f"DESCRIBE SELECT {select} FROM {source}").fetchall()
            by_name = {t[0]: t[1] for t in types}
            for c in added:
                con.execute(f"ALTER TABLE {target} ADD COLUMN {_ident(c.dest)} {by_name[c.dest]}")
            stats.schema_changes.append({"table": table.dest, "columns": [c.dest for c in added]})
        if table.disposition == "replace":
            con.execute(f"DELETE FROM {target}")
        columns = ", ".join(_ident(c.dest) for c in table.columns)
        rows = con.execute(
            f"INSERT INTO {target} ({columns}) SELECT {select} FROM {source}"
        ).fetchone()[0]
    # DuckDB does not say how many bytes the scan read: the source table's size stands in.
    size_query = f"SELECT pg_relation_size({_literal(_ident(table.schema, table.name))}::regclass)"
    size = con.execute(
        f"SELECT * FROM postgres_query({_literal(_ALIAS)}, {_literal(size_query)})"
    ).fetchone()[0]
    con.execute("COMMIT")
    stats.rows[table.dest] = stats.rows.get(table.dest, 0) + int(rows)
    stats.bytes += int(size or 0)
