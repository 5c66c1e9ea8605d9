"""Files on a local or NFS path, or in an S3 bucket, as a source."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from conveyor.pipelines import failures
from conveyor.pipelines.config import CopyOptions, FileFormat, S3Options, TypeConfig
from conveyor.pipelines.contract import Capabilities, CopyField, SourceType, TypeContext

if TYPE_CHECKING:
    from conveyor.settings import Settings


class FilesystemSourceConfig(CopyOptions, S3Options, TypeConfig):
    """CSV, JSONL or Parquet files matched by a glob; or files copied as they are."""

    CONNECTION_FIELDS: ClassVar[frozenset[str]] = frozenset({"bucket", "path"})
    PATH_FIELDS: ClassVar[frozenset[str]] = frozenset({"path"})

    path: str | None = None  # local/NFS directory, or the key prefix inside ``bucket``
    bucket: str | None = None  # S3 bucket name (or a full s3:// URL)
    file_pattern: str = "*"
    format: FileFormat | None = None  # default: from each file's extension
    table_name: str | None = None  # default: derived from the pattern
    csv_delimiter: str = Field(default=",", min_length=1, max_length=1)
    encoding: str = "utf-8"
    # parse: load rows into tables; transfer: copy the files as they are.
    mode: Literal["parse", "transfer"] = "parse"

    @model_validator(mode="after")
    def _where(self) -> FilesystemSourceConfig:
        if not self.path and not self.bucket:
            raise ValueError("give path (local/NFS) or bucket (S3)")
        return self

    @field_validator("file_pattern")
    @classmethod
    def _pattern_inside(cls, value: str) -> str:
        # Matches stay inside the folder: no absolute pattern, no '..' step out of it.
        if value.startswith(("/", "\\", "~")) or ".." in re.split(r"[/\\]", value):
            raise ValueError("must be relative to the folder, without '..' or a leading '/'")
        return value


# --- runtime (dlt, fsspec and pyarrow are imported lazily) --------------------------

_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


class FileReadError(Exception):
    """A file could not be read or parsed; the message names the file."""


def location(cfg: FilesystemSourceConfig) -> Any:
    from conveyor.pipelines.storage import files_location

    return files_location(cfg, path=cfg.path, bucket=cfg.bucket)


def local_folder(cfg: FilesystemSourceConfig) -> Any:
    """The source folder, resolved (None for S3): every file read must resolve inside it."""
    if cfg.bucket:
        return None
    from conveyor.pipelines import paths

    return paths.resolve(location(cfg).url)


def check_inside(folder: Any, file_url: str) -> None:
    """Refuse a matched file that resolves outside the folder (a symlink pointing out)."""
    if folder is None:
        return
    from dlt.common.storages.configuration import FilesystemConfiguration

    from conveyor.pipelines import paths

    local = FilesystemConfiguration.make_local_path(file_url)
    paths.inside(local, folder, field="path", what="the matched file")


def default_table_name(pattern: str) -> str:
    """``orders_*.csv`` -> ``orders``; a pattern with no fixed stem -> ``files``."""
    stem = pattern.rsplit("/", 1)[-1]
    for ch in "*?[":
        stem = stem.split(ch, 1)[0]
    stem = stem.rsplit(".", 1)[0] if "." in stem else stem
    stem = re.sub(r"[^0-9a-zA-Z]+", "_", stem).strip("_").lower()
    return stem or "files"


def file_format(cfg: FilesystemSourceConfig, file_name: str) -> str:
    if cfg.format:
        return cfg.format
    ext = os.path.splitext(file_name)[1].lower()
    try:
        return _EXTENSIONS[ext]
    except KeyError:
        raise FileReadError(
            f"{file_name}: cannot tell the format from the extension '{ext}'; "
            "set format to csv, jsonl or parquet"
        ) from None


def build(cfg: FilesystemSourceConfig) -> list[Any]:
    """One resource: the matching files, read in Arrow batches into one table."""
    import dlt
    from dlt.sources.filesystem import filesystem

    loc = location(cfg)
    disposition = cfg.effective_write_disposition()
    require_files(cfg, replace=disposition == "replace")
    # Only new or changed files on append/merge; replace re-reads every file.
    incremental: Any = (
        dlt.sources.incremental("modification_date") if disposition != "replace" else None
    )
    kwargs: dict[str, Any] = {"credentials": loc.credentials} if loc.credentials else {}
    files = filesystem(
        bucket_url=loc.file_url, file_glob=cfg.file_pattern, incremental=incremental, **kwargs
    )
    name = cfg.table_name or default_table_name(cfg.file_pattern)
    reader = dlt.transformer(name=name)(_reader(cfg, local_folder(cfg)))
    resource = files | reader
    resource.apply_hints(
        table_name=name,
        write_disposition=disposition,
        primary_key=cfg.primary_key or (),
    )
    if cfg.cursor_column:
        resource.apply_hints(
            incremental=dlt.sources.incremental(cfg.cursor_column, initial_value=cfg.initial_value)
        )
    return [resource]


def require_folder(cfg: FilesystemSourceConfig) -> None:
    """An absent local folder (an unmounted share, a renamed directory) fails the run before
    anything reaches the destination: read as "no files", it would empty a replaced table."""
    where = location(cfg)
    if where.protocol == "file" and not os.path.isdir(where.url):
        raise SourceMissing(
            f"The source folder {where.display()} does not exist or is not a folder (a share "
            "not mounted, a folder renamed?). Nothing was loaded; the destination is unchanged."
        )


def require_files(cfg: FilesystemSourceConfig, *, replace: bool) -> None:
    """``require_folder``; with ``replace`` also at least one matching file, since replacing
    a table with no file empties it. Appending or merging nothing is a run with no new rows."""
    require_folder(cfg)
    if replace and not list_files(cfg, limit=1):
        raise SourceMissing(
            f"No file matches {cfg.file_pattern} at {location(cfg).display()}: with write "
            "disposition replace this run would empty the table, so nothing was loaded; the "
            "destination is unchanged."
        )


def _reader(cfg: FilesystemSourceConfig, folder: Any) -> Any:
    def read(items: Any) -> Iterator[Any]:
        for item in items:
            check_inside(folder, item["file_url"])
            yield from read_file(cfg, item)

    return read


def read_file(cfg: FilesystemSourceConfig, item: Any) -> Iterator[Any]:
    """Arrow tables from one listed file (a dlt FileItemDict)."""
    fmt = file_format(cfg, item["file_name"])
    try:
        with item.open(mode="rb") as fh:
            if fmt == "csv":
                yield from _read_csv(cfg, fh)
            elif fmt == "jsonl":
                yield from _read_jsonl(fh)
            else:
                yield from _read_parquet(fh)
    except FileReadError:
        raise
    except Exception as exc:
        import pyarrow as pa

        if isinstance(exc, (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError)):
            raise FileReadError(f"{item['file_name']}: {fmt.upper()} {exc}") from exc
        raise


def _read_csv(cfg: FilesystemSourceConfig, fh: Any) -> Iterator[Any]:
    import pyarrow as pa
    from pyarrow import csv

    reader = csv.open_csv(
        fh,
        read_options=csv.ReadOptions(block_size=8 << 20, encoding=cfg.encoding),
        parse_options=csv.ParseOptions(delimiter=cfg.csv_delimiter),
    )
    for batch in reader:
        if batch.num_rows:
            yield pa.Table.from_batches([batch])


def _read_jsonl(fh: Any) -> Iterator[Any]:
    import pyarrow as pa
    from pyarrow import json

    for batch in json.open_json(fh, read_options=json.ReadOptions(block_size=8 << 20)):
        if batch.num_rows:
            yield pa.Table.from_batches([batch])


def _read_parquet(fh: Any) -> Iterator[Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(fh).iter_batches(batch_size=100_000):
        if batch.num_rows:
            yield pa.Table.from_batches([batch])


def list_files(cfg: FilesystemSourceConfig, limit: int | None = None) -> list[dict[str, Any]]:
    """The files the pattern matches: relative path, size and modification time."""
    from dlt.common.storages.fsspec_filesystem import glob_files

    loc = location(cfg)
    folder = local_folder(cfg)
    fs, _ = loc.open()
    out = []
    for item in glob_files(fs, loc.file_url, cfg.file_pattern):
        check_inside(folder, item["file_url"])
        out.append(
            {
                "path": item["relative_path"],
                "size": item.get("size_in_bytes"),
                "modified_at": item["modification_date"].isoformat()
                if item.get("modification_date")
                else None,
            }
        )
        if limit is not None and len(out) >= limit:
            break
    return out


def discover(cfg: FilesystemSourceConfig) -> dict[str, Any]:
    """Matching files (at most 1000), and the table they load into."""
    files = list_files(cfg, limit=1000)
    return {
        "location": location(cfg).display(),
        "pattern": cfg.file_pattern,
        "table": cfg.table_name or default_table_name(cfg.file_pattern),
        "files": files,
    }


def check(cfg: FilesystemSourceConfig) -> str:
    """List the location; say how many files match. A missing local folder is an error."""
    where = location(cfg)
    if where.protocol == "file" and not os.path.isdir(where.url):
        raise ValueError(f"the folder {where.display()} does not exist or is not a folder")
    files = list_files(cfg, limit=10_000)
    return f"{len(files)} file(s) match {cfg.file_pattern} at {location(cfg).display()}"


# --- the type ---------------------------------------------------------------------


class SourceMissing(failures.ConfigFailure):
    """The source folder is absent, or (replace) no file matches: a person must fix the path
    or the share (failure class config). Raised before dlt runs, so the destination keeps
    its rows."""


class UnreadableFile(failures.TerminalFailure):
    @classmethod
    def recognise(cls, exc: BaseException) -> failures.TypeFailure | None:
        if isinstance(exc, FileReadError):
            return cls(f"A source file could not be read: {failures.first_lines(str(exc))}")
        return None


class FilesystemSource(SourceType):
    """Files matched by a glob in a local/NFS folder or an S3 bucket."""

    name = "filesystem"
    title = "Files (local, NFS, S3)"
    config_model = FilesystemSourceConfig
    capabilities = Capabilities(merge=True, incremental=True, file_transfer=True)
    failures = (SourceMissing, UnreadableFile, *failures.S3)
    copy_form = (
        CopyField(
            "file_pattern",
            "File pattern",
            help="A glob such as orders/*.csv; empty: every file.",
            placeholder="*.csv",
        ),
        CopyField(
            "table_name",
            "Table name (optional)",
            help="Where the rows land; by default derived from the pattern.",
        ),
    )

    def build(self, config: Any, context: TypeContext) -> Any:
        return build(config)

    def check(self, config: Any, context: TypeContext) -> str:
        return check(config)

    def discover(self, config: Any, context: TypeContext) -> dict[str, Any]:
        return discover(config)

    def local_paths(self, config: Any, settings: Settings) -> list[tuple[str, str]]:
        # With a bucket, path is the key prefix inside it.
        return [] if config.bucket else super().local_paths(config, settings)

    def wants_transfer(self, config: Any) -> bool:
        return bool(config.mode == "transfer")
