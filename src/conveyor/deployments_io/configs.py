"""A connector's view of a source or destination config in a file: ``${ENV_VAR}``
references resolved, secrets required to be references, local paths made absolute
against the file's directory, and the result checked against the type's model."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from conveyor.deployments_io.format import ENV_REF, secret_fields
from conveyor.deployments_io.yamlsrc import Doc, Loc, field_names, unknown_key
from conveyor.errors import FieldProblem, ValidationFailed
from conveyor.pipelines.registry import Kind, get_type, validate_config

# Config keys holding a local path, per (kind, type): relative values are taken relative
# to the deployment file's directory, so files never carry machine-specific paths.
PATH_FIELDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("source", "filesystem"): ("path",),
    ("destination", "filesystem"): ("path",),
    ("destination", "duckdb"): ("path",),
}


def resolve_override(
    doc: Doc,
    kind: Kind,
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
    out = resolve_values(
        doc, loc, override, kind, type_name, env, check_env, problems, merged_with=base
    )
    if out and check:
        merged = {**base, **{k: v for k, v in out.items() if v is not None}}
        validate(doc, loc, kind, type_name, merged, problems, only=set(out))
    return out


def resolve_values(
    doc: Doc,
    loc: Loc,
    config: dict[str, Any],
    kind: Kind,
    type_name: str,
    env: Mapping[str, str],
    check_env: bool,
    problems: list[FieldProblem],
    merged_with: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Replace ${ENV_VAR} references, insist secrets are references, absolutise paths."""
    secrets = secret_fields(kind, type_name)
    out: dict[str, Any] = {}
    for key, value in config.items():
        ref = ENV_REF.match(value) if isinstance(value, str) else None
        if key in secrets and value is not None and ref is None:
            example = f"CONVEYOR_{kind.upper()}_<NAME>_{key.upper()}"
            problems.append(
                doc.problem(
                    (*loc, key),
                    "a secret must be an ${ENV_VAR} reference, never a value in the file "
                    f"(e.g. '${{{example}}}')",
                )
            )
        elif ref is not None:
            var = ref.group(1)
            if var in env:
                value = env[var]
            elif check_env:
                problems.append(doc.problem((*loc, key), f"environment variable {var} is not set"))
        out[key] = value
    if not {**(merged_with or {}), **out}.get("bucket"):
        for key in PATH_FIELDS.get((kind, type_name), ()):
            value = out.get(key)
            if not isinstance(value, str) or not value or _is_absolute(value):
                continue
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


def _is_absolute(value: str) -> bool:
    return os.path.isabs(value) or "://" in value or value.startswith("~")


def validate(
    doc: Doc,
    loc: Loc,
    kind: Kind,
    type_name: str,
    config: dict[str, Any],
    problems: list[FieldProblem],
    only: set[str] | None = None,
) -> bool:
    """Validate against the type's model; with ``only``, report just the problems of those
    keys (and whole-config ones). True when valid."""
    try:
        validate_config(kind, type_name, config, loc="")
    except ValidationFailed as exc:
        known = field_names(get_type(kind, type_name).config_model)
        for p in exc.problems:
            parts: list[str | int] = [int(x) if x.isdigit() else x for x in p.loc.split(".") if x]
            if only is not None and parts and parts[0] not in only:
                continue
            reason = p.reason
            is_key = reason == "Extra inputs are not permitted" and bool(parts)
            if is_key:
                reason = unknown_key(str(parts[0]), known)
            problems.append(doc.problem((*loc, *parts), reason, key=is_key or not parts))
        return False
    return True
