"""DuckLake: tables whose catalog is in PostgreSQL (or a local file) and whose data files are
Parquet on S3 or in a shared folder.

Many writers in many pods are safe: each commit is a transaction in the catalog database,
and data files are written under new names, never changed in place. dlt's ``ducklake``
destination loads it; whole tables from PostgreSQL go in through DuckDB's scanner
(``conveyor.pipelines.direct``). The DuckDB extensions come from their PyPI wheels
(``duckdb-extension-ducklake``, ``-httpfs``, ``-postgres-scanner``) and are loaded from
their files, with DuckDB's own download of extensions switched off.
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from conveyor.pipelines import failures
from conveyor.pipelines.config import S3Options, SecretStrField, TypeConfig
from conveyor.pipelines.contract import Capabilities, DestinationType, Landing, TypeContext
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


# --- where it is --------------------------------------------------------------------


def is_postgres(cfg: DucklakeConfig) -> bool:
    return "://" in (cfg.catalog_url or "")


def on_s3(cfg: DucklakeConfig) -> bool:
    return cfg.data_path.startswith("s3://")


def catalog_file(cfg: DucklakeConfig, settings: Settings) -> Path | None:
    """A local catalog file (relative: under ``CONVEYOR_HOME/data``); None for PostgreSQL."""
    if is_postgres(cfg):
        return None
    path = Path(str(cfg.catalog_url)).expanduser()
    return path if path.is_absolute() else settings.data_dir / path


def data_folder(cfg: DucklakeConfig, settings: Settings) -> Path | None:
    """The local data folder (relative: under ``CONVEYOR_HOME/data``); None on S3."""
    if on_s3(cfg):
        return None
    path = Path(cfg.data_path).expanduser()
    return path if path.is_absolute() else settings.data_dir / path


def local_paths(cfg: DucklakeConfig, settings: Settings) -> list[tuple[str, str]]:
    out = []
    if (file := catalog_file(cfg, settings)) is not None:
        out.append(("catalog_url", str(file)))
    if (folder := data_folder(cfg, settings)) is not None:
        out.append(("data_path", str(folder)))
    return out


def data_url(cfg: DucklakeConfig, settings: Settings) -> str:
    """DATA_PATH: the S3 URL or the local folder (the same string every time: the catalog
    keeps the one it was created with)."""
    folder = data_folder(cfg, settings)
    return (str(folder) if folder is not None else cfg.data_path).rstrip("/")


def catalog_shown(cfg: DucklakeConfig, settings: Settings) -> str:
    """The catalog in words, never its password."""
    if not is_postgres(cfg):
        return f"catalog file {catalog_file(cfg, settings)}"
    from sqlalchemy.engine import make_url

    u = make_url(str(cfg.catalog_url))
    return f"PostgreSQL {u.host}:{u.port or 5432}/{u.database}"


# --- DuckDB and its extensions (imported lazily) ------------------------------------

_WHEELS = {
    "ducklake": "duckdb_extension_ducklake",
    "httpfs": "duckdb_extension_httpfs",
    "postgres_scanner": "duckdb_extension_postgres_scanner",
}


def extension_file(name: str) -> str | None:
    """The extension file that ships in its PyPI wheel for the installed DuckDB."""
    import importlib

    import duckdb

    try:
        module = importlib.import_module(_WHEELS[name])
    except ImportError:
        return None
    pattern = os.path.join(
        os.path.dirname(module.__file__ or ""),
        "extensions",
        f"v{duckdb.__version__}",
        "*.duckdb_extension",
    )
    found = glob.glob(pattern)
    return found[0] if found else None


def needed_extensions(cfg: DucklakeConfig) -> list[str]:
    names = ["ducklake"]
    if is_postgres(cfg):
        names.append("postgres_scanner")
    if on_s3(cfg):
        names.append("httpfs")
    return names


def extension_files(cfg: DucklakeConfig) -> list[str]:
    """The files to LOAD; a missing wheel is a clear error, never a download."""
    out = []
    for name in needed_extensions(cfg):
        found = extension_file(name)
        if found is None:
            raise RuntimeError(
                f"the DuckDB extension {name} is not installed (pip package "
                f"{_WHEELS[name].replace('_', '-')} for duckdb's version)"
            )
        out.append(found)
    return out


# DuckDB would otherwise download an extension it misses: every one is loaded from its file.
NO_DOWNLOADS = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}


def pinned_catalog(cfg: DucklakeConfig) -> str:
    """The catalog's PostgreSQL URL checked by the network policy and pinned to the checked
    address (libpq ``hostaddr``): DuckDB connects with libpq, bypassing Python sockets."""
    from conveyor.pipelines.netguard import pin_url

    return pin_url(str(cfg.catalog_url).replace("postgres://", "postgresql://", 1))


def s3_endpoint(cfg: DucklakeConfig) -> tuple[str, bool]:
    """(host[:port], TLS) of the S3 endpoint, checked by the network policy; a plain-HTTP
    endpoint is pinned to the checked address (DuckDB's httpfs bypasses Python sockets)."""
    from conveyor.pipelines.netguard import current_policy

    if not cfg.endpoint_url:
        return "s3.amazonaws.com", True
    parts = urlsplit(cfg.endpoint_url)
    tls = parts.scheme != "http"
    port = parts.port or (443 if tls else 80)
    host = parts.hostname or ""
    addresses = current_policy().check(host, port, shown=f"S3 endpoint {host}:{port}")
    if not tls:
        ip = str(addresses[0])
        host = f"[{ip}]" if ":" in ip else ip
    return f"{host}:{port}", tls


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _ident(*parts: str) -> str:
    return ".".join('"' + p.replace('"', '""') + '"' for p in parts)


LAKE = "lake"  # the name the lake is attached as


def attach_sql(cfg: DucklakeConfig, settings: Settings, *, alias: str = LAKE) -> str:
    """``ATTACH 'ducklake:...' AS <alias> (DATA_PATH ..., METADATA_SCHEMA ...)``; the
    catalog pinned (it holds the password: never log it)."""
    if is_postgres(cfg):
        from conveyor.pipelines.direct import conninfo

        catalog = f"postgres:{conninfo(pinned_catalog(cfg))}"
        schema = f", METADATA_SCHEMA {_literal(cfg.metadata_schema)}"
    else:
        catalog, schema = str(catalog_file(cfg, settings)), ""
    return (
        f"ATTACH IF NOT EXISTS {_literal('ducklake:' + catalog)} AS {_ident(alias)} "
        f"(DATA_PATH {_literal(data_url(cfg, settings))}{schema})"
    )


def s3_secret_sql(cfg: DucklakeConfig) -> str:
    endpoint, tls = s3_endpoint(cfg)
    region = cfg.region_name or "us-east-1"
    return (
        "CREATE TEMPORARY SECRET conveyor_lake_s3 (TYPE S3, "
        f"KEY_ID {_literal(str(cfg.aws_access_key_id))}, "
        f"SECRET {_literal(str(cfg.aws_secret_access_key))}, "
        f"REGION {_literal(region)}, ENDPOINT {_literal(endpoint)}, "
        f"URL_STYLE 'path', USE_SSL {'true' if tls else 'false'}, "
        f"SCOPE {_literal(cfg.data_path)})"
    )


def prepare_folders(cfg: DucklakeConfig, settings: Settings) -> None:
    """Refuse paths outside the allowed roots; create the local folders."""
    from conveyor.pipelines import paths

    paths.confine_paths(local_paths(cfg, settings), settings=settings, loc="destination")
    if (file := catalog_file(cfg, settings)) is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
    if (folder := data_folder(cfg, settings)) is not None:
        folder.mkdir(parents=True, exist_ok=True)


def ensure_catalog(cfg: DucklakeConfig, settings: Settings) -> None:
    """Create a PostgreSQL catalog that does not exist yet, one process at a time.

    The first ATTACH of a lake creates its catalog schema and tables; two writers doing
    that at once collide in PostgreSQL (measured: "duplicate key ... pg_namespace"). A
    session advisory lock keyed by the schema lets one create it while the others wait;
    once it exists, attaching needs no lock (DuckLake's own transactions take over)."""
    if not is_postgres(cfg):
        return
    import psycopg

    from conveyor.pipelines.direct import conninfo

    table = f"{_ident(cfg.metadata_schema)}.ducklake_snapshot"
    key = f"conveyor-ducklake:{cfg.metadata_schema}"
    with psycopg.connect(conninfo(pinned_catalog(cfg)), autocommit=True, connect_timeout=30) as pg:
        exists = "SELECT to_regclass(%s) IS NOT NULL"
        if pg.execute(exists, (table,)).fetchone() == (True,):
            return
        pg.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
        try:
            if pg.execute(exists, (table,)).fetchone() != (True,):
                with _attached(cfg, settings):
                    pass  # attaching creates the catalog
        finally:
            pg.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))


