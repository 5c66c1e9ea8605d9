"""File-transfer connectors: copy files as they are, remembering what was copied.

A manifest of transferred files (path, size, modification time) is kept at the destination
(``.conveyor/transfers/connector_<id>.json``) so a fresh worker continues where the last
run stopped; for a REST upload endpoint it is kept under ``CONVEYOR_HOME``. A file that
fails is left out of the manifest and retried next run; the others carry on.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from conveyor.pipelines.contract import TypeContext
from conveyor.pipelines.failures import TransientFailure
from conveyor.pipelines.resolved import ResolvedConnector, RunStats
from conveyor.pipelines.sinks import MULTIPART_PART_SIZE, Manifest, SourceFile, safe_relative
from conveyor.pipelines.sources.filesystem import FilesystemSourceConfig, location
from conveyor.settings import Settings

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

log = logging.getLogger("conveyor.pipelines.transfer")

SAVE_EVERY = 50
__all__ = [
    "MULTIPART_PART_SIZE",
    "Manifest",
    "SourceFile",
    "TransferIncomplete",
    "list_source",
    "run",
    "safe_relative",
]


class TransferIncomplete(TransientFailure):
    """Some files failed; the rest were transferred and are remembered."""


def list_source(cfg: FilesystemSourceConfig) -> tuple[AbstractFileSystem, list[SourceFile]]:
    from dlt.common.storages.fsspec_filesystem import glob_files

    from conveyor.pipelines.sources.filesystem import check_inside, local_folder, require_folder

    require_folder(cfg)  # an absent folder is a failure, not "nothing new to copy"
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


def _sink(connector: ResolvedConnector, settings: Settings) -> Any:
    dst = connector.destination_info
    if dst.capabilities.file_transfer:
        context = TypeContext(
            settings=settings, connector_id=connector.id, state_key=connector.state_key
        )
        return dst.open_sink(connector.destination, context)
    from conveyor.errors import ValidationFailed
    from conveyor.pipelines.registry import list_types

    takers = [t.title for t in list_types("destination") if t.capabilities.file_transfer]
    raise ValidationFailed.field(
        "destination.type",
        f"files can be transferred as they are to {', '.join(takers)}, "
        f"not to {connector.destination_type}",
    )
