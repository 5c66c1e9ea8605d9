"""File-transfer connectors: copy files as they are, remembering what was copied.

A manifest of transferred files (path, size, modification time) is kept at the destination
(``.conveyor/transfers/connector_<id>.json``) so a fresh worker continues where the last
run stopped; for a REST upload endpoint it is kept under ``CONVEYOR_HOME``. A file that
fails is left out of the manifest and retried next run; the others carry on.
"""

from __future__ import annotations

import json
import logging
import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conveyor.pipelines.runner import ResolvedConnector, RunStats
from conveyor.pipelines.sources.filesystem import FilesystemSourceConfig, location
from conveyor.settings import Settings

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

log = logging.getLogger("conveyor.pipelines.transfer")

CHUNK = 8 << 20
# S3 parts: files above this size go up as multipart uploads of this part size.
MULTIPART_PART_SIZE = 16 << 20
SAVE_EVERY = 50


class TransferIncomplete(Exception):
    """Some files failed; the rest were transferred and are remembered."""


@dataclass
class SourceFile:
    relative_path: str
    url: str
    size: int
    modified: str


class Manifest:
    """Which files were transferred, stored as JSON next to them (or under CONVEYOR_HOME)."""

    def __init__(self, fs: AbstractFileSystem, path: str) -> None:
        self.fs = fs
        self.path = path
        self.files: dict[str, dict[str, Any]] = {}

    def load(self) -> Manifest:
        if self.fs.exists(self.path):
            self.files = json.loads(self.fs.cat_file(self.path)).get("files", {})
        return self

    def done(self, f: SourceFile) -> bool:
        seen = self.files.get(f.relative_path)
        return bool(seen) and seen == {"size": f.size, "modified": f.modified}

    def add(self, f: SourceFile) -> None:
        self.files[f.relative_path] = {"size": f.size, "modified": f.modified}

    def save(self) -> None:
        self.fs.makedirs(posixpath.dirname(self.path), exist_ok=True)
        self.fs.pipe_file(self.path, json.dumps({"files": self.files}, sort_keys=True).encode())


def list_source(cfg: FilesystemSourceConfig) -> tuple[AbstractFileSystem, list[SourceFile]]:
    from dlt.common.storages.fsspec_filesystem import glob_files

    from conveyor.pipelines.sources.filesystem import check_inside, local_folder

    loc = location(cfg)
    folder = local_folder(cfg)
    fs, _ = loc.open()
    url = loc.file_url
    files = []
    for item in glob_files(fs, url, cfg.file_pattern):
        # A symlink in the folder pointing out of it fails the run; it is never copied.
        check_inside(folder, item["file_url"])
        files.append(
            SourceFile(
                relative_path=item["relative_path"],
                url=item["file_url"],
                size=int(item.get("size_in_bytes") or 0),
                modified=item["modification_date"].isoformat() if item["modification_date"] else "",
            )
        )
    return fs, sorted(files, key=lambda f: f.relative_path)


def safe_relative(name: str) -> str:
    """A source file's path below the destination folder: never absolute, never '..'
    (an S3 key can be anything, e.g. ``../secret.key``)."""
    parts = name.replace("\\", "/").split("/")
    if not name or name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
        from conveyor.errors import ValidationFailed

        raise ValidationFailed.field(
            "source.file_pattern",
            f"the file name {name!r} would be written outside the destination folder",
        )
    return name


def _fs_path(url: str) -> str:
    """fsspec path for a URL: strip file:// (local) and keep bucket/key for s3 and sftp."""
    if url.startswith("file://"):
        return url[len("file://") :]
    return url


def run(connector: ResolvedConnector, settings: Settings) -> RunStats:
    """Copy the new or changed files to the destination."""
    src_cfg = connector.source
    assert isinstance(src_cfg, FilesystemSourceConfig)
    src_fs, files = list_source(src_cfg)
    sink = _sink(connector, settings)
    manifest = sink.manifest().load()
    stats = RunStats(files=0)
    failures: list[str] = []
    pending = [f for f in files if not manifest.done(f)]
    skipped = len(files) - len(pending)
    for n, f in enumerate(pending, 1):
        try:
            sink.put(src_fs, f)
        except Exception as exc:
            log.warning("transfer of %s failed: %s", f.relative_path, exc)
            failures.append(f"{f.relative_path}: {type(exc).__name__}: {exc}")
            continue
        manifest.add(f)
        stats.files = (stats.files or 0) + 1
        stats.bytes += f.size
        if n % SAVE_EVERY == 0:
            manifest.save()
    manifest.save()
    stats.rows = {}
    if skipped:
        stats.notes.append(f"{skipped} file(s) already transferred earlier")
    if failures:
        shown = "; ".join(failures[:3]) + ("; ..." if len(failures) > 3 else "")
        raise TransferIncomplete(
            f"{len(failures)} of {len(pending)} file(s) could not be transferred and will be "
            f"retried next run ({stats.files} transferred): {shown}"
        )
    return stats


