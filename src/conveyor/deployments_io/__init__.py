"""Connectors as code: deployment files exported from, checked against and applied to the
Conveyor database (``conveyor deployments ...`` and ``/api/v1/deployments/...``).

The database stays the single source of truth; applying a directory changes it through
the same services as the API (validation, outbox entry, audit), and the reconciler then
syncs Prefect as usual.

Python API (what ``conveyor up`` and the Helm seeding Job call)::

    from conveyor.deployments_io import apply_directory, load_directory

    loaded = load_directory("deployments")          # raises ValidationFailed: every problem,
                                                    # each with loc "file:line:col"
    with session_scope(settings.effective_database_url) as session:
        result = apply_directory("deployments", session=session, box=box, actor=SYSTEM)
        result.ids                                  # {connector name: id}

- ``load_directory(path, *, env=None, check_env=True, strict=True) -> LoadedDirectory``:
  reads the top-level ``*.yaml``/``*.yml`` files (``prefect.yaml`` ignored), checks the
  format, per-type configs, secrets (``${ENV_VAR}`` references resolved from ``env``,
  default ``os.environ``), relative paths (made absolute against the directory) and the
  rules across files. ``load_files(mapping, base_dir=...)`` does the same for in-memory
  files (the API).
- ``plan_directory(path, *, session, box, settings=None, prune=False, force=False) -> Plan``:
  what apply would do, field by field; reads only.
- ``apply_directory(path, *, session, box, actor, prune=False, force=False, settings=None,
  env=None, progress=None) -> ApplyResult``: plans, then applies in the caller's
  transaction (it flushes, never commits; an error leaves nothing behind). Idempotent.
  Connectors changed outside the files since the last apply (drift) are kept unless
  ``force``; ``prune`` deletes file-managed connectors no file names any more.
- ``export_directory(path, *, session, settings, names=(), tags=(), prune=False)`` and
  ``render_export(session, settings, base_dir=...)``: deterministic files, no secrets.
- ``render_prefect_yaml(loaded, settings) -> str`` and ``json_schema() -> dict``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from sqlalchemy.orm import Session

from conveyor.deployments_io.apply import ApplyResult, Progress, execute
from conveyor.deployments_io.export import ExportResult, export_directory, render_export
from conveyor.deployments_io.format import MAX_FILE_BYTES, DeploymentFile, json_schema
from conveyor.deployments_io.loader import (
    FileSpec,
    LoadedDirectory,
    load_directory,
    load_files,
)
from conveyor.deployments_io.plan import ConnectorChange, EndpointChange, Plan, make_plan
from conveyor.deployments_io.prefect_yaml import render_prefect_yaml
from conveyor.secrets import SecretBox
from conveyor.services.authz import Actor, require_role
from conveyor.settings import Settings, get_settings


def plan_directory(
    path: str | Path,
    *,
    session: Session,
    box: SecretBox,
    settings: Settings | None = None,
    prune: bool = False,
    force: bool = False,
    env: Mapping[str, str] | None = None,
) -> Plan:
    """What applying ``path`` would change; raises ValidationFailed on any problem."""
    loaded = load_directory(path, env=env)
    return make_plan(
        loaded,
        session=session,
        box=box,
        settings=settings or get_settings(),
        prune=prune,
        force=force,
    )


def apply_loaded(
    loaded: LoadedDirectory,
    *,
    session: Session,
    box: SecretBox,
    actor: Actor,
    prune: bool = False,
    force: bool = False,
    settings: Settings | None = None,
    progress: Progress | None = None,
) -> ApplyResult:
    """Apply already-loaded files (see ``apply_directory``)."""
    require_role(actor, "admin", "apply deployment files")
    settings = settings or get_settings()
    plan = make_plan(loaded, session=session, box=box, settings=settings, prune=prune, force=force)
    return execute(
        plan, session=session, box=box, actor=actor, settings=settings, progress=progress
    )


def apply_directory(
    path: str | Path,
    *,
    session: Session,
    box: SecretBox,
    actor: Actor,
    prune: bool = False,
    force: bool = False,
    settings: Settings | None = None,
    env: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> ApplyResult:
    """Apply every file of ``path`` in the caller's transaction (flushes, never commits)."""
    loaded = load_directory(path, env=env)
    return apply_loaded(
        loaded,
        session=session,
        box=box,
        actor=actor,
        prune=prune,
        force=force,
        settings=settings,
        progress=progress,
    )


__all__ = [
    "MAX_FILE_BYTES",
    "ApplyResult",
    "ConnectorChange",
    "DeploymentFile",
    "EndpointChange",
    "ExportResult",
    "FileSpec",
    "LoadedDirectory",
    "Plan",
    "apply_directory",
    "apply_loaded",
    "export_directory",
    "json_schema",
    "load_directory",
    "load_files",
    "make_plan",
    "plan_directory",
    "render_export",
    "render_prefect_yaml",
]
