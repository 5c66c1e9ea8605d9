"""Reading deployment files: YAML with line numbers, the format, per-type configs, secrets
from the environment, relative paths, and the checks across files.

Every problem is collected (never the first only) as a FieldProblem whose loc is
``file:line:col``; ``load_directory`` raises one ValidationFailed listing them all.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError

from conveyor.deployments_io.format import (
    CONNECTOR_TAG_PREFIX,
    ENV_REF,
    MAX_FILE_BYTES,
    ConnectorBlock,
    DeploymentFile,
    Endpoint,
    Parameters,
    Schedule,
    tag_problems,
)
from conveyor.errors import FieldProblem, ValidationFailed
from conveyor.pipelines.registry import Kind, get_type, validate_config

# Config keys holding a local path, per (kind, type): relative values are taken relative
# to the deployment file's directory, so files never carry machine-specific paths.
PATH_FIELDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("source", "filesystem"): ("path",),
    ("destination", "filesystem"): ("path",),
    ("destination", "duckdb"): ("path",),
}
IGNORED_FILES = frozenset({"prefect.yaml", "prefect.yml"})

Loc = tuple[str | int, ...]


@dataclass
class Doc:
    """One parsed file: its name, directory and the YAML tree (for line numbers)."""

    file: str
    base_dir: Path | None
    raw: Any

    def where(self, loc: Loc = (), *, key: bool = False) -> str:
        line, col = position(self.raw, loc, key=key)
        return f"{self.file}:{line}:{col}"

    def problem(self, loc: Loc, reason: str, *, key: bool = False) -> FieldProblem:
        dotted = ".".join(str(p) for p in loc)
        return FieldProblem(self.where(loc, key=key), f"{dotted}: {reason}" if dotted else reason)


@dataclass(frozen=True)
class EndpointSpec:
    """A source or destination a file asks for: inline (type + config) or by name."""

    kind: Kind
    name: str
    type: str | None  # None: a reference to an existing one (or one inline elsewhere)
    config: dict[str, Any] | None  # secrets resolved, paths absolute
    where: str


@dataclass
class ConnectorSpec:
    """The connector block of a file, resolved."""

    name: str
    active: bool
    source: EndpointSpec
    destination: EndpointSpec
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
    work_pool_name: str | None
    work_queue_name: str | None
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
                self.problems,
                hint=f"{len(self.problems)} problem(s); nothing was applied",
            )


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
) -> LoadedDirectory:
    """Read and check every file of ``path``; raise ValidationFailed listing all problems.

    ``strict=False`` returns the problems in ``LoadedDirectory.problems`` instead.
    """
    base = Path(path).absolute()
    contents: dict[str, bytes] = {}
    oversized: list[FieldProblem] = []
    for p in discover(base):
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            oversized.append(FieldProblem(f"{p.name}:1:1", _too_large(size)))
            continue
        with open(p, "rb") as fh:
            contents[p.name] = fh.read(MAX_FILE_BYTES + 1)
    loaded = load_files(contents, base_dir=base, env=env, check_env=check_env, strict=False)
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
) -> LoadedDirectory:
    """Check in-memory files (name → content); relative paths need ``base_dir``."""
    env = os.environ if env is None else env
    out = LoadedDirectory(base_dir=base_dir, env=env, check_env=check_env)
    yaml = YAML(typ="rt")
    for name in sorted(files):
        spec = _load_one(name, files[name], base_dir, yaml, env, check_env, out.problems)
        if spec is not None:
            out.files.append(spec)
    _check_across_files(out)
    if strict:
        out.raise_for_problems()
    return out


def _too_large(size: int) -> str:
    return (
        f"file is {size / 1_000_000:.1f} MB; a deployment file may be at most "
        f"{MAX_FILE_BYTES // 1024 // 1024} MB (one connector per file)"
    )


# --- one file ----------------------------------------------------------------------


def _load_one(
    name: str,
    content: bytes | str,
    base_dir: Path | None,
    yaml: YAML,
    env: Mapping[str, str],
    check_env: bool,
    problems: list[FieldProblem],
) -> FileSpec | None:
    if len(content) > MAX_FILE_BYTES:
        problems.append(FieldProblem(f"{name}:1:1", _too_large(len(content))))
        return None
    if isinstance(content, bytes):
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = content[: exc.start].count(b"\n") + 1
            problems.append(FieldProblem(f"{name}:{line}:1", "file is not UTF-8 text"))
            return None
    else:
        text = content
    try:
        raw = yaml.load(text)
    except DuplicateKeyError as exc:
        mark = exc.problem_mark
        key = (exc.problem or "").split('"')[1] if '"' in (exc.problem or "") else "?"
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else f"{name}:1:1"
        problems.append(FieldProblem(where, f"duplicate key '{key}'"))
        return None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else f"{name}:1:1"
        reason = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        problems.append(FieldProblem(where, f"YAML syntax error: {reason}"))
        return None
    doc = Doc(name, base_dir, raw)
    if raw is None:
        problems.append(FieldProblem(f"{name}:1:1", "file is empty"))
        return None
    if not isinstance(raw, CommentedMap):
        problems.append(doc.problem((), "the top level must be a mapping (name: ..., ...)"))
        return None
    if _has_aliases(raw, doc, problems):
        return None
    try:
        model = DeploymentFile.model_validate(_plain(raw))
    except ValidationError as exc:
        problems.extend(_pydantic_problems(doc, exc))
        return None
    return _resolve(doc, model, env, check_env, problems)


def _resolve(
    doc: Doc,
    model: DeploymentFile,
    env: Mapping[str, str],
    check_env: bool,
    problems: list[FieldProblem],
) -> FileSpec:
    cid = model.parameters.connector_id
    rest = model.name.removeprefix(CONNECTOR_TAG_PREFIX)
    if rest != model.name and rest.isdigit() and int(rest) != cid:
        problems.append(
            doc.problem(
                ("name",),
                f"'{model.name}' is the default name of connector {rest}, "
                f"but parameters.connector_id is {cid}",
            )
        )
    for i, reason in tag_problems(model.tags, cid):
        problems.append(doc.problem(("tags", i), reason))
    connector = None
    if model.connector is not None:
        block = model.connector
        for i, reason in tag_problems(block.tags, cid):
            problems.append(doc.problem(("connector", "tags", i), reason))
        connector = _resolve_connector(doc, block, env, check_env, problems)
    schedule = model.schedule or Schedule(cron=None)
    return FileSpec(
        doc=doc,
        model=model,
        connector_id=cid,
        deployment_name=model.deployment_name(),
        description=model.description,
        schedule=schedule.cron,
        timezone=schedule.timezone,
        tags=model.user_tags(),
        work_pool_name=model.work_pool_name,
        work_queue_name=model.work_queue_name,
        connector=connector,
    )


def _resolve_connector(
    doc: Doc,
    block: ConnectorBlock,
    env: Mapping[str, str],
    check_env: bool,
    problems: list[FieldProblem],
) -> ConnectorSpec:
    endpoints: dict[str, EndpointSpec] = {}
    overrides: dict[str, dict[str, Any]] = {}
    for kind in ("source", "destination"):
        ep: Endpoint = getattr(block, kind)
        loc: Loc = ("connector", kind)
        name = ep.name or f"{block.name}-{kind}"
        override = getattr(block, f"{kind}_config_override")
        if ep.is_reference:
            # The type is known once the reference is resolved: plan checks the override
            # (``resolve_override``); until then it stays as written.
            endpoints[kind] = EndpointSpec(kind, name, None, None, doc.where(loc))
            overrides[kind] = dict(override)
            continue
        assert ep.type is not None
        try:
            info = get_type(kind, ep.type)  # type: ignore[arg-type]
        except ValidationFailed as exc:
            problems.append(doc.problem((*loc, "type"), exc.problems[0].reason))
            endpoints[kind] = EndpointSpec(kind, name, ep.type, {}, doc.where(loc))
            overrides[kind] = dict(override)
            continue
        config_loc: Loc = (*loc, "config")
        base = ep.config or {}
        config = _resolve_values(
            doc, config_loc, base, info.secret_fields, kind, ep.type, env, check_env, problems
        )
        base_ok = _validate(doc, config_loc, kind, ep.type, config, problems)
        ov = resolve_override(
            doc, kind, ep.type, config, override, env, check_env, problems, check=base_ok
        )
        endpoints[kind] = EndpointSpec(kind, name, ep.type, config, doc.where(loc))
        overrides[kind] = ov
    return ConnectorSpec(
        name=block.name,
        active=block.active,
        source=endpoints["source"],
        destination=endpoints["destination"],
        source_config_override=overrides["source"],
        destination_config_override=overrides["destination"],
    )


def resolve_override(
    doc: Doc,
    kind: str,
    type_name: str,
    base: dict[str, Any],
    override: dict[str, Any],
    env: Mapping[str, str],
    check_env: bool,
    problems: list[FieldProblem],
    *,
    check: bool = True,
) -> dict[str, Any]:
    """A connector's override of an endpoint of known type, resolved and validated over
    the endpoint's ``base`` config (problems caused by the base are not repeated)."""
    loc: Loc = ("connector", f"{kind}_config_override")
    secrets = get_type(kind, type_name).secret_fields  # type: ignore[arg-type]
    out = _resolve_values(
        doc, loc, override, secrets, kind, type_name, env, check_env, problems, merged_with=base
    )
    if out and check:
        merged = {**base, **{k: v for k, v in out.items() if v is not None}}
        _validate(doc, loc, kind, type_name, merged, problems, only=set(out))
    return out