@contextlib.contextmanager
def lake_connection(cfg: DucklakeConfig, settings: Settings) -> Iterator[Any]:
    """An in-memory DuckDB with the lake attached as ``lake`` and in use."""
    prepare_folders(cfg, settings)
    ensure_catalog(cfg, settings)
    with _attached(cfg, settings) as con:
        yield con


@contextlib.contextmanager
def _attached(cfg: DucklakeConfig, settings: Settings) -> Iterator[Any]:
    import duckdb

    con = duckdb.connect(config={**NO_DOWNLOADS, "preserve_insertion_order": False})
    try:
        for file in extension_files(cfg):
            con.execute(f"LOAD {_literal(file)}")
        if on_s3(cfg):
            con.execute(s3_secret_sql(cfg))
        con.execute(attach_sql(cfg, settings))
        con.execute(f"USE {_ident(LAKE)}")
        yield con
    finally:
        with contextlib.suppress(Exception):
            con.execute(f"USE memory; DETACH {_ident(LAKE)}")
        con.close()


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
    credentials.extensions = [_literal(f) for f in extension_files(cfg)]
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
            con.execute(f"DROP TABLE {_ident(dataset, name)}")
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

    from conveyor.pipelines.destinations.duckdb import _ALIAS
    from conveyor.pipelines.direct import conninfo
    from conveyor.pipelines.netguard import pin_conninfo

    con.execute(f"LOAD {_literal(extension_file('postgres_scanner') or '')}")
    params = conninfo_to_dict(pin_conninfo(conninfo(source_url)))
    password = params.pop("password", None)
    secret = f", PASSWORD {_literal(str(password))}" if password else ""
    con.execute(f"CREATE TEMPORARY SECRET {_ALIAS} (TYPE postgres{secret})")
    con.execute(
        f"ATTACH {_literal(make_conninfo('', **params))} AS {_ALIAS} "
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
    "A schema {0}_staging may sit beside {0}: dlt stages rows there before merging them."
)
