"""Where a file transfer writes: a folder (local, S3, SFTP) with its manifest of what was
copied. Destination types hand these out (``DestinationType.open_sink``); the transfer
itself is ``conveyor.pipelines.transfer``."""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

CHUNK = 8 << 20
# S3 parts: files above this size go up as multipart uploads of this part size.
MULTIPART_PART_SIZE = 16 << 20


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


def fs_path(url: str) -> str:
    """fsspec path for a URL: strip file:// (local) and keep bucket/key for s3 and sftp."""
    if url.startswith("file://"):
        return url[len("file://") :]
    return url


class FilesSink:
    """A filesystem, S3 or SFTP directory."""

    def __init__(self, loc: Any, state_name: str, subdir: str | None) -> None:
        self.fs, url = loc.open()
        self.base = fs_path(url).rstrip("/")
        if subdir:
            self.base = f"{self.base}/{subdir}"
        self.state_name = state_name  # the manifest's name (``TypeContext.state_name``)
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
        path = f"{self.base}/.conveyor/transfers/{self.state_name}.json"
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
        with src_fs.open(fs_path(f.url), "rb") as src, self.fs.open(tmp, "wb", **kwargs) as dst:
            while chunk := src.read(CHUNK):
                dst.write(chunk)
        if tmp != target:
            # Written aside and renamed, so a reader never sees half a file.
            if self.fs.exists(target):
                self.fs.rm_file(target)
            self.fs.mv(tmp, target)
