"""PostgreSQL as a destination."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from conveyor.pipelines import failures
from conveyor.pipelines.config import DatabaseConnection, TypeConfig
from conveyor.pipelines.contract import Capabilities, DestinationType, Landing, TypeContext
from conveyor.pipelines.direct import DirectTable, check_required, conninfo
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
        check_required(existing, table)
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


def _pg_incremental(
    src: Any, dst: Any, dataset: str, table: DirectTable, stats: RunStats, pipeline: str
) -> None:
    """A cursor read or a merge (the fast path, ``conveyor.pipelines.direct``): the source's
    ``COPY (SELECT ... WHERE cursor >= last) TO STDOUT`` (its index serves the predicate) is
    piped into a temporary table, then one ``DELETE ... USING`` + ``INSERT`` (merge) or
    ``INSERT`` (append) writes it, and the new cursor goes into dlt's state in the same
    transaction. A new table is written straight, without the temporary one."""
    from psycopg import sql

    from conveyor.pipelines import cursor_state
    from conveyor.pipelines.direct import cursor_python, pg_literal, typed_initial_value

    def execute(query: str, params: list[Any]) -> list[tuple[Any, ...]]:
        cur = dst.execute(query, params)
        return cur.fetchall() if cur.description else []

    def qualify(name: str) -> str:
        return sql.Identifier(dataset, name).as_string(dst)

    target = sql.Identifier(dataset, table.dest)
    dst.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(dataset)))
    has_state = all(
        _pg_columns(dst, dataset, t) is not None
        for t in (cursor_state.STATE_TABLE, cursor_state.LOADS_TABLE)
    )
    state = cursor_state.read(execute, qualify, pipeline, "%s") if has_state else None
    cursor = table.cursor
    last = None
    if cursor is not None:
        last = cursor_state.last_value(state, pipeline, table.resource, cursor.name)
        if last is None:
            last = typed_initial_value(table)
    cols = sql.SQL(", ").join(sql.Identifier(c.dest) for c in table.columns)
    existing = _pg_columns(dst, dataset, table.dest)
    staged = sql.Identifier("conveyor_stage")
    direct_in = existing is None and (table.key_unique or table.disposition != "merge")

    def definition(c: Any) -> Any:
        return sql.SQL("{} {}{}").format(
            sql.Identifier(c.dest), sql.SQL(c.pg_type), sql.SQL(" NOT NULL" if c.not_null else "")
        )

    if existing is None:
        dst.execute(
            sql.SQL("CREATE TABLE {} ({})").format(
                target, sql.SQL(", ").join(definition(c) for c in table.columns)
            )
        )
        stats.schema_changes.append(
            {"table": table.dest, "columns": [c.dest for c in table.columns]}
        )
        existing = {c.dest: (c.pg_type, c.not_null) for c in table.columns}
    else:
        check_required(existing, table)
        added = [c for c in table.columns if c.dest not in existing]
        for c in added:
            dst.execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                    target, sql.Identifier(c.dest), sql.SQL(c.pg_type)
                )
            )
        if added:
            stats.schema_changes.append({"table": table.dest, "columns": [c.dest for c in added]})
    into = target
    if not direct_in:
        # The staging table has the source's own types: binary COPY always fits it.
        dst.execute(sql.SQL("DROP TABLE IF EXISTS pg_temp.{}").format(staged))
        dst.execute(
            sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
                staged,
                sql.SQL(", ").join(
                    sql.SQL("{} {}").format(sql.Identifier(c.dest), sql.SQL(c.pg_type))
                    for c in table.columns
                ),
            )
        )
        into = staged
        binary = True
    else:
        binary = all(existing.get(c.dest, (c.pg_type,))[0] == c.pg_type for c in table.columns)
    fmt = "binary" if binary else "text"
    insert = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT {})").format(into, cols, sql.SQL(fmt))
    with dst.cursor() as wcur:
        with wcur.copy(insert) as writer:
            size = _pipe(
                src, f"COPY ({table.select_sql(last)}) TO STDOUT (FORMAT {fmt})", writer.write
            )
        rows = max(wcur.rowcount, 0)
    if into is staged:
        dst.execute(sql.SQL("ANALYZE {}").format(staged))
        source: Any = staged
        if table.key and not table.key_unique:
            # A key the source does not hold unique: one row per key, the latest cursor wins.
            keys = sql.SQL(", ").join(sql.Identifier(k.dest) for k in table.key)
            order = (
                sql.SQL(", {} DESC NULLS LAST").format(sql.Identifier(cursor.dest))
                if cursor
                else sql.SQL("")
            )
            source = sql.SQL("(SELECT DISTINCT ON ({}) * FROM {} ORDER BY {}{})").format(
                keys, staged, keys, order
            )
        if cursor is not None and last is not None:
            # Rows carrying the last value are read again: those already loaded as they
            # are now are dropped (append: not added twice; merge: not counted as loaded).
            at = sql.SQL(pg_literal(last, cursor.pg_type))
            # With a key, the key's index finds each of these few rows: a nested loop, which
            # the planner, misjudging the semi-join, would otherwise not always take (seen:
            # 12 s through the whole table instead of 0.1 s).
            inner = (
                sql.SQL("")
                if table.key
                else sql.SQL("t.{} = {} AND ").format(sql.Identifier(cursor.dest), at)
            )
            if table.key:
                _ensure_key_index(dst, dataset, table)
                dst.execute("SET LOCAL enable_hashjoin = off")
                dst.execute("SET LOCAL enable_mergejoin = off")
            dst.execute(
                sql.SQL(
                    "DELETE FROM {} AS s WHERE s.{} = {} AND EXISTS (SELECT 1 FROM {} AS t"
                    " WHERE {}{})"
                ).format(
                    staged,
                    sql.Identifier(cursor.dest),
                    at,
                    target,
                    inner,
                    # The key's equality first: the destination's key index finds the row.
                    sql.SQL(" AND ").join(
                        [sql.SQL("t.{0} = s.{0}").format(sql.Identifier(k.dest)) for k in table.key]
                        + [
                            sql.SQL("t.{0} IS NOT DISTINCT FROM s.{0}").format(
                                sql.Identifier(c.dest)
                            )
                            for c in table.columns
                        ]
                    ),
                )
            )
            if table.key:
                dst.execute("SET LOCAL enable_hashjoin = on")
                dst.execute("SET LOCAL enable_mergejoin = on")
        if table.disposition == "merge":
            _ensure_key_index(dst, dataset, table)
            dst.execute(
                sql.SQL("DELETE FROM {} AS t USING {} AS s WHERE {}").format(
                    target,
                    staged,
                    sql.SQL(" AND ").join(
                        sql.SQL("t.{0} = s.{0}").format(sql.Identifier(k.dest)) for k in table.key
                    ),
                )
            )
        rows = dst.execute(
            sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} AS s").format(target, cols, cols, source)
        ).rowcount
    elif table.disposition == "merge":
        _ensure_key_index(dst, dataset, table)
    newest = None
    if cursor is not None and rows:
        found = dst.execute(
            sql.SQL("SELECT max({}) FROM {}").format(sql.Identifier(cursor.dest), into)
        ).fetchone()
        newest = found[0] if found else None
    if newest is not None and cursor is not None:
        value = cursor_python(newest, cursor.pg_type)
        if last is None or value > last:
            cursor_state.create_tables(execute, qualify, "varchar", "timestamp with time zone")
            new_state = cursor_state.advanced(
                state,
                pipeline=pipeline,
                dataset=dataset,
                destination="postgres",
                resource=table.resource,
                cursor=cursor.name,
                value=value,
                initial_value=typed_initial_value(table),
            )
            cursor_state.write(execute, qualify, new_state, "%s")
    dst.commit()
    stats.rows[table.dest] = stats.rows.get(table.dest, 0) + max(rows, 0)
    stats.bytes += size


def _ensure_key_index(dst: Any, dataset: str, table: DirectTable) -> None:
    """An index on the merge key at the destination (made once, kept): each merge then finds
    the rows it replaces without reading the whole table."""
    from psycopg import sql

    keys = [k.dest for k in table.key]
    qualified = sql.Identifier(dataset, table.dest).as_string(dst)
    found = dst.execute(
        "SELECT 1 FROM pg_index i WHERE i.indrelid = to_regclass(%s) AND"
        " (SELECT array_agg(a.attname::text ORDER BY k.n) FROM unnest(i.indkey::int2[])"
        " WITH ORDINALITY AS k(attnum, n) JOIN pg_attribute a ON a.attrelid = i.indrelid"
        " AND a.attnum = k.attnum WHERE k.n <= %s) = %s::text[]",
        (qualified, len(keys), keys),
    ).fetchone()
    if not found:
        dst.execute(
            sql.SQL("CREATE INDEX ON {} ({})").format(
                sql.Identifier(dataset, table.dest),
                sql.SQL(", ").join(sql.Identifier(k) for k in keys),
            )
        )


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
    "into {0}. It holds no data of its own and is emptied by each merge."
)