def _resolve_values(
    doc: Doc,
    loc: Loc,
    config: dict[str, Any],
    secret_fields: frozenset[str] | None,
    kind: str,
    type_name: str | None,
    env: Mapping[str, str],
    check_env: bool,
    problems: list[FieldProblem],
    merged_with: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Replace ${ENV_VAR} references, insist secrets are references, absolutise paths."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        ref = ENV_REF.match(value) if isinstance(value, str) else None
        is_secret = secret_fields is not None and key in secret_fields
        if is_secret and value is not None and ref is None:
            problems.append(
                doc.problem(
                    (*loc, key),
                    "a secret must be an ${ENV_VAR} reference, never a value in the file "
                    f"(e.g. '${{{_example_var(kind, key)}}}')",
                )
            )
            out[key] = value
            continue
        if ref is not None:
            var = ref.group(1)
            if var in env:
                value = env[var]
            elif check_env:
                problems.append(doc.problem((*loc, key), f"environment variable {var} is not set"))
        out[key] = value
    if type_name is not None:
        context = {**(merged_with or {}), **out}
        if not context.get("bucket"):
            for key in PATH_FIELDS.get((kind, type_name), ()):
                value = out.get(key)
                if isinstance(value, str) and value and not _is_absolute(value):
                    if doc.base_dir is None:
                        problems.append(
                            doc.problem(
                                (*loc, key),
                                f"relative path '{value}' needs the file's directory "
                                "(send base_dir, or use an absolute path)",
                            )
                        )
                    else:
                        out[key] = os.path.normpath(doc.base_dir / value)
    return out


def _example_var(kind: str, key: str) -> str:
    return f"CONVEYOR_{kind.upper()}_<NAME>_{key.upper()}"


def _is_absolute(value: str) -> bool:
    return os.path.isabs(value) or "://" in value or value.startswith("~")


def _validate(
    doc: Doc,
    loc: Loc,
    kind: str,
    type_name: str,
    config: dict[str, Any],
    problems: list[FieldProblem],
    only: set[str] | None = None,
) -> bool:
    """Validate against the type's model; with ``only``, report just the problems of those
    keys (and whole-config ones). True when valid."""
    info = get_type(kind, type_name)  # type: ignore[arg-type]
    try:
        validate_config(kind, type_name, config, loc="")  # type: ignore[arg-type]
    except ValidationFailed as exc:
        known = _field_names(info.config_model)
        for p in exc.problems:
            parts: list[str | int] = [int(x) if x.isdigit() else x for x in p.loc.split(".") if x]
            if only is not None and parts and parts[0] not in only:
                continue
            reason = p.reason
            if reason == "Extra inputs are not permitted" and parts:
                reason = _unknown_key(str(parts[0]), known)
            problems.append(doc.problem((*loc, *parts), reason, key=reason.startswith("unknown")))
        return False
    return True


def _field_names(model: type[BaseModel]) -> list[str]:
    names = []
    for name, f in model.model_fields.items():
        names.append(f.alias or name)
    return sorted(names)


def _unknown_key(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f" (known: {', '.join(known)})"
    return f"unknown key '{key}'{hint}"


# --- pydantic errors → file:line:col ------------------------------------------------

_MODELS_BY_PATH: dict[tuple[str, ...], type[BaseModel]] = {
    (): DeploymentFile,
    ("parameters",): Parameters,
    ("schedule",): Schedule,
    ("connector",): ConnectorBlock,
    ("connector", "source"): Endpoint,
    ("connector", "destination"): Endpoint,
}


def _pydantic_problems(doc: Doc, exc: ValidationError) -> list[FieldProblem]:
    out = []
    for err in exc.errors(include_url=False):
        loc: Loc = tuple(p for p in err["loc"] if not _is_union_member(p))
        msg = str(err["msg"]).removeprefix("Value error, ")
        key = err["type"] == "extra_forbidden"
        if key and loc:
            parent = _MODELS_BY_PATH.get(tuple(str(p) for p in loc[:-1]))
            if parent is not None:
                msg = _unknown_key(str(loc[-1]), _field_names(parent))
            else:
                msg = f"unknown key '{loc[-1]}'"
        elif err["type"] == "missing":
            msg = "is required"
        out.append(doc.problem(loc, msg, key=key))
    return out


def _is_union_member(part: Any) -> bool:
    return isinstance(part, str) and (part[:1].isupper() or part in ("str", "int", "none"))


def position(raw: Any, loc: Loc, *, key: bool = False) -> tuple[int, int]:
    """1-based (line, col) of ``loc`` in the YAML tree: the deepest part that exists."""
    line, col = 0, 0
    node = raw
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, CommentedMap) and part in node:
            line, col = node.lc.key(part) if key or not last else node.lc.value(part)
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            line, col = node.lc.item(part)
            node = node[part]
        else:
            break
    return line + 1, col + 1


def _plain(node: Any) -> Any:
    """ruamel's commented containers as plain dicts and lists (strings stay str)."""
    if isinstance(node, CommentedMap):
        return {str(k) if not isinstance(k, str) else k: _plain(v) for k, v in node.items()}
    if isinstance(node, CommentedSeq):
        return [_plain(v) for v in node]
    if isinstance(node, str):
        return str(node)
    if isinstance(node, datetime | date):
        # JSON columns hold no dates: keep what the user wrote, as ISO text.
        return node.isoformat()
    if type(node).__name__ == "ScalarFloat":
        return float(node)
    if type(node).__name__ == "ScalarBoolean":
        return bool(node)
    if type(node).__name__ in ("ScalarInt", "HexInt", "OctalInt", "BinaryInt"):
        return int(node)
    return node


def _has_aliases(raw: Any, doc: Doc, problems: list[FieldProblem]) -> bool:
    """Reject YAML anchors/aliases: deployment files never need them, and shared nodes
    can blow a small file up into a huge document."""
    seen: set[int] = set()
    stack: list[tuple[Any, Loc]] = [(raw, ())]
    while stack:
        node, loc = stack.pop()
        if not isinstance(node, CommentedMap | CommentedSeq):
            continue
        if id(node) in seen:
            problems.append(doc.problem(loc, "YAML anchors and aliases are not supported"))
            return True
        seen.add(id(node))
        items = node.items() if isinstance(node, CommentedMap) else enumerate(node)
        stack.extend((v, (*loc, k)) for k, v in items)
    return False


# --- across files ------------------------------------------------------------------


def _check_across_files(out: LoadedDirectory) -> None:
    by_deployment: dict[str, FileSpec] = {}
    by_id: dict[int, FileSpec] = {}
    by_connector: dict[str, FileSpec] = {}
    endpoints: dict[tuple[str, str], EndpointSpec] = {}
    for spec in out.files:
        doc = spec.doc
        name = spec.model.name
        first = by_deployment.setdefault(name, spec)
        if first is not spec:
            out.problems.append(
                doc.problem(
                    ("name",),
                    f"deployment name '{name}' is also used by {first.doc.where(('name',))}",
                )
            )
        first = by_id.setdefault(spec.connector_id, spec)
        if first is not spec:
            where = first.doc.where(("parameters", "connector_id"))
            out.problems.append(
                doc.problem(
                    ("parameters", "connector_id"),
                    f"connector_id {spec.connector_id} is also used by {where}",
                )
            )
        if spec.connector is None:
            continue
        cname = spec.connector.name
        first = by_connector.setdefault(cname, spec)
        if first is not spec:
            where = first.doc.where(("connector", "name"))
            out.problems.append(
                doc.problem(
                    ("connector", "name"), f"connector name '{cname}' is also used by {where}"
                )
            )
        for ep in (spec.connector.source, spec.connector.destination):
            if ep.type is None:
                continue
            seen = endpoints.setdefault((ep.kind, ep.name), ep)
            if seen is not ep and (seen.type, seen.config) != (ep.type, ep.config):
                out.problems.append(
                    FieldProblem(
                        ep.where,
                        f"connector.{ep.kind}: {ep.kind} '{ep.name}' is defined differently "
                        f"in {seen.where}; an inline {ep.kind} must be the same in every file",
                    )
                )


def default_deployment_name(connector_id: int) -> str:
    return f"{CONNECTOR_TAG_PREFIX}{connector_id}"
