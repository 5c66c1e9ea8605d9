"""Files on a local or NFS path, or in an S3 bucket, as a destination."""

from __future__ import annotations

import os
from typing import Any, ClassVar, Literal

from pydantic import model_validator

from conveyor.pipelines import failures
from conveyor.pipelines.config import FileFormat, S3Options, TypeConfig
from conveyor.pipelines.contract import Capabilities, DestinationType, Landing, TypeContext
from conveyor.pipelines.storage import Location, files_location
from conveyor.pipelines.target import DltTarget, default_dataset
from conveyor.settings import Settings


class FilesystemDestinationConfig(S3Options, TypeConfig):
    """Parquet, CSV or JSONL files under a path or an S3 bucket + prefix."""

    CONNECTION_FIELDS: ClassVar[frozenset[str]] = frozenset({"bucket", "path"})
    PATH_FIELDS: ClassVar[frozenset[str]] = frozenset({"path"})

    path: str | None = None
    bucket: str | None = None
    prefix: str = ""
    format: FileFormat = "parquet"
    dataset_name: str | None = None
    mode: Literal["parse", "transfer"] = "parse"

    @model_validator(mode="after")
    def _where(self) -> FilesystemDestinationConfig:
        if not self.path and not self.bucket:
            raise ValueError("give path (local/NFS) or bucket (S3)")
        return self


# --- runtime (dlt and fsspec are imported lazily) ----------------------------------


def location(cfg: FilesystemDestinationConfig) -> Location:
    return files_location(cfg, path=cfg.path, bucket=cfg.bucket, prefix=cfg.prefix)


def confined_location(cfg: FilesystemDestinationConfig, settings: Settings) -> Location:
    """``location``, refused when a local folder lies outside the allowed roots."""
    from conveyor.pipelines import paths

    paths.confine_paths(local_paths(cfg), settings=settings, loc="destination")
    return location(cfg)


def local_paths(cfg: FilesystemDestinationConfig) -> list[tuple[str, str]]:
    """The folder written into: path/prefix (transfers also add dataset_name); none in S3."""
    if cfg.bucket or not cfg.path:
        return []
    return [("path", os.path.join(cfg.path, cfg.prefix or "", cfg.dataset_name or ""))]


def build(cfg: FilesystemDestinationConfig, *, settings: Settings, connector_id: int) -> DltTarget:
    import dlt

    loc = confined_location(cfg, settings)
    return DltTarget(
        destination=dlt.destinations.filesystem(bucket_url=loc.url, credentials=loc.credentials),
        dataset_name=cfg.dataset_name or default_dataset(connector_id),
        loader_file_format=cfg.format,
        description=loc.display(),
    )


def check(cfg: FilesystemDestinationConfig, *, settings: Settings) -> str:
    return check_location(confined_location(cfg, settings))


def check_location(loc: Location) -> str:
    """Write, read back and delete a small file at the location."""
    import uuid

    fs, url = loc.open()
    base = url.split("://", 1)[1] if "://" in url and not url.startswith("file://") else url
    if url.startswith("file://"):
        base = url[len("file://") :]
    fs.makedirs(base, exist_ok=True)
    probe = f"{base.rstrip('/')}/.conveyor-check-{uuid.uuid4().hex[:8]}"
    fs.pipe_file(probe, b"ok")
    try:
        if fs.cat_file(probe) != b"ok":
            raise OSError(f"wrote {probe} but read back something else")
    finally:
        fs.rm_file(probe)
    return f"can write to {loc.display()}"


def drop(loc: Location, dataset: str, tables: list[str]) -> list[str]:
    """Delete the tables' folders (dlt writes ``<dataset>/<table>/<load files>``, nested
    tables beside them as ``<table>__*``) from the dataset's folder; the ones deleted."""
    from conveyor.pipelines.destinations.duckdb import owned_tables
    from conveyor.pipelines.sinks import fs_path

    fs, url = loc.open()
    base = f"{fs_path(url).rstrip('/')}/{dataset}"
    if not fs.exists(base):
        return []
    present = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(base, detail=False)]
    dropped = owned_tables(present, tables)
    for name in dropped:
        fs.rm(f"{base}/{name}", recursive=True)
    return dropped


# --- the type ---------------------------------------------------------------------


class FilesystemDestination(DestinationType):
    """Parquet, CSV or JSONL files in a local/NFS folder or an S3 bucket."""

    name = "filesystem"
    title = "Files (local, NFS, S3)"
    config_model = FilesystemDestinationConfig
    capabilities = Capabilities(incremental=True, file_transfer=True, lands_in="files")
    failures = failures.S3

    def build(self, config: Any, context: TypeContext) -> Any:
        return build(config, settings=context.settings, connector_id=context.connector_id or 0)

    def check(self, config: Any, context: TypeContext) -> str:
        return check(config, settings=context.settings)

    def local_paths(self, config: Any, settings: Settings) -> list[tuple[str, str]]:
        return local_paths(config)

    def wants_transfer(self, config: Any) -> bool:
        return bool(config.mode == "transfer")

    def drop_tables(self, config: Any, context: TypeContext, tables: list[str]) -> list[str]:
        loc = confined_location(config, context.settings)
        return drop(loc, config.dataset_name or default_dataset(context.connector_id or 0), tables)

    def open_sink(self, config: Any, context: TypeContext) -> Any:
        from conveyor.pipelines.sinks import FilesSink

        return FilesSink(location(config), context.state_name, config.dataset_name)

    def where(self, config: Any, settings: Settings) -> str:
        return location(config).display()

    def landing(self, config: Any, context: TypeContext, tables: list[str]) -> Landing:
        base = location(config).display().rstrip("/")
        folder = f"{base}/{context.dataset(config.dataset_name)}"
        return Landing(f"Files under {folder}/", tuple(f"{folder}/{t}/" for t in tables))
