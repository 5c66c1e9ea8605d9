"""Reading deployment files: the format, per-type configs, secrets from the environment,
relative paths, and the checks across files.

Every problem is collected (never only the first) as a FieldProblem whose loc is
``file:line:col``; ``load_directory`` raises one ValidationFailed listing them all. A file
with a wrong type in one place still has the rest of it checked.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from conveyor.deployments_io.configs import resolve_override, resolve_values, validate
from conveyor.deployments_io.format import (
    MAX_FILE_BYTES,
    DeploymentFile,
    tag_problems,
)
from conveyor.deployments_io.yamlsrc import (
    Doc,
    Loc,
    parse,
    pydantic_problems,
    too_large,
)
from conveyor.domain import vocabulary
from conveyor.domain.connector_fields import TOP_LEVEL
from conveyor.domain.vocabulary import CONNECTOR_TAG_PREFIX
from conveyor.errors import FieldProblem, ValidationFailed
from conveyor.pipelines.registry import Kind, get_type

if TYPE_CHECKING:
    from conveyor.settings import Settings

IGNORED_FILES = frozenset({"prefect.yaml", "prefect.yml"})
KINDS: tuple[Kind, Kind] = ("source", "destination")


@dataclass(frozen=True)
class EndpointSpec:
    """A source or destination a file asks for: inline (type + config) or by name."""

    kind: Kind
    name: str
    type: str | None  # None: a reference to an existing one (or one inline elsewhere)
    config: dict[str, Any] | None  # secrets resolved, paths absolute
    where: str
    max_concurrent_runs: int | None = None  # a destination's cap (inline only)


@dataclass
class ConnectorSpec:
    """The connector block of a file, resolved."""

    name: str
    active: bool
    source: EndpointSpec
    destination: EndpointSpec
    # Overrides of an inline endpoint are resolved; of a referenced one, as written
    # until the plan knows its type (``resolve_override``).
    source_config_override: dict[str, Any]
    destination_config_override: dict[str, Any]


@dataclass
class FileSpec:
    """What one file asks for, resolved: the deployment and (optionally) its connector."""

    doc: Doc
    model: DeploymentFile
    connector_id: int
    deployment_name: str | None  # None: the default connector-<id>
    description: str | None
    schedule: str | None
    timezone: str
    tags: list[str]  # user tags only
    top: dict[str, Any]  # the plain fields at the top level (connector_fields.TOP_LEVEL)
    connector: ConnectorSpec | None

    @property
    def file(self) -> str:
        return self.doc.file


@dataclass
class LoadedDirectory:
    """Every file of a directory, resolved, and every problem found."""

    files: list[FileSpec] = field(default_factory=list)
    problems: list[FieldProblem] = field(default_factory=list)
    base_dir: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    check_env: bool = True

    def raise_for_problems(self) -> None:
        if self.problems:
            raise ValidationFailed(
                self.problems, hint=f"{len(self.problems)} problem(s); nothing was applied"
            )


@dataclass
class _Identity:
    """What the checks across files compare, taken from whatever parts of a file are valid."""

    doc: Doc
    name: str | None
    connector_id: int | None
    connector_name: str | None
    endpoints: list[EndpointSpec]


# --- entry points -----------------------------------------------------------------


def discover(path: Path) -> list[Path]:
    """The deployment files of a directory: top-level *.yaml/*.yml, sorted by name."""
    if not path.exists():
        raise ValidationFailed.field(str(path), "directory does not exist")
    if not path.is_dir():
        raise ValidationFailed.field(str(path), "is not a directory")
    return sorted(
        p
        for p in path.iterdir()
        if p.is_file()
        and p.suffix in (".yaml", ".yml")
        and p.name not in IGNORED_FILES
        and not p.name.startswith(".")
    )


def load_directory(
    path: str | Path,
    *,
    env: Mapping[str, str] | None = None,
    check_env: bool = True,
    strict: bool = True,
    settings: Settings | None = None,
) -> LoadedDirectory:
    """Read and check every file of ``path``; raise ValidationFailed listing all problems
    (``strict=False``: return them in ``LoadedDirectory.problems`` instead). ``settings``
    (default: the process's) name the work pools that job variables and destinations are
    checked against."""
    base = Path(path).absolute()
    contents: dict[str, bytes] = {}
    oversized: list[FieldProblem] = []
    for p in discover(base):
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            oversized.append(FieldProblem(f"{p.name}:1:1", too_large(size)))
            continue
        with open(p, "rb") as fh:
            contents[p.name] = fh.read(MAX_FILE_BYTES + 1)
    loaded = load_files(
        contents, base_dir=base, env=env, check_env=check_env, strict=False, settings=settings
    )
    loaded.problems[:0] = oversized
    if strict:
        loaded.raise_for_problems()
    return loaded


def load_files(
    files: Mapping[str, bytes | str],
    *,
    base_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    check_env: bool = True,
    strict: bool = True,
    settings: Settings | None = None,
) -> LoadedDirectory:
    """Check in-memory files (name → content); relative paths need ``base_dir``."""
    env = os.environ if env is None else env
    out = LoadedDirectory(base_dir=base_dir, env=env, check_env=check_env)
    identities: list[_Identity] = []
    for name in sorted(files):
        parsed = parse(name, files[name], base_dir, out.problems)
        if parsed is None:
            continue
        spec, ident = _check_file(*parsed, env, check_env, out.problems, settings)
        identities.append(ident)
        if spec is not None:
            out.files.append(spec)
    _check_across_files(identities, out.problems)
    out.problems.sort(key=_file_order)
    if strict:
        out.raise_for_problems()
    return out


def _file_order(p: FieldProblem) -> tuple[str, int, int]:
    name, _, rest = p.loc.partition(":")
    line, _, col = rest.partition(":")
    return name, int(line) if line.isdigit() else 0, int(col) if col.isdigit() else 0


# --- one file ----------------------------------------------------------------------


def _check_file(
    doc: Doc,
    data: dict[str, Any],
    env: Mapping[str, str],
    check_env: bool,
    problems: list[FieldProblem],
    settings: Settings | None = None,
) -> tuple[FileSpec | None, _Identity]:
    model: DeploymentFile | None = None
    try:
        model = DeploymentFile.model_validate(data)
    except ValidationError as exc:
        problems.extend(pydantic_problems(doc, exc))
    # The checks below read the plain data, so a type error elsewhere hides nothing.
    name = _text(data, "name")
    params = _get(data, "parameters", dict) or {}
    cid = _get(params, "connector_id", int)
    cid = None if isinstance(cid, bool) else cid
    if name is not None and cid is not None:
        rest = name.removeprefix(CONNECTOR_TAG_PREFIX)
        if rest != name and rest.isdigit() and int(rest) != cid:
            problems.append(
                doc.problem(
                    ("name",),
                    f"'{name}' is the default name of connector {rest}, "
                    f"but parameters.connector_id is {cid}",
                )
            )
    _check_tags(doc, ("tags",), data.get("tags"), cid, problems)
    block = _get(data, "connector", dict)
    connector = None
    if block is not None:
        _check_tags(doc, ("connector", "tags"), block.get("tags"), cid, problems)
        connector = _resolve_connector(doc, block, env, check_env, problems)
        if connector is not None and check_env:  # secrets resolved: the config is whole
            _check_placement(doc, data, connector, problems, settings)
    if model is not None:
        _check_job_variables(doc, data, getattr(model, "job_variables", None), problems, settings)
    ident = _Identity(
        doc,
        name,
        cid,
        _text(block or {}, "name"),
        [ep for ep in (connector.source, connector.destination) if ep.type] if connector else [],
    )
    if model is None or (model.connector is not None and connector is None):
        return None, ident
    schedule = model.schedule
    spec = FileSpec(
        doc=doc,
        model=model,
        connector_id=model.parameters.connector_id,
        deployment_name=model.deployment_name(),
        description=model.description,
        schedule=schedule.cron if schedule else None,
        timezone=schedule.timezone if schedule else "UTC",
        tags=model.user_tags(),
        top={f.name: getattr(model, f.name) for f in TOP_LEVEL},
        connector=connector,
    )
    return spec, ident


def _check_job_variables(
    doc: Doc,
    data: dict[str, Any],
    variables: dict[str, Any] | None,
    problems: list[FieldProblem],
    settings: Settings | None,
) -> None:
    """Job variables the file's work pool does not take, at their line: the check a save
    makes (``services/job_pool.py``: the pool as Prefect has it, else its configured type)."""
    if not variables:
        return
    from conveyor.services import job_pool
    from conveyor.settings import get_settings

    try:
        job_pool.check(settings or get_settings(), variables, _text(data, "work_pool_name"))
    except ValidationFailed as exc:
        problems.extend(doc.problem(tuple(p.loc.split(".")), p.reason) for p in exc.problems)


def _check_placement(
    doc: Doc,
    data: dict[str, Any],
    connector: ConnectorSpec,
    problems: list[FieldProblem],
    settings: Settings | None = None,
) -> None:
    """An inline destination bound to one machine (a DuckDB file) on a work pool whose runs
    are not local processes (``services/placement.py``), at the destination's type."""
    from conveyor.services import placement
    from conveyor.settings import get_settings

    dst = connector.destination
    if dst.type is None or dst.config is None:
        return  # a destination by name: plan and apply check it against the database
    config = vocabulary.merged_config(dst.config, connector.destination_config_override)
    pool = _text(data, "work_pool_name")
    found = placement.problem(
        settings or get_settings(), dst.type, config, pool, destination_name=dst.name
    )
    if found is not None:
        problems.append(doc.problem(("connector", "destination", "type"), found.reason))


def _get(data: dict[str, Any], key: str, kind: type) -> Any:
    value = data.get(key)
    return value if isinstance(value, kind) else None


def _text(data: dict[str, Any], key: str) -> str | None:
    """A string field as the format model reads it (whitespace stripped)."""
    value = data.get(key)
    return value.strip() if isinstance(value, str) else None


def _check_tags(
    doc: Doc, loc: Loc, tags: Any, cid: int | None, problems: list[FieldProblem]
) -> None:
    if not isinstance(tags, list):
        return
    strings = [t if isinstance(t, str) else "" for t in tags]
    for i, reason in tag_problems(strings, cid if cid is not None else -1):
        if strings[i] and (cid is not None or not strings[i].startswith(CONNECTOR_TAG_PREFIX)):
            problems.append(doc.problem((*loc, i), reason))


def _resolve_connector(
    doc: Doc,
    block: dict[str, Any],
    env: Mapping[str, str],
    check_env: bool,
    problems: list[FieldProblem],
) -> ConnectorSpec | None:
    name = _text(block, "name") or "connector"
    endpoints: dict[str, EndpointSpec] = {}
    overrides: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        resolved = _resolve_endpoint(doc, block, name, kind, env, check_env, problems)
        if resolved is not None:
            endpoints[kind], overrides[kind] = resolved
    if len(endpoints) < 2:
        return None
    active = block.get("active", True)
    return ConnectorSpec(
        name=name,
        active=active if isinstance(active, bool) else True,
        source=endpoints["source"],
        destination=endpoints["destination"],
        source_config_override=overrides["source"],
        destination_config_override=overrides["destination"],
    )


def _resolve_endpoint(
    doc: Doc,
    block: dict[str, Any],
    connector_name: str,
    kind: Kind,
    env: Mapping[str, str],
    check_env: bool,
    problems: list[FieldProblem],
) -> tuple[EndpointSpec, dict[str, Any]] | None:
    ep = block.get(kind)
    if isinstance(ep, str):
        ep = {"name": ep}
    if not isinstance(ep, dict):
        return None  # the format check reports it
    loc: Loc = ("connector", kind)
    name = _text(ep, "name") or f"{connector_name}-{kind}"
    override = _get(block, f"{kind}_config_override", dict) or {}
    type_name = ep.get("type")
    if type_name is None:
        return EndpointSpec(kind, name, None, None, doc.where(loc)), dict(override)
    config = ep.get("config") or {}
    if not isinstance(type_name, str) or not isinstance(config, dict):
        return None
    try:
        get_type(kind, type_name)
    except ValidationFailed as exc:
        problems.append(doc.problem((*loc, "type"), exc.problems[0].reason))
        return None
    config_loc: Loc = (*loc, "config")
    resolved = resolve_values(doc, config_loc, config, kind, type_name, env, check_env, problems)
    base_ok = validate(doc, config_loc, kind, type_name, resolved, problems)
    ov = resolve_override(
        doc, kind, type_name, resolved, override, env, check_env, problems, check=base_ok
    )
    cap = ep.get("max_concurrent_runs") if kind == "destination" else None
    cap = cap if isinstance(cap, int) else None  # the format check reports anything else
    return EndpointSpec(kind, name, type_name, resolved, doc.where(loc), cap), ov


# --- across files ------------------------------------------------------------------


def _check_across_files(identities: list[_Identity], problems: list[FieldProblem]) -> None:
    unique: list[tuple[str, Loc, dict[object, _Identity]]] = [
        ("deployment name", ("name",), {}),
        ("connector_id", ("parameters", "connector_id"), {}),
        ("connector name", ("connector", "name"), {}),
    ]
    endpoints: dict[tuple[str, str], EndpointSpec] = {}
    for ident in identities:
        values = (ident.name, ident.connector_id, ident.connector_name)
        for (what, loc, seen), value in zip(unique, values, strict=True):
            if value is None:
                continue
            first = seen.setdefault(value, ident)
            if first is not ident:
                where = first.doc.where(loc)
                problems.append(ident.doc.problem(loc, f"{what} '{value}' is also used by {where}"))
        for ep in ident.endpoints:
            other = endpoints.setdefault((ep.kind, ep.name), ep)
            if other is not ep and (other.type, other.config, other.max_concurrent_runs) != (
                ep.type,
                ep.config,
                ep.max_concurrent_runs,
            ):
                problems.append(
                    FieldProblem(
                        ep.where,
                        f"connector.{ep.kind}: {ep.kind} '{ep.name}' is defined differently "
                        f"in {other.where}; an inline {ep.kind} must be the same in every file",
                    )
                )
