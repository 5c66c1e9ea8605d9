"""Whole tables from MySQL/MariaDB straight into DuckDB, through DuckDB's MySQL scanner.

The counterpart of ``direct.py``'s PostgreSQL path: the scanner (the extension shipped on
PyPI as ``duckdb-extension-mysql-scanner``, loaded from its file, nothing downloaded) reads
each table and DuckDB inserts it in the same statement; rows never become Python objects.
Which tables qualify: every column of a type below (``_SCANNED``), a URL with nothing but
host, port, user, password, database (TLS options and sockets stay with dlt, which honours
them through PyMySQL). Whole tables are scanned; a cursor or a merge takes the fast path of
``direct.py`` (``MysqlTable``: the rows past the cursor read by MySQL itself through
``mysql_query``, staged, one set-based write, the cursor kept in dlt's state in the same
transaction) when the cursor is a number, DECIMAL, DATE, DATETIME or TIMESTAMP. Everything
else goes through dlt's ``sql_database`` over ``mysql+pymysql``.

Trust boundary (invariant 7): the scanner is C code (libmysqlclient) that never touches a
Python socket, so the host is resolved and checked here and the scanner is given the
checked address (``netguard.pin_mysql``); the password travels in a temporary DuckDB
secret, never in an ATTACH string that errors would repeat. The source is attached
``READ_ONLY`` and Conveyor sends it only ``SELECT``s it wrote itself; a SELECT-only MySQL
user is the lock that holds whatever happens (docs/security.md). Discovery uses PyMySQL in
a read-only session (``readonly.engine``), under the socket audit hook.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import glob
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

from conveyor.pipelines.direct import Column, DirectTable

if TYPE_CHECKING:
    from conveyor.pipelines.direct import Plan
    from conveyor.pipelines.sources.sql_database import SqlDatabaseConfig, TableSpec

ALIAS = "conveyor_source"
_BACKENDS = {"mysql", "mariadb"}
_URL_QUERY_OK = {"charset"}  # anything else in the URL (ssl_*, unix_socket...) → dlt

# information_schema DATA_TYPE values the scanner maps the way dlt's path lands them (or
# close enough to insert into the same columns). JSON, BIT, TIME, YEAR, SET, BLOB/BINARY
# and spatial types go through dlt.
_SCANNED = frozenset(
    {
        "tinyint",
        "smallint",
        "mediumint",
        "int",
        "bigint",
        "decimal",
        "float",
        "double",
        "char",
        "varchar",
        "tinytext",
        "text",
        "mediumtext",
        "longtext",
        "enum",
        "date",
        "datetime",
        "timestamp",
    }
)

# Scanner settings for a copy: TINYINT(1) as a number (as PyMySQL reads it, so both paths
# land the same column type), zero dates as NULL (as PyMySQL reads them), no adaptive query
# timeout cutting a long table read short.
_SETTINGS = (
    "SET mysql_tinyint1_as_boolean = false",
    "SET mysql_incomplete_dates_as_nulls = true",
    "SET mysql_query_timeout_enabled = false",
)


# Cursor columns the fast path takes, as the PostgreSQL type names the shared cursor code
# (direct.typed_initial_value, cursor_python, duck_sql.duck_type) compares alike in
# MySQL, DuckDB and Python: integers (not BIGINT UNSIGNED), DECIMAL(p,s), DATE, DATETIME and
# TIMESTAMP (both read as the session's wall-clock time, as PyMySQL reads them).
_CURSOR_TYPES = (
    (re.compile(r"(tinyint|smallint)(\(\d+\))?( unsigned)?"), "smallint"),
    (re.compile(r"(mediumint|int)(\(\d+\))?( unsigned)?"), "integer"),
    (re.compile(r"bigint(\(\d+\))?"), "bigint"),
    (re.compile(r"decimal\((\d+),(\d+)\)"), "numeric({0},{1})"),
    (re.compile(r"date"), "date"),
    (re.compile(r"(datetime|timestamp)(\(\d\))?"), "timestamp without time zone"),
)


@dataclass(frozen=True)
class MysqlTable(DirectTable):
    """A MySQL table on the fast path: read past the cursor by MySQL itself."""

    query_function: ClassVar[str] = "mysql_query"  # DuckDB's MySQL scanner's pass-through

    def select_sql(self, last: Any) -> str:
        """The source read in MySQL's SQL, the cursor predicate pushed down
        (``cursor >= last``) so that MySQL's index on the cursor serves it."""
        cols = ", ".join(_bq(c.name) for c in self.columns)
        text = f"SELECT {cols} FROM {_bq(self.schema)}.{_bq(self.name)}"
        if self.cursor is not None and last is not None:
            text += f" WHERE {_bq(self.cursor.name)} >= {_mysql_literal(last)}"
        return text


