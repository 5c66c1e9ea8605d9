"""PostgreSQL as a destination."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from conveyor.pipelines import failures
from conveyor.pipelines.config import DatabaseConnection, TypeConfig
from conveyor.pipelines.contract import Capabilities, DestinationType, Landing, TypeContext
from conveyor.pipelines.destinations.pg_copy import pg_columns, pipe
from conveyor.pipelines.destinations.pg_incremental import pg_incremental as _pg_incremental
from conveyor.pipelines.destinations.pg_incremental import prepare_target
from conveyor.pipelines.direct import DirectTable, conninfo
from conveyor.pipelines.netguard import pin_conninfo
from conveyor.pipelines.target import DltTarget, default_dataset
from conveyor.settings import Settings

if TYPE_CHECKING:
    from conveyor.pipelines.resolved import ResolvedConnector, RunStats


class PostgresDestinationConfig(DatabaseConnection, TypeConfig):
    """A PostgreSQL database; ``schema`` is where the tables land (the dlt dataset)."""

    target_schema: str | None = Field(default=None, alias="schema")


# --- runtime (dlt and psycopg are imported lazily) ---------------------------------

# dlt's postgres credentials insist on a password even where the server trusts the client
# (measured): a placeholder the server ignores stands in for "no password".
_NO_PASSWORD = "conveyor-no-password"


def connection_url(cfg: PostgresDestinationConfig, *, for_dlt: bool = False) -> str:
    from sqlalchemy.engine import URL, make_url

    if cfg.connection_string:
        url = make_url(cfg.connection_string)
    else:
        url = URL.create(
            "postgresql",
            username=cfg.username,
            password=cfg.password,
            host=cfg.host,
            port=cfg.port,
            database=cfg.database,
        )
    url = url.set(drivername="postgresql")
    if for_dlt and not url.password:
        url = url.set(password=_NO_PASSWORD)
    return url.render_as_string(hide_password=False)


def dataset(cfg: PostgresDestinationConfig, connector_id: int) -> str:
    return cfg.target_schema or default_dataset(connector_id)


def build(cfg: PostgresDestinationConfig, *, settings: Settings, connector_id: int) -> DltTarget:
    import dlt

    from conveyor.pipelines.netguard import pin_url

    return DltTarget(
        # Two load files at a time: ADBC holds a file's row groups in memory while copying.
        destination=dlt.destinations.postgres(
            # Checked and pinned (libpq hostaddr): psycopg2 and ADBC bypass Python sockets.
            pin_url(connection_url(cfg, for_dlt=True)),
            max_parallel_load_jobs=2,
        ),
        dataset_name=dataset(cfg, connector_id),
        # Parquet loaded through ADBC (binary COPY): skips dlt's slow row-by-row normalize.
        loader_file_format="parquet",
        description="PostgreSQL",
        # Files of at most 500k rows keep that memory bounded (one 6M-row file: ~2 GB).
        dlt_env={"DATA_WRITER__FILE_MAX_ITEMS": "500000"},
    )


def check(cfg: PostgresDestinationConfig, *, settings: Settings) -> str:
    """Connect; create a schema and a table in a transaction that is rolled back."""
    import psycopg

    from conveyor.pipelines.netguard import pin_url

    url = pin_url(connection_url(cfg))
    with psycopg.connect(url, connect_timeout=10) as conn:
        with conn.cursor() as cur:
            cur.execute('CREATE SCHEMA IF NOT EXISTS "conveyor_check"')
            cur.execute('CREATE TABLE "conveyor_check"."write_check" (x integer)')
            cur.execute('INSERT INTO "conveyor_check"."write_check" VALUES (1)')
        conn.rollback()
        host = conn.info.host
        database = conn.info.dbname
    return f"can create tables in database {database} on {host}"


def drop(cfg: PostgresDestinationConfig, *, connector_id: int, tables: list[str]) -> list[str]:
    """Drop the tables (and dlt's nested ``<table>__*`` ones) from the connector's schema, in
    one transaction; the ones dropped."""
    import psycopg
    from psycopg import sql

    from conveyor.pipelines.destinations.duckdb import owned_tables
    from conveyor.pipelines.netguard import pin_url

    schema = dataset(cfg, connector_id)
    with psycopg.connect(pin_url(connection_url(cfg)), connect_timeout=10) as conn:
        present = conn.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = %s AND table_type = 'BASE TABLE'",
            (schema,),
        ).fetchall()
        dropped = owned_tables([r[0] for r in present], tables)
        for name in dropped:
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(schema, name)))
    return dropped


# --- the direct copy (database to database, see ``conveyor.pipelines.direct``) -----
# Whole tables here; cursor reads and merges in ``pg_incremental``, the COPY pipe and the
# catalog read both use in ``pg_copy``.


class PostgresWriter:
    """Whole tables from PostgreSQL into PostgreSQL (``conveyor.pipelines.direct``): the
    source's ``COPY ... TO STDOUT`` piped into the destination's ``COPY ... FROM STDIN``
    (binary when the column types match, text otherwise)."""

    # PostgreSQL cuts identifiers at 63 bytes: dlt names tables and columns to fit.
    max_identifier_length: int | None = 63

    def available(self) -> bool:
        return True

    def run(
        self,
        connector: ResolvedConnector,
        tables: list[DirectTable],
        settings: Settings,
        stats: RunStats,
    ) -> None:
        _to_postgres(connector, tables, stats)


WRITER = PostgresWriter()


def _to_postgres(connector: ResolvedConnector, tables: list[DirectTable], stats: RunStats) -> None:
    import psycopg

    from conveyor.pipelines.readonly import read_only_url
    from conveyor.pipelines.sources.sql_database import connection_url

    schema_name = dataset(connector.destination, connector.id)  # type: ignore[arg-type]
    # libpq connects without Python sockets: checked and pinned to the checked address here.
    src_url = read_only_url(connection_url(connector.source))  # type: ignore[arg-type]
    src_info = pin_conninfo(conninfo(src_url))
    dst_info = pin_conninfo(conninfo(connection_url(connector.destination)))  # type: ignore[arg-type]
    with (
        psycopg.connect(src_info, connect_timeout=30) as src,
        psycopg.connect(dst_info, connect_timeout=30) as dst,
    ):
        # One snapshot for every table of the run: the copies are consistent with each other.
        src.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        for table in tables:
            if table.incremental:
                _pg_incremental(src, dst, schema_name, table, stats, connector.pipeline_name)
            else:
                _pg_table(src, dst, schema_name, table, stats)


def _pg_table(src: Any, dst: Any, dataset: str, table: DirectTable, stats: RunStats) -> None:
    from psycopg import sql

    target = sql.Identifier(dataset, table.dest)
    dst.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(dataset)))
    existing = pg_columns(dst, dataset, table.dest)
    columns = prepare_target(dst, dataset, table, existing, stats)
    binary = all(columns.get(c.dest, (c.pg_type,))[0] == c.pg_type for c in table.columns)
    if existing is not None and table.disposition == "replace":
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
            size = pipe(src, select.as_string(src), writer.write)
        rows = wcur.rowcount
    dst.commit()
    stats.rows[table.dest] = stats.rows.get(table.dest, 0) + max(rows, 0)
    stats.bytes += size


# --- the type ---------------------------------------------------------------------


class PostgresDestination(DestinationType):
    """Tables in a PostgreSQL database."""

    name = "postgres"
    title = "PostgreSQL"
    config_model = PostgresDestinationConfig
    capabilities = Capabilities(merge=True, incremental=True, direct_copy=True, lands_in="tables")
    failures = failures.DATABASE

    def build(self, config: Any, context: TypeContext) -> Any:
        return build(config, settings=context.settings, connector_id=context.connector_id or 0)

    def check(self, config: Any, context: TypeContext) -> str:
        return check(config, settings=context.settings)

    def direct_writer(self) -> Any:
        return WRITER

    def drop_tables(self, config: Any, context: TypeContext, tables: list[str]) -> list[str]:
        return drop(config, connector_id=context.connector_id or 0, tables=tables)

    def landing(self, config: Any, context: TypeContext, tables: list[str]) -> Landing:
        from sqlalchemy.engine import make_url

        url = make_url(connection_url(config))
        schema = context.dataset(config.target_schema)
        places = tuple(f'"{schema}"."{t}"' for t in tables)
        parts = [f"host={url.host}", f"port={url.port or 5432}", f"dbname={url.database}"]
        if url.username:
            parts.append(f"user={url.username}")  # never the password: psql asks for it
        query = (
            f"psql \"{' '.join(parts)}\" -c 'SELECT * FROM {places[0]} LIMIT 10'" if places else ""
        )
        where = f"PostgreSQL {url.host}:{url.port or 5432}/{url.database}, schema {schema}"
        return Landing(where, places, query, _STAGING.format(schema))


_STAGING = (
    "A schema {0}_staging may sit beside it: dlt stages rows there before merging them "
    "into {0}. It is emptied after each load, so it holds no data between runs."
)
