"""DuckLake: tables whose catalog is in PostgreSQL (or a local file) and whose data files are
Parquet on S3 or in a shared folder.

Many writers in many pods are safe: each commit is a transaction in the catalog database,
and data files are written under new names, never changed in place. dlt's ``ducklake``
destination loads it; whole tables from PostgreSQL go in through DuckDB's scanner
(``conveyor.pipelines.direct``). The DuckDB extensions come from their PyPI wheels
(``duckdb-extension-ducklake``, ``-httpfs``, ``-postgres-scanner``) and are loaded from
their files, with DuckDB's own download of extensions switched off (``ducklake_attach``: where
the lake is, the extensions, the pinned ATTACH).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, model_validator

from conveyor.pipelines import failures
from conveyor.pipelines.config import S3Options, SecretStrField, TypeConfig
from conveyor.pipelines.contract import Capabilities, DestinationType, Landing, TypeContext
from conveyor.pipelines.destinations.ducklake_attach import (
    LAKE,
    NO_DOWNLOADS,
    catalog_file,
    catalog_shown,
    data_url,
    ensure_catalog,
    extension_file,
    extension_files,
    is_postgres,
    lake_connection,
    local_paths,
    on_s3,
    pinned_catalog,
    prepare_folders,
    s3_endpoint,
    sql_ident,
    sql_literal,
)
from conveyor.pipelines.failures import TransientFailure, TypeFailure
from conveyor.pipelines.target import DltTarget, default_dataset
from conveyor.settings import Settings

if TYPE_CHECKING:
    from conveyor.pipelines.direct import DirectTable
    from conveyor.pipelines.resolved import ResolvedConnector, RunStats

_PG_SCHEMES = ("postgresql", "postgres")
_IDENT = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"


class DucklakeConfig(S3Options, TypeConfig):
    """A DuckLake: ``catalog_url`` (PostgreSQL URL, or a local catalog file for one
    machine), ``data_path`` (``s3://bucket/prefix`` or a local/shared folder) and the S3
    fields for an S3 ``data_path``."""

    CONNECTION_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"catalog_url", "data_path", "metadata_schema"}
    )
    PATH_FIELDS: ClassVar[frozenset[str]] = frozenset({"data_path"})

    # A secret: a PostgreSQL URL holds the password.
    catalog_url: SecretStrField = None
    data_path: str = Field(min_length=1, max_length=1000)
    # The catalog's schema in PostgreSQL (several lakes can share one database).
    metadata_schema: str = Field(default="ducklake", pattern=_IDENT)
    dataset_name: str | None = Field(default=None, pattern=_IDENT)

    @model_validator(mode="after")
    def _complete(self) -> DucklakeConfig:
        url = self.catalog_url
        if not url:
            raise ValueError(
                "give catalog_url: a PostgreSQL URL (postgresql://user:password@host/database)"
                " or, for one machine, a local catalog file"
            )
        if "://" in url:
            scheme = url.split("://", 1)[0].split("+", 1)[0].lower()
            if scheme not in _PG_SCHEMES:
                raise ValueError(
                    f"catalog_url: a {scheme}:// catalog is not supported; use a PostgreSQL "
                    "URL (postgresql://...) or a local catalog file path"
                )
            from sqlalchemy.engine import make_url

            try:
                parsed = make_url(url)
            except Exception:
                raise ValueError("catalog_url is not a valid PostgreSQL URL") from None
            if not parsed.host or not parsed.database:
                raise ValueError("catalog_url needs a host and a database")
        if "://" in self.data_path:
            if not self.data_path.startswith("s3://") or len(self.data_path) <= len("s3://"):
                raise ValueError(
                    "data_path: give s3://bucket/prefix or a local (shared) folder; "
                    f"{self.data_path.split('://', 1)[0]}:// is not supported"
                )
            if not (self.aws_access_key_id and self.aws_secret_access_key):
                raise ValueError(
                    "an s3:// data_path needs aws_access_key_id and aws_secret_access_key "
                    "(DuckDB writes the files with these keys)"
                )
        return self


# --- dlt -----------------------------------------------------------------------------


def build(cfg: DucklakeConfig, *, settings: Settings, connector_id: int) -> DltTarget:
    import dlt
    from dlt.common.configuration.specs import ConnectionStringCredentials
    from dlt.destinations.impl.ducklake.configuration import DuckLakeCredentials

    prepare_folders(cfg, settings)
    ensure_catalog(cfg, settings)
    if is_postgres(cfg):
        catalog = ConnectionStringCredentials(pinned_catalog(cfg))
    else:
        catalog = ConnectionStringCredentials(f"duckdb:///{catalog_file(cfg, settings)}")
    storage: Any = data_url(cfg, settings)
    if on_s3(cfg):
        from dlt.common.storages.configuration import FilesystemConfiguration

        from conveyor.pipelines.storage import s3_credentials

        s3 = cfg
        if cfg.endpoint_url:
            endpoint, tls = s3_endpoint(cfg)
            s3 = cfg.model_copy(
                update={"endpoint_url": f"{'https' if tls else 'http'}://{endpoint}"}
            )
        storage = FilesystemConfiguration(bucket_url=storage, credentials=s3_credentials(s3))
    credentials = DuckLakeCredentials(
        ducklake_name=LAKE,
        metadata_schema=cfg.metadata_schema,
        catalog=catalog,
        storage=storage,
    )
    # Quoted paths: LOAD reads the extension from its wheel's file.
    credentials.extensions = [sql_literal(f) for f in extension_files(cfg)]
    credentials.global_config = {**NO_DOWNLOADS, "preserve_insertion_order": False}
    where = f"DuckLake ({catalog_shown(cfg, settings)}, data {data_url(cfg, settings)})"
    return DltTarget(
        destination=dlt.destinations.ducklake(credentials),
        dataset_name=cfg.dataset_name or default_dataset(connector_id),
        loader_file_format="parquet",
        description=where,
    )


def check(cfg: DucklakeConfig, *, settings: Settings) -> str:
    """Attach the lake, create a table and write a row in a transaction that is rolled back:
    the catalog answers and the data path takes files."""
    with lake_connection(cfg, settings) as con:
        con.execute("BEGIN")
        con.execute('CREATE SCHEMA IF NOT EXISTS "conveyor_check"')
        con.execute('CREATE TABLE "conveyor_check"."write_check" (x INTEGER)')
        con.execute('INSERT INTO "conveyor_check"."write_check" VALUES (1)')
        con.execute("ROLLBACK")
    return f"can write to DuckLake ({catalog_shown(cfg, settings)}, data {data_url(cfg, settings)})"


def drop(
    cfg: DucklakeConfig, *, settings: Settings, connector_id: int, tables: list[str]
) -> list[str]:
    """Drop the tables (and dlt's nested ``<table>__*`` ones) from the connector's dataset in
    one catalog transaction; the ones dropped."""
    from conveyor.pipelines.destinations.duckdb import owned_tables

    dataset = cfg.dataset_name or default_dataset(connector_id)
    with lake_connection(cfg, settings) as con:
        present = con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND schema_name = ?",
            [LAKE, dataset],
        ).fetchall()
        dropped = owned_tables([r[0] for r in present], tables)
        con.execute("BEGIN")
        for name in dropped:
            con.execute(f"DROP TABLE {sql_ident(dataset, name)}")
        con.execute("COMMIT")
    return dropped


# --- the direct copy (database to database, see ``conveyor.pipelines.direct``) -----


class DucklakeWriter:
    """Whole tables from PostgreSQL into the lake: DuckDB's PostgreSQL scanner reads each
    table (parallel binary ``COPY``) and inserts it into the attached lake in the same
    statement, one catalog transaction per table."""

    max_identifier_length: int | None = None

    def available(self) -> bool:
        return all(extension_file(n) is not None for n in ("ducklake", "postgres_scanner"))

    def run(
        self,
        connector: ResolvedConnector,
        tables: list[DirectTable],
        settings: Settings,
        stats: RunStats,
    ) -> None:
        from conveyor.pipelines.destinations import duckdb as duck
        from conveyor.pipelines.readonly import read_only_url
        from conveyor.pipelines.sources.sql_database import connection_url

        cfg: DucklakeConfig = connector.destination  # type: ignore[assignment]
        dataset = cfg.dataset_name or default_dataset(connector.id)
        src_url = read_only_url(connection_url(connector.source))  # type: ignore[arg-type]
        with lake_connection(cfg, settings) as con:
            _attach_source(con, src_url)
            for table in tables:
                # The same SQL as into a DuckDB file, on the attached lake (``USE lake``).
                if getattr(table, "incremental", False):
                    # Cursor reads and merges (MERGE INTO works on a lake), where the
                    # fast path offers them; never a whole copy in their place.
                    incremental = getattr(duck, "_duck_incremental", None)
                    if incremental is None:
                        raise RuntimeError(f"{table.name}: no incremental copy into DuckLake")
                    incremental(con, dataset, table, stats, connector.pipeline_name)
                else:
                    duck._duck_table(con, dataset, table, stats)


def _attach_source(con: Any, source_url: str) -> None:
    """The source attached read-only as ``conveyor_source`` (password in a temporary
    secret: DuckDB's errors repeat the ATTACH string)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from conveyor.pipelines.destinations.duck_sql import ALIAS as _ALIAS
    from conveyor.pipelines.direct import conninfo
    from conveyor.pipelines.netguard import pin_conninfo

    con.execute(f"LOAD {sql_literal(extension_file('postgres_scanner') or '')}")
    params = conninfo_to_dict(pin_conninfo(conninfo(source_url)))
    password = params.pop("password", None)
    secret = f", PASSWORD {sql_literal(str(password))}" if password else ""
    con.execute(f"CREATE TEMPORARY SECRET {_ALIAS} (TYPE postgres{secret})")
    con.execute(
        f"ATTACH {sql_literal(make_conninfo('', **params))} AS {_ALIAS} "
        f"(TYPE postgres, SECRET {_ALIAS}, READ_ONLY)"
    )


WRITER = DucklakeWriter()


# --- the type ---------------------------------------------------------------------


class CommitConflict(TransientFailure):
    """Another writer committed a conflicting change to the same table first."""

    @classmethod
    def recognise(cls, exc: BaseException) -> TypeFailure | None:
        low = str(exc).lower()
        if "transaction conflict" in low or ("conflict" in low and "ducklake" in low):
            return cls(
                "Another writer changed the same DuckLake table at the same time; the run "
                "is tried again."
            )
        return None


class CatalogUnreachable(TransientFailure):
    @classmethod
    def recognise(cls, exc: BaseException) -> TypeFailure | None:
        low = str(exc).lower()
        if "unable to connect to postgres" in low or "failed to connect to postgres" in low:
            return cls(
                "Cannot reach the DuckLake catalog's PostgreSQL server: "
                f"{failures.first_lines(str(exc), 1)}"
            )
        return None


class DucklakeDestination(DestinationType):
    """A DuckLake: catalog in PostgreSQL (or a local file), data on S3 or a shared folder."""

    name = "ducklake"
    title = "DuckLake (catalog in PostgreSQL, data on S3 or a shared folder)"
    config_model = DucklakeConfig
    capabilities = Capabilities(merge=True, incremental=True, direct_copy=True, lands_in="tables")
    failures = (CommitConflict, CatalogUnreachable, *failures.S3)

    def build(self, config: Any, context: TypeContext) -> Any:
        return build(config, settings=context.settings, connector_id=context.connector_id or 0)

    def check(self, config: Any, context: TypeContext) -> str:
        return check(config, settings=context.settings)

    def local_paths(self, config: Any, settings: Settings) -> list[tuple[str, str]]:
        return local_paths(config, settings)

    def direct_writer(self) -> Any:
        return WRITER

    def single_machine(self, config: Any, settings: Settings) -> str | None:
        # Data in a local folder is fine on a shared (ReadWriteMany) volume; a catalog
        # file is not: one process at a time, on one machine.
        file = catalog_file(config, settings)
        return None if file is None else f"keeps its catalog in the local file {file}"

    def drop_tables(self, config: Any, context: TypeContext, tables: list[str]) -> list[str]:
        return drop(
            config, settings=context.settings, connector_id=context.connector_id or 0, tables=tables
        )

    def where(self, config: Any, settings: Settings) -> str:
        return f"DuckLake ({catalog_shown(config, settings)}, data {data_url(config, settings)})"

    def landing(self, config: Any, context: TypeContext, tables: list[str]) -> Landing:
        settings = context.settings
        schema = context.dataset(config.dataset_name)
        places = tuple(f"{LAKE}.{schema}.{t}" for t in tables)
        return Landing(
            f"{self.where(config, settings)}, schema {schema}",
            places,
            query_for(config, settings, places[0]) if places else "",
            _NOTE.format(schema),
        )


def query_for(cfg: DucklakeConfig, settings: Settings, table: str) -> str:
    """A ``duckdb`` command that attaches the lake and reads ``table`` (no password: libpq
    takes it from PGPASSWORD or ~/.pgpass; S3 keys from a secret the reader creates)."""
    if is_postgres(cfg):
        from sqlalchemy.engine import make_url

        u = make_url(str(cfg.catalog_url))
        parts = [f"dbname={u.database}", f"host={u.host}", f"port={u.port or 5432}"]
        if u.username:
            parts.append(f"user={u.username}")
        catalog = "postgres:" + " ".join(parts)
        options = f", METADATA_SCHEMA '{cfg.metadata_schema}'"
    else:
        catalog, options = str(catalog_file(cfg, settings)), ""
    attach = (
        f"ATTACH 'ducklake:{catalog}' AS {LAKE} (DATA_PATH '{data_url(cfg, settings)}'{options})"
    )
    return f'duckdb -c "LOAD ducklake; {attach}; SELECT * FROM {table} LIMIT 10"'


_NOTE = (
    "Read it with DuckDB: INSTALL ducklake, then ATTACH the catalog as shown (PostgreSQL "
    "asks for the password; an S3 data path needs a CREATE SECRET (TYPE S3, ...) first). "
    "A schema {0}_staging may sit beside {0}: dlt stages rows there before merging them; "
    "it is emptied after each load."
)