def _bq(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _mysql_literal(value: Any) -> str:
    """A cursor value (a number, date or datetime rendered here, never a user's text)."""
    if isinstance(value, dt.datetime):
        text = value.replace(tzinfo=None).isoformat(sep=" ")
    elif isinstance(value, dt.date):
        text = value.isoformat()
    else:
        text = str(value)
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def cursor_type(column_type: str) -> str | None:
    """The PostgreSQL name the cursor code knows a MySQL column type by (None: dlt)."""
    for pattern, name in _CURSOR_TYPES:
        m = pattern.fullmatch(column_type.lower())
        if m:
            return name.format(*m.groups()) if "{" in name else name
    return None


def is_mysql(url: str) -> bool:
    from conveyor.pipelines.readonly import backend_of

    return backend_of(url) in _BACKENDS


def mysql_extension() -> str | None:
    """The MySQL scanner extension file for the installed DuckDB, if it is installed."""
    try:
        import duckdb
        import duckdb_extension_mysql_scanner as ext
    except ImportError:
        return None
    pattern = os.path.join(
        os.path.dirname(ext.__file__), "extensions", f"v{duckdb.__version__}", "*.duckdb_extension"
    )
    found = glob.glob(pattern)
    return found[0] if found else None


def scanner_target(url: str) -> dict[str, Any] | None:
    """host, port, user, password, database of a URL the scanner can take as it is; None
    when the URL carries options only PyMySQL honours (TLS, a socket path, ...)."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if set(u.query) - _URL_QUERY_OK:
        return None
    if u.host and u.host.startswith("/"):
        return None
    return {
        "host": u.host or "localhost",
        "port": int(u.port or 3306),
        "user": u.username or "",
        "password": u.password or "",
        "database": u.database or "",
    }


# --- planning ----------------------------------------------------------------------


def plan(cfg: SqlDatabaseConfig, writer: Any, url: str) -> Plan | None:
    """Which tables the scanner copies; None when none. Called by the DuckDB writer's
    ``plan_source`` (``direct.plan`` asks the writer for databases other than PostgreSQL)."""
    from conveyor.pipelines.direct import Plan
    from conveyor.pipelines.sources.sql_database import TableSpec, table_options

    if mysql_extension() is None or scanner_target(url) is None:
        return None
    from conveyor.pipelines import readonly

    engine = readonly.engine(url)  # PyMySQL: Python sockets, checked by netguard's hook
    try:
        with engine.connect() as conn:
            schema = cfg.source_schema or conn.exec_driver_sql("SELECT DATABASE()").scalar()
            if not schema:
                return None
            specs = [TableSpec(name=t) if isinstance(t, str) else t for t in cfg.tables or []]
            if not cfg.tables:
                rows = conn.exec_driver_sql(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s"
                    " AND table_type = 'BASE TABLE' ORDER BY table_name",
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
                    table = _describe(conn, str(schema), spec, disposition, writer)
                elif opts.cursor_column or disposition == "merge":
                    table = _describe_incremental(conn, str(schema), spec, opts, writer)
                (rest.append(spec) if table is None else direct.append(table))
    finally:
        engine.dispose()
    if not direct:
        return None
    left = cfg.model_copy(update={"tables": rest}) if rest else None
    return Plan(tables=direct, rest=left)


def _describe(conn: Any, schema: str, spec: Any, disposition: Any, writer: Any) -> Any:
    from conveyor.pipelines.direct import dlt_name

    max_length = writer.max_identifier_length
    rows = conn.exec_driver_sql(
        "SELECT column_name, data_type, column_type, is_nullable"
        " FROM information_schema.columns WHERE table_schema = %s AND table_name = %s"
        " ORDER BY ordinal_position",
        (schema, spec.name),
    ).fetchall()
    if not rows:
        return None  # missing table (or no right to see it): dlt's path says so in words
    wanted = spec.columns
    columns = []
    for name, data_type, column_type, nullable in rows:
        if wanted is not None and name not in wanted:
            continue
        if str(data_type).lower() not in _SCANNED:
            return None
        columns.append(Column(name, dlt_name(name, max_length), str(column_type), nullable == "NO"))
    if not columns or (wanted and len(columns) != len(set(wanted))):
        return None
    return MysqlTable(
        schema=schema,
        name=spec.name,
        dest=dlt_name(spec.name, max_length),
        columns=tuple(columns),
        disposition=disposition,
    )


def _describe_incremental(
    conn: Any, schema: str, spec: TableSpec, opts: Any, writer: Any
) -> MysqlTable | None:
    """A cursor or merge table for the fast path (the rules of ``direct``'s PostgreSQL
    one), or None for dlt's path."""
    disposition = opts.effective_write_disposition()
    table = _describe(conn, schema, spec, disposition, writer)
    if table is None:
        return None
    by_name = {c.name: c for c in table.columns}
    cursor = None
    if opts.cursor_column:
        found = by_name.get(opts.cursor_column)
        known = cursor_type(found.pg_type) if found is not None else None
        if found is None or known is None:
            return None
        cursor = replace(found, pg_type=known)
        by_name[found.name] = cursor
    key: tuple[Column, ...] = ()
    if disposition == "merge":
        names = [opts.primary_key] if isinstance(opts.primary_key, str) else opts.primary_key
        if not names or any(n not in by_name for n in names):
            return None
        key = tuple(by_name[n] for n in names)
    elif opts.primary_key or spec.columns is not None:
        return None  # append deduplicates boundary rows by whole row; dlt's rules otherwise
    out: MysqlTable = replace(
        table,
        columns=tuple(by_name[c.name] for c in table.columns),
        cursor=cursor,
        key=key,
        key_unique=bool(key) and _unique(conn, schema, spec.name, [c.name for c in key]),
        resource=spec.name,
        initial_value=opts.initial_value,
    )
    return out


def _unique(conn: Any, schema: str, table: str, columns: list[str]) -> bool:
    """True when a unique index (or the primary key) covers exactly ``columns``."""
    rows = conn.exec_driver_sql(
        "SELECT index_name, column_name FROM information_schema.statistics"
        " WHERE table_schema = %s AND table_name = %s AND non_unique = 0",
        (schema, table),
    ).fetchall()
    indexes: dict[str, set[str]] = {}
    for index, column in rows:
        indexes.setdefault(index, set()).add(column)
    return set(columns) in indexes.values()


# --- the scanner ---------------------------------------------------------------------


@contextlib.contextmanager
def scanner_connection(path: str, source_url: str) -> Iterator[Any]:
    """The DuckDB file, with the MySQL source attached read-only as ``conveyor_source``."""
    import duckdb

    from conveyor.pipelines.netguard import pin_mysql

    target = scanner_target(source_url)
    if target is None:  # plan() never hands such a URL over
        raise ValueError("this MySQL URL needs options only dlt's path supports")
    host = pin_mysql(target["host"], target["port"], target["database"] or None)
    con = duckdb.connect(path, config={"preserve_insertion_order": False})
    try:
        con.execute(f"LOAD {_literal(mysql_extension() or '')}")
        for statement in _SETTINGS:
            con.execute(statement)
        parts = [
            f"HOST {_literal(host)}",
            f"PORT {int(target['port'])}",
            f"USER {_literal(target['user'])}",
        ]
        if target["password"]:
            parts.append(f"PASSWORD {_literal(target['password'])}")
        if target["database"]:
            parts.append(f"DATABASE {_literal(target['database'])}")
        con.execute(f"CREATE TEMPORARY SECRET {ALIAS} (TYPE mysql, {', '.join(parts)})")
        con.execute(f"ATTACH '' AS {ALIAS} (TYPE mysql, SECRET {ALIAS}, READ_ONLY)")
        yield con
    finally:
        con.close()


def table_size(con: Any, table: DirectTable) -> int:
    """The source table's size as MySQL reports it (data + indexes are not read: data)."""
    query = (
        "SELECT data_length FROM information_schema.tables WHERE table_schema = "
        f"{_literal(table.schema)} AND table_name = {_literal(table.name)}"
    )
    row = con.execute(f"SELECT * FROM mysql_query({_literal(ALIAS)}, {_literal(query)})").fetchone()
    return int(row[0] or 0) if row else 0


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
