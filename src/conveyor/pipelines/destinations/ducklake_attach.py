"""Where a DuckLake is and how DuckDB attaches it: the catalog file or pinned PostgreSQL URL,
the data folder or S3 endpoint, the DuckDB extensions loaded from their PyPI wheels (never
downloaded), the ATTACH and S3 secret statements, and an in-memory DuckDB with the lake
attached. The configuration itself is ``conveyor.pipelines.destinations.ducklake``.
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from conveyor.settings import Settings

if TYPE_CHECKING:
    from conveyor.pipelines.destinations.ducklake import DucklakeConfig

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


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def sql_ident(*parts: str) -> str:
    return ".".join('"' + p.replace('"', '""') + '"' for p in parts)


LAKE = "lake"  # the name the lake is attached as


def attach_sql(cfg: DucklakeConfig, settings: Settings, *, alias: str = LAKE) -> str:
    """``ATTACH 'ducklake:...' AS <alias> (DATA_PATH ..., METADATA_SCHEMA ...)``; the
    catalog pinned (it holds the password: never log it)."""
    if is_postgres(cfg):
        from conveyor.pipelines.direct import conninfo

        catalog = f"postgres:{conninfo(pinned_catalog(cfg))}"
        schema = f", METADATA_SCHEMA {sql_literal(cfg.metadata_schema)}"
    else:
        catalog, schema = str(catalog_file(cfg, settings)), ""
    return (
        f"ATTACH IF NOT EXISTS {sql_literal('ducklake:' + catalog)} AS {sql_ident(alias)} "
        f"(DATA_PATH {sql_literal(data_url(cfg, settings))}{schema})"
    )


def s3_secret_sql(cfg: DucklakeConfig) -> str:
    endpoint, tls = s3_endpoint(cfg)
    region = cfg.region_name or "us-east-1"
    return (
        "CREATE TEMPORARY SECRET conveyor_lake_s3 (TYPE S3, "
        f"KEY_ID {sql_literal(str(cfg.aws_access_key_id))}, "
        f"SECRET {sql_literal(str(cfg.aws_secret_access_key))}, "
        f"REGION {sql_literal(region)}, ENDPOINT {sql_literal(endpoint)}, "
        f"URL_STYLE 'path', USE_SSL {'true' if tls else 'false'}, "
        f"SCOPE {sql_literal(cfg.data_path)})"
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

    table = f"{sql_ident(cfg.metadata_schema)}.ducklake_snapshot"
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
            con.execute(f"LOAD {sql_literal(file)}")
        if on_s3(cfg):
            con.execute(s3_secret_sql(cfg))
        con.execute(attach_sql(cfg, settings))
        con.execute(f"USE {sql_ident(LAKE)}")
        yield con
    finally:
        with contextlib.suppress(Exception):
            con.execute(f"USE memory; DETACH {sql_ident(LAKE)}")
        con.close()
