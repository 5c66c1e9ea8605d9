"""DuckDB files: the embedded default destination."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from conveyor.pipelines.config import TypeConfig
from conveyor.pipelines.contract import Capabilities, DestinationType, Landing, TypeContext
from conveyor.pipelines.destinations.duck_incremental import (
    duck_incremental as _duck_incremental,
)
from conveyor.pipelines.destinations.duck_sql import ALIAS as _ALIAS
from conveyor.pipelines.destinations.duck_sql import ident as _ident
from conveyor.pipelines.destinations.duck_sql import literal as _literal
from conveyor.pipelines.direct import DirectTable, check_required, conninfo, postgres_extension
from conveyor.pipelines.failures import TransientFailure, TypeFailure
from conveyor.pipelines.netguard import pin_conninfo
from conveyor.pipelines.target import DltTarget, default_dataset
from conveyor.settings import Settings

if TYPE_CHECKING:
    from conveyor.pipelines.resolved import ResolvedConnector, RunStats


class DuckdbConfig(TypeConfig):
    """A DuckDB database file (default: ``CONVEYOR_HOME/data/conveyor.duckdb``)."""

    CONNECTION_FIELDS: ClassVar[frozenset[str]] = frozenset({"path"})
    PATH_FIELDS: ClassVar[frozenset[str]] = frozenset({"path"})

    path: str | None = None
    dataset_name: str | None = None  # default: one per connector


# --- runtime (dlt and duckdb are imported lazily) ----------------------------------


def database_path(cfg: DuckdbConfig, settings: Settings) -> Path:
    """The DuckDB file: the configured path or ``CONVEYOR_HOME/data/conveyor.duckdb``."""
    path = Path(cfg.path).expanduser() if cfg.path else settings.data_dir / "conveyor.duckdb"
    return path if path.is_absolute() else settings.data_dir / path


def confined_path(cfg: DuckdbConfig, settings: Settings) -> Path:
    """``database_path`` resolved, refused unless inside the allowed roots."""
    from conveyor.pipelines import paths

    return paths.check(database_path(cfg, settings), field="destination.path", settings=settings)


def build(cfg: DuckdbConfig, *, settings: Settings, connector_id: int) -> DltTarget:
    import dlt

    path = confined_path(cfg, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials

    credentials = DuckDbCredentials(
        str(path),
        # Rows of a copied table have no order to keep; letting DuckDB insert out of order
        # roughly halves the load of a large Parquet file (measured on 6M rows).
        global_config={"preserve_insertion_order": False},
    )
    return DltTarget(
        destination=dlt.destinations.duckdb(credentials),
        dataset_name=cfg.dataset_name or default_dataset(connector_id),
        # Arrow batches go to Parquet and DuckDB reads those natively (no normalize step).
        loader_file_format="parquet",
        description=f"DuckDB file {path}",
    )


def check(cfg: DuckdbConfig, *, settings: Settings) -> str:
    """Open the file read-write and create and drop a table in it."""
    import duckdb

    path = confined_path(cfg, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    try:
        con.execute("CREATE TABLE IF NOT EXISTS main._conveyor_check (x INTEGER)")
        con.execute("DROP TABLE main._conveyor_check")
    finally:
        con.close()
    return f"can write to {path}"


def drop(
    cfg: DuckdbConfig, *, settings: Settings, connector_id: int, tables: list[str]
) -> list[str]:
    """Drop the tables (and dlt's nested ``<table>__*`` ones) from the connector's dataset,
    in one transaction; the ones dropped."""
    import duckdb

    path = confined_path(cfg, settings)
    if not path.exists():
        return []
    dataset = cfg.dataset_name or default_dataset(connector_id)
    con = duckdb.connect(str(path))
    try:
        present = con.execute(
            "SELECT table_name FROM duckdb_tables()"
            " WHERE database_name = current_database() AND schema_name = ?",
            [dataset],
        ).fetchall()
        dropped = owned_tables([r[0] for r in present], tables)
        con.execute("BEGIN")
        for name in dropped:
            con.execute(f"DROP TABLE {_ident(dataset, name)}")
        con.execute("COMMIT")
    finally:
        con.close()
    return dropped


def owned_tables(present: list[str], tables: list[str]) -> list[str]:
    """Of the tables ``present`` in a dataset, those named in ``tables`` and their nested
    tables (dlt names a list column's table ``<table>__<column>``), children first."""
    wanted = set(tables)
    found = [t for t in present if t in wanted or any(t.startswith(f"{w}__") for w in wanted)]
    return sorted(found, key=lambda t: (-t.count("__"), t))


# --- the direct copy (database to database, see ``conveyor.pipelines.direct``) -----
# Whole tables here; cursor reads and merges in ``duck_incremental``, the SQL text both
# write in ``duck_sql``.


class DuckdbWriter:
    """Whole tables from PostgreSQL (and MySQL: ``direct_mysql``) into the DuckDB file:
    DuckDB's own PostgreSQL scanner (the extension shipped on PyPI as
    ``duckdb-extension-postgres-scanner``) reads each table with parallel binary ``COPY`` and
    inserts it in the same statement."""

    max_identifier_length: int | None = None

    def available(self) -> bool:
        """Only with the PostgreSQL scanner extension installed."""
        return postgres_extension() is not None

    def plan_source(self, cfg: Any, url: str) -> Any:
        """Whole tables from MySQL/MariaDB through DuckDB's MySQL scanner (None: dlt)."""
        from conveyor.pipelines import direct_mysql

        return direct_mysql.plan(cfg, self, url) if direct_mysql.is_mysql(url) else None

    def run(
        self,
        connector: ResolvedConnector,
        tables: list[DirectTable],
        settings: Settings,
        stats: RunStats,
    ) -> None:
        _to_duckdb(connector, tables, settings, stats)


WRITER = DuckdbWriter()


def _to_duckdb(
    connector: ResolvedConnector, tables: list[DirectTable], settings: Settings, stats: RunStats
) -> None:
    from conveyor.pipelines.readonly import read_only_url
    from conveyor.pipelines.sources.sql_database import connection_url
    from conveyor.pipelines.target import default_dataset

    path = confined_path(connector.destination, settings)  # type: ignore[arg-type]
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset = connector.destination.dataset_name or default_dataset(connector.id)  # type: ignore[attr-defined]
    # Read-only in PostgreSQL too, not only in DuckDB's ATTACH: the session option survives
    # anything the scanner sends.
    src_url = read_only_url(connection_url(connector.source))  # type: ignore[arg-type]
    from conveyor.pipelines import direct_mysql

    if direct_mysql.is_mysql(src_url):  # DuckDB's MySQL scanner (direct_mysql.plan)
        with direct_mysql.scanner_connection(str(path), src_url) as con:
            for table in tables:
                if table.incremental:
                    _duck_incremental(con, dataset, table, stats, connector.pipeline_name)
                else:
                    _duck_table(con, dataset, table, stats, size=direct_mysql.table_size)
        return
    with scanner_connection(str(path), src_url) as con:
        for table in tables:
            if table.incremental:
                _duck_incremental(con, dataset, table, stats, connector.pipeline_name)
            else:
                _duck_table(con, dataset, table, stats)


@contextlib.contextmanager
def scanner_connection(path: str, source_url: str) -> Iterator[Any]:
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


def _pg_size(con: Any, table: DirectTable) -> int:
    """The PostgreSQL source table's size (DuckDB does not say how many bytes it read)."""
    size_query = f"SELECT pg_relation_size({_literal(_ident(table.schema, table.name))}::regclass)"
    row = con.execute(
        f"SELECT * FROM postgres_query({_literal(_ALIAS)}, {_literal(size_query)})"
    ).fetchone()
    return int(row[0] or 0) if row else 0


def _duck_table(
    con: Any,
    dataset: str,
    table: DirectTable,
    stats: RunStats,
    size: Callable[[Any, DirectTable], int] = _pg_size,
) -> None:
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
        check_required(existing, table)
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
    source_bytes = size(con, table)
    con.execute("COMMIT")
    stats.rows[table.dest] = stats.rows.get(table.dest, 0) + int(rows)
    stats.bytes += source_bytes


# --- the type ---------------------------------------------------------------------


class FileLocked(TransientFailure):
    @classmethod
    def recognise(cls, exc: BaseException) -> TypeFailure | None:
        if is_locked(exc):
            return cls(
                "The DuckDB file is in use by another process; try again when that run ends."
            )
        return None


def is_locked(exc: BaseException) -> bool:
    """True when another process holds the DuckDB file (one writer at a time)."""
    return "could not set lock on file" in str(exc).lower()


class DuckdbDestination(DestinationType):
    """A DuckDB file: the embedded default."""

    name = "duckdb"
    title = "DuckDB"
    config_model = DuckdbConfig
    capabilities = Capabilities(merge=True, incremental=True, direct_copy=True, lands_in="tables")
    failures = (FileLocked,)

    def build(self, config: Any, context: TypeContext) -> Any:
        return build(config, settings=context.settings, connector_id=context.connector_id or 0)

    def check(self, config: Any, context: TypeContext) -> str:
        return check(config, settings=context.settings)

    def local_paths(self, config: Any, settings: Settings) -> list[tuple[str, str]]:
        return [("path", str(database_path(config, settings)))]

    def direct_writer(self) -> Any:
        return WRITER

    def drop_tables(self, config: Any, context: TypeContext, tables: list[str]) -> list[str]:
        return drop(
            config, settings=context.settings, connector_id=context.connector_id or 0, tables=tables
        )

    def where(self, config: Any, settings: Settings) -> str:
        return f"DuckDB file {database_path(config, settings)}"

    def landing(self, config: Any, context: TypeContext, tables: list[str]) -> Landing:
        path = database_path(config, context.settings)
        schema = context.dataset(config.dataset_name)
        places = tuple(f"{schema}.{t}" for t in tables)
        query = f'duckdb {path} -c "SELECT * FROM {places[0]} LIMIT 10"' if places else ""
        return Landing(
            f"DuckDB file {path}, schema {schema}", places, query, _STAGING.format(schema)
        )


# dlt stages merge loads in a schema of their own beside the connector's: explained on the
# connector page rather than dropped (the next merge would create it again).
_STAGING = (
    "A schema {0}_staging may sit beside it: dlt stages rows there before merging them "
    "into {0}. It is emptied after each load, so it holds no data between runs."
)
