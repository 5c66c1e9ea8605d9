"""PostgreSQL as a destination."""

from __future__ import annotations

from pydantic import Field

from conveyor.pipelines.config import DatabaseConnection, TypeConfig
from conveyor.pipelines.target import DltTarget, default_dataset
from conveyor.settings import Settings


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
