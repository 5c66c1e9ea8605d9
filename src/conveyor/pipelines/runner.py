"""Build and run one connector's dlt pipeline (or file transfer) and collect what it did."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from conveyor.db.models import Connector
from conveyor.domain.vocabulary import merged_config, secret_values
from conveyor.errors import ValidationFailed
from conveyor.pipelines import direct, transfer, waiting
from conveyor.pipelines.contract import TypeContext
from conveyor.pipelines.failures import DataFailure
from conveyor.pipelines.registry import get_type, validate_config
from conveyor.pipelines.resolved import ResolvedConnector, RunStats
from conveyor.secrets import SecretBox
from conveyor.settings import Settings

__all__ = ["ResolvedConnector", "RunStats", "merged_config", "resolve", "run", "summary"]

log = logging.getLogger("conveyor.pipelines")
T = TypeVar("T")


# dlt schema contracts for the connector's schema change policy. A table new to the
# destination is created with all its columns whatever the policy (dlt applies the columns
# contract to existing tables only).
SCHEMA_CONTRACTS: dict[str, dict[str, str] | None] = {
    "propagate": None,
    "ignore_new_columns": {"columns": "discard_value"},
    "pause": {"columns": "freeze"},
}


class SchemaChangeRefused(DataFailure):
    """A run met new source columns under the ``pause`` policy: nothing of it was loaded,
    and the flow pauses the connector with this message as the reason."""

    def __init__(self, table: str, column: str) -> None:
        super().__init__(
            f"The source has a new column {column!r} in table {table!r} and this connector's "
            "schema change policy is 'pause': nothing was loaded and the connector was paused. "
            "Choose 'propagate' (add the column) or 'ignore_new_columns', then resume it."
        )
        self.table, self.column = table, column


def resolve(connector: Connector, box: SecretBox) -> ResolvedConnector:
    """Merge base config and overrides, decrypt secrets, validate both sides."""
    src_info = get_type("source", connector.source.type)
    dst_info = get_type("destination", connector.destination.type)
    # Stored before overrides were checked on save, or written past the service: an
    # override that moves where an endpoint connects never runs.
    for info, override, loc in (
        (src_info, connector.source_config_override, "source_config_override"),
        (dst_info, connector.destination_config_override, "destination_config_override"),
    ):
        problems = info.fixed_in(override or {}, loc)
        if problems:
            raise ValidationFailed(problems)
    src_plain = box.decrypt_config(
        merged_config(connector.source.config, connector.source_config_override),
        src_info.secret_fields,
    )
    dst_plain = box.decrypt_config(
        merged_config(connector.destination.config, connector.destination_config_override),
        dst_info.secret_fields,
    )
    secrets = secret_values(src_plain, src_info.secret_fields) + secret_values(
        dst_plain, dst_info.secret_fields
    )
    return ResolvedConnector(
        id=connector.id,
        name=connector.name,
        source_type=src_info.name,
        source=validate_config("source", src_info.name, src_plain, loc="source"),
        destination_type=dst_info.name,
        destination=validate_config("destination", dst_info.name, dst_plain, loc="destination"),
        secrets=tuple(secrets),
        state_key=connector.state_key,
        schema_changes=connector.schema_changes or "propagate",
    )


# A DuckDB file takes one writing process at a time, and connectors share the default file:
# a run that finds it locked waits for the other run instead of failing.
LOCK_ATTEMPTS = 6
LOCK_BACKOFF = 5.0


def run(connector: ResolvedConnector, settings: Settings) -> RunStats:
    """Move the data; raises on failure (the caller explains and records it).

    Whole tables go database to database where that is possible, everything else with dlt.
    """
    # Judged again at every run, with this run's settings: a root an admin removed, or a
    # symlink swapped in since the save, stops the run here.
    connector.source_info.confine(connector.source, settings, loc="source")
    connector.destination_info.confine(connector.destination, settings, loc="destination")
    from conveyor.pipelines import netguard

    # Every connection of the run is checked from here on (netguard); its fields first, so
    # a refusal names the field.
    netguard.activate(settings)
    netguard.check_connector(connector, settings)
    if connector.is_transfer:
        return transfer.run(connector, settings)
    # Direct copies add new columns themselves: other policies go through dlt's contracts.
    plan = direct.plan(connector) if connector.schema_changes == "propagate" else None
    if plan is None:
        return _when_unlocked(connector, lambda: run_dlt(connector, settings))
    stats = RunStats()
    started = time.monotonic()
    # Each part waits for the file on its own: tables already copied are not copied again.
    _when_unlocked(connector, lambda: direct.run(connector, plan.tables, settings, stats))
    stats.steps["copy"] = time.monotonic() - started
    rest = plan.rest
    if rest is not None:
        from dataclasses import replace

        more = _when_unlocked(connector, lambda: run_dlt(replace(connector, source=rest), settings))
        stats.rows.update(more.rows)
        stats.bytes += more.bytes
        stats.schema_changes += more.schema_changes
        stats.notes += more.notes
        stats.steps.update(more.steps)
    return stats


def _when_unlocked(connector: ResolvedConnector, step: Callable[[], T]) -> T:
    """Run ``step``, waiting and trying again while another run holds the DuckDB file; the
    run record says so while it waits (``waiting.report``), and no longer once it tries."""
    for attempt in range(1, LOCK_ATTEMPTS + 1):
        try:
            return step()
        except Exception as exc:
            if attempt == LOCK_ATTEMPTS or not _file_locked(exc):
                raise
            wait = LOCK_BACKOFF * attempt
            log.warning(
                "connector %s: destination file locked; retrying in %.0fs", connector.id, wait
            )
            waiting.report(
                "waiting for the DuckDB file held by another process, "
                f"attempt {attempt + 1} of {LOCK_ATTEMPTS}"
            )
            time.sleep(wait)
            waiting.report(None)
    raise AssertionError("unreachable")


def _file_locked(exc: BaseException) -> bool:
    from conveyor.pipelines.destinations.duckdb import is_locked
    from conveyor.pipelines.explain import causes

    return any(is_locked(e) for e in causes(exc))


def run_dlt(connector: ResolvedConnector, settings: Settings) -> RunStats:
    """One dlt pipeline per connector, its state kept in the destination."""
    import dlt

    context = TypeContext(
        settings=settings, connector_id=connector.id, state_key=connector.state_key
    )
    target = connector.destination_info.build(connector.destination, context)
    source = connector.source_info.build(connector.source, context)
    stats = RunStats()
    resources = _resources(source)
    if not connector.destination_info.capabilities.merge:
        for resource in resources:
            if resource.write_disposition == "merge":
                resource.apply_hints(write_disposition="append")
                stats.notes.append(
                    f"{resource.name}: files cannot be updated in place; merge loaded as append"
                )

    if target.local_state:
        # No dlt state at the destination (a REST sink): keep the working dir between runs
        # so incremental cursors and unsent batches survive.
        pipelines_dir = settings.home / "pipelines"
        pipelines_dir.mkdir(parents=True, exist_ok=True)
        cleanup = None
    else:
        # A fresh directory every run: state and schema are restored from the destination,
        # exactly as on a new worker pod.
        cleanup = Path(tempfile.mkdtemp(prefix=f"conveyor-{connector.id}-"))
        pipelines_dir = cleanup
    try:
        pipeline = dlt.pipeline(
            pipeline_name=connector.pipeline_name,
            destination=target.destination,
            dataset_name=target.dataset_name,
            pipelines_dir=str(pipelines_dir),
        )
        started = time.monotonic()
        contract = SCHEMA_CONTRACTS.get(connector.schema_changes)
        with _environment({**RUN_ENV, **target.dlt_env}):
            try:
                _run_pipeline(pipeline, source, target, stats, contract)
            except Exception as exc:
                _refused(exc)
                raise
        log.info(
            "connector %s: pipeline finished in %.1fs", connector.id, time.monotonic() - started
        )
        return stats
    finally:
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)


# dlt stages merge loads in a schema `<dataset>_staging` and by default keeps the last
# load's rows there after the merge: a copy of data nobody asked for, which the connector
# page explains as empty. Emptied after each load instead (the schema itself stays: the next
# merge needs it).
RUN_ENV = {"LOAD__TRUNCATE_STAGING_DATASET": "true"}


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """dlt reads some settings only from config providers: set them for this run only,
    unless the operator set them already."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def _refused(exc: BaseException) -> None:
    """Raise SchemaChangeRefused when ``exc`` is dlt refusing a new column (freeze)."""
    from dlt.common.schema.exceptions import DataValidationError

    from conveyor.pipelines.explain import causes

    for cause in causes(exc):
        if isinstance(cause, DataValidationError) and cause.schema_entity == "columns":
            raise SchemaChangeRefused(cause.table_name, cause.column_name) from exc


