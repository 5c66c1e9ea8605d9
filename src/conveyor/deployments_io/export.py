"""Connectors to deployment files, deterministically: the same database gives
byte-identical files (fixed key order, sorted config keys, file names from connector names),
so a directory under version control shows real changes only.

Secrets are never written: a set secret becomes an ``${ENV_VAR}`` reference named after
its source/destination (or connector) and field, e.g. ``${DEPLOY_SECRET_SOURCE_ORDERS_DB_PASSWORD}``
(``DEPLOY_SECRET_*`` is what apply reads by default; ``CONVEYOR_*`` never).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session
from yaml.nodes import ScalarNode

from conveyor.db.models import Connector
from conveyor.deployments_io.configs import path_fields
from conveyor.deployments_io.format import MAX_FILE_BYTES, secret_fields
from conveyor.deployments_io.loader import IGNORED_FILES
from conveyor.deployments_io.yamlsrc import implicit_tag
from conveyor.domain.connector_fields import TOP_LEVEL
from conveyor.domain.vocabulary import (
    ENTRYPOINT,
    FLOW_NAME,
    SCHEDULED_TAG,
    connector_tag,
    deployment_name,
)
from conveyor.pipelines.registry import Kind
from conveyor.settings import Settings

_KINDS: tuple[Kind, ...] = ("source", "destination")
_STR = "tag:yaml.org,2002:str"
HEADER = (
    "# Conveyor deployment file: one connector and its Prefect deployment.\n"
    "# Apply with `conveyor deployments apply DIR`; ${VARS} are read from the environment.\n"
)


class _Quoted(str):
    """A string written in double quotes (cron expressions, timezones, as in the seed)."""


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """Quotes a string that YAML 1.1 *or* 1.2 would read as something else ("0E0", "0o7",
    "yes"), so Conveyor's loader and any other YAML reader get the same string back."""

    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        tag: str = super().resolve(kind, value, implicit)
        if kind is ScalarNode and implicit[0] and tag == _STR:
            return implicit_tag(value)
        return tag


_Dumper.add_representer(
    _Quoted, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", str(v), style='"')
)


@dataclass
class ExportResult:
    """Files written (content changed), left as they were, and stale files found/removed."""

    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    env_vars: list[str] = field(default_factory=list)

    @property
    def files(self) -> int:
        return len(self.written) + len(self.unchanged)


def slug(name: str) -> str:
    """A file-name-safe form of a connector name: lower case, words joined by '-'."""
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-.") or "connector"


def env_name(*parts: str) -> str:
    """``DEPLOY_SECRET_SOURCE_ORDERS_DB_PASSWORD`` from ("source", "orders-db", "password")."""
    words = [re.sub(r"[^A-Za-z0-9]+", "_", p).strip("_").upper() for p in ("deploy_secret", *parts)]
    return "_".join(w for w in words if w)


def select_connectors(
    session: Session, *, names: Iterable[str] = (), tags: Iterable[str] = ()
) -> list[Connector]:
    """Connectors by id, optionally only those named or carrying one of the tags."""
    rows = list(session.scalars(select(Connector).order_by(Connector.id)).unique())
    names, tags = set(names), set(tags)
    if names:
        rows = [c for c in rows if c.name in names]
    if tags:
        rows = [c for c in rows if tags & set(c.tags or [])]
    return rows


def render_export(
    session: Session,
    settings: Settings,
    *,
    base_dir: Path | None = None,
    names: Iterable[str] = (),
    tags: Iterable[str] = (),
    file_names: Mapping[str, str] | None = None,
) -> tuple[dict[str, str], list[str]]:
    """(file name → YAML text, the environment variables the files reference).

    ``file_names`` (connector name → file name) keeps the names of files that already
    hold a connector; the others are named after the connector."""
    connectors = select_connectors(session, names=names, tags=tags)
    namer = _EnvNamer()
    files: dict[str, str] = {}
    keep = dict(file_names or {})
    used: set[str] = set(keep.values())
    for c in connectors:
        file_name = keep.get(c.name) or f"{slug(c.name)}.yaml"
        if (file_name in used and keep.get(c.name) != file_name) or file_name in IGNORED_FILES:
            file_name = f"{slug(c.name)}-{c.id}.yaml"
        used.add(file_name)
        doc = _document(c, settings, namer, base_dir)
        files[file_name] = HEADER + yaml.dump(
            doc,
            Dumper=_Dumper,
            sort_keys=False,
            default_flow_style=False,
            allow_unicode=True,
            width=1_000_000,
        )
    return files, sorted(namer.used)