class _FilesSink:
    """A filesystem, S3 or SFTP directory."""

    def __init__(self, loc: Any, connector_id: int, subdir: str | None) -> None:
        self.fs, url = loc.open()
        self.base = _fs_path(url).rstrip("/")
        if subdir:
            self.base = f"{self.base}/{subdir}"
        self.connector_id = connector_id
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self.is_s3 = "s3" in protocols
        # A local folder: every file written (and the temporary beside it) must resolve
        # inside it, so a symlink planted in the destination cannot redirect a write.
        self.anchor = None
        if "file" in protocols or "local" in protocols:
            from conveyor.pipelines import paths

            self.anchor = paths.resolve(self.base)

    def _inside(self, path: str) -> None:
        if self.anchor is not None:
            from conveyor.pipelines import paths

            paths.inside(path, self.anchor, field="destination.path", what="the target")

    def manifest(self) -> Manifest:
        path = f"{self.base}/.conveyor/transfers/connector_{self.connector_id}.json"
        self._inside(path)
        return Manifest(self.fs, path)

    def put(self, src_fs: AbstractFileSystem, f: SourceFile) -> None:
        target = f"{self.base}/{safe_relative(f.relative_path)}"
        parent = posixpath.dirname(target)
        tmp = target if self.is_s3 else f"{parent}/.{posixpath.basename(target)}.part"
        self._inside(target)
        self._inside(tmp)
        if parent and not self.is_s3:
            self.fs.makedirs(parent, exist_ok=True)
        kwargs = {"block_size": MULTIPART_PART_SIZE} if self.is_s3 else {}
        with src_fs.open(_fs_path(f.url), "rb") as src, self.fs.open(tmp, "wb", **kwargs) as dst:
            while chunk := src.read(CHUNK):
                dst.write(chunk)
        if tmp != target:
            # Written aside and renamed, so a reader never sees half a file.
            if self.fs.exists(target):
                self.fs.rm_file(target)
            self.fs.mv(tmp, target)


class _UploadSink:
    """A REST endpoint taking one multipart/form-data upload per file."""

    def __init__(self, connector: ResolvedConnector, settings: Settings) -> None:
        import httpx
        from fsspec.implementations.local import LocalFileSystem

        self.cfg = connector.destination
        self.client = httpx.Client()
        self.fs = LocalFileSystem()
        self.dir = str(settings.home / "transfers")
        self.connector_id = connector.id

    def manifest(self) -> Manifest:
        return Manifest(self.fs, f"{self.dir}/connector_{self.connector_id}.json")

    def put(self, src_fs: AbstractFileSystem, f: SourceFile) -> None:
        from conveyor.pipelines.destinations.rest_api import RestApiDestinationConfig, send

        cfg = self.cfg
        assert isinstance(cfg, RestApiDestinationConfig)
        handles: list[Any] = []

        def request() -> dict[str, Any]:
            for h in handles:
                h.close()
            handles.clear()
            handles.append(src_fs.open(_fs_path(f.url), "rb"))
            name = posixpath.basename(f.relative_path)
            data = {k: str(v) for k, v in cfg.additional_fields.items()}
            data.setdefault("path", f.relative_path)
            return {"files": {cfg.file_field_name: (name, handles[0])}, "data": data}

        try:
            send(cfg, self.client, what=f"file {f.relative_path}", request=request)
        finally:
            for h in handles:
                h.close()


def _sink(connector: ResolvedConnector, settings: Settings) -> Any:
    dst = connector.destination
    if connector.destination_type == "rest_api":
        return _UploadSink(connector, settings)
    if connector.destination_type == "filesystem":
        from conveyor.pipelines.destinations.filesystem import location as fs_location

        return _FilesSink(fs_location(dst), connector.id, getattr(dst, "dataset_name", None))  # type: ignore[arg-type]
    if connector.destination_type == "sftp":
        from conveyor.pipelines.destinations.sftp import location as sftp_location

        return _FilesSink(sftp_location(dst), connector.id, getattr(dst, "dataset_name", None))  # type: ignore[arg-type]
    from conveyor.errors import ValidationFailed

    raise ValidationFailed.field(
        "destination.type",
        f"files can be transferred as they are to filesystem, S3, SFTP or a REST endpoint, "
        f"not to {connector.destination_type}",
    )