def _run_pipeline(
    pipeline: Any, source: Any, target: Any, stats: RunStats, contract: Any = None
) -> None:
    if pipeline.has_pending_data:
        # The last run extracted data it could not deliver: deliver that first (dlt
        # would otherwise skip this run's extract), then read what is new.
        pending = pipeline.run()
        _collect(pipeline, pending, stats)
        stats.notes.append(
            f"delivered {len(pending.loads_ids)} load package(s) left pending by the last run"
        )
    info = pipeline.run(
        source, loader_file_format=target.loader_file_format, schema_contract=contract
    )
    _collect(pipeline, info, stats)


def _resources(source: Any) -> list[Any]:
    if isinstance(source, list):
        return source
    return list(source.resources.selected.values())


def _collect(pipeline: Any, info: Any, stats: RunStats) -> None:
    trace = pipeline.last_trace
    for step in getattr(trace, "steps", None) or []:
        if step.step in ("extract", "normalize", "load") and step.started_at and step.finished_at:
            seconds = (step.finished_at - step.started_at).total_seconds()
            stats.steps[step.step] = stats.steps.get(step.step, 0.0) + seconds
    normalize = trace.last_normalize_info if trace else None
    if normalize is not None:
        for table, count in normalize.row_counts.items():
            if not table.startswith("_dlt"):
                stats.rows[table] = stats.rows.get(table, 0) + int(count)
    for package in info.load_packages:
        for job in package.jobs.get("completed_jobs", []):
            if not job.job_file_info.table_name.startswith("_dlt"):
                stats.bytes += int(job.file_size or 0)
        for table_name, table in (package.schema_update or {}).items():
            if table_name.startswith("_dlt"):
                continue
            found = table.get("columns") or {}
            columns = [c for c in found if not c.startswith("_dlt")]
            if columns:
                types = {c: found[c].get("data_type") for c in columns if found[c].get("data_type")}
                stats.schema_changes.append(
                    {"table": table_name, "columns": columns, "types": types}
                )


def summary(stats: RunStats, seconds: float) -> str:
    """One line for the run history: rows per table, size and duration."""
    if stats.files is not None:
        text = f"Transferred {stats.files:,} file(s), {_size(stats.bytes)}, in {seconds:.1f} s."
    elif not stats.total_rows:  # none, or tables that got 0 rows (a fast-path delta)
        text = f"No new rows (in {seconds:.1f} s)."
    else:
        tables = ", ".join(f"{t}: {n:,}" for t, n in sorted(stats.rows.items()))
        text = (
            f"Loaded {stats.total_rows:,} rows into {len(stats.rows)} table(s) ({tables}), "
            f"{_size(stats.bytes)}, in {seconds:.1f} s."
        )
    if stats.schema_changes:
        changed = ", ".join(
            f"{c['table']} (+{len(c['columns'])} columns)" for c in stats.schema_changes
        )
        text += f" Schema changes: {changed}."
    if stats.steps:
        text += " Steps: " + ", ".join(f"{k} {v:.1f} s" for k, v in stats.steps.items()) + "."
    for note in stats.notes:
        text += f" Note: {note}."
    return text


def _size(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} bytes"