def export_directory(
    path: str | Path,
    *,
    session: Session,
    settings: Settings,
    names: Iterable[str] = (),
    tags: Iterable[str] = (),
    prune: bool = False,
) -> ExportResult:
    """Write the files into ``path`` (only those whose content changed); with ``prune``,
    remove other deployment files there."""
    base = Path(path).absolute()
    base.mkdir(parents=True, exist_ok=True)
    files, env_vars = render_export(
        session, settings, base_dir=base, names=names, tags=tags, file_names=_existing(base)
    )
    result = ExportResult(env_vars=env_vars)
    for name, text in files.items():
        target = base / name
        data = text.encode()
        if target.exists() and target.read_bytes() == data:
            result.unchanged.append(name)
            continue
        tmp = target.with_name(f".{name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        result.written.append(name)
    from conveyor.deployments_io.loader import discover

    for p in discover(base):
        if p.name not in files:
            result.stale.append(p.name)
            if prune:
                p.unlink()
                result.removed.append(p.name)
    return result


def _existing(base: Path) -> dict[str, str]:
    """Connector name → file name for the files already in ``base`` (a file keeps its
    name when exported again, so version control shows a change, not a rename)."""
    from conveyor.deployments_io.loader import discover

    out: dict[str, str] = {}
    for p in discover(base):
        try:
            if p.stat().st_size > MAX_FILE_BYTES:
                continue
            data = yaml.load(p.read_bytes(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except (OSError, yaml.YAMLError):
            continue
        block = data.get("connector") if isinstance(data, dict) else None
        name = block.get("name") if isinstance(block, dict) else None
        if isinstance(name, str):
            out.setdefault(name.strip(), p.name)
    return out


class _EnvNamer:
    """Predictable variable names; a clash between two names gets the row id appended."""

    def __init__(self) -> None:
        self.owner: dict[str, tuple[str, int]] = {}
        self.used: set[str] = set()

    def __call__(
        self, scope: str, name: str, row_id: int, field_name: str, prefix: str = ""
    ) -> str:
        field_name = prefix + field_name
        var = env_name(scope, name, field_name)
        owner = self.owner.setdefault(var, (scope, row_id))
        if owner != (scope, row_id):
            var = env_name(scope, name, str(row_id), field_name)
        self.used.add(var)
        return var


def _document(
    c: Connector, settings: Settings, namer: _EnvNamer, base_dir: Path | None
) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": deployment_name(c.id, c.deployment_name)}
    if c.description is not None:
        doc["description"] = c.description
    doc.update(
        flow_name=FLOW_NAME,
        entrypoint=ENTRYPOINT,
        **{f.name: f.shown(getattr(c, f.name), settings) for f in TOP_LEVEL},
        parameters={"connector_id": c.id},
    )
    if c.schedule or c.timezone != "UTC":
        doc["schedule"] = {
            "cron": _Quoted(c.schedule) if c.schedule else None,
            "timezone": _Quoted(c.timezone),
        }
    markers = [connector_tag(c.id)] + ([SCHEDULED_TAG] if c.schedule else [])
    doc["tags"] = markers + list(c.tags or [])
    block: dict[str, Any] = {"name": c.name, "active": bool(c.is_active)}
    for kind in _KINDS:
        ep = c.source if kind == "source" else c.destination
        config = _config(kind, ep.type, ep.config, base_dir, partial(namer, kind, ep.name, ep.id))
        block[kind] = {"name": ep.name, "type": ep.type, "config": config}
        if kind == "destination" and c.destination.max_concurrent_runs is not None:
            block[kind]["max_concurrent_runs"] = c.destination.max_concurrent_runs
    for kind in _KINDS:
        ep = c.source if kind == "source" else c.destination
        override = getattr(c, f"{kind}_config_override") or {}
        if override:
            block[f"{kind}_config_override"] = _config(
                kind,
                ep.type,
                override,
                base_dir,
                partial(namer, "connector", c.name, c.id, prefix=f"{kind}_"),
                merged_with=ep.config,
            )
    doc["connector"] = block
    return doc


def _config(
    kind: str,
    type_name: str,
    config: dict[str, Any],
    base_dir: Path | None,
    var_for: Callable[[str], str],
    merged_with: dict[str, Any] | None = None,
) -> dict[str, Any]:
    secrets = secret_fields(kind, type_name)
    local = not {**(merged_with or {}), **config}.get("bucket")
    out: dict[str, Any] = {}
    for key in sorted(config):
        value = config[key]
        if value is None:
            continue
        if key in secrets:
            if value in ("", {}):
                continue
            if isinstance(value, dict):  # headers: each value its own variable
                value = {name: f"${{{var_for(f'{key}_{name}')}}}" for name in value}
            else:
                value = f"${{{var_for(key)}}}"
        elif local and key in path_fields(kind, type_name) and base_dir is not None:
            value = _relative(value, base_dir)
        out[key] = _sorted(value)
    return out


def _relative(value: Any, base_dir: Path) -> Any:
    """An absolute path inside the export directory, written relative to it."""
    if not isinstance(value, str) or not os.path.isabs(value):
        return value
    try:
        rel = Path(value).relative_to(base_dir)
    except ValueError:
        return value
    return rel.as_posix() or "."


def _sorted(value: Any) -> Any:
    # PostgreSQL's JSONB reorders object keys; sorting keeps exports identical across backends.
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value
