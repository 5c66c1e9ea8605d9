"""A connector's view of a source or destination config in a file: ``${ENV_VAR}``
references resolved, secrets required to be references, local paths made absolute
against the file's directory, and the result checked against the type's model.

A reference is substituted only in a secret field, and only from a variable the admin
allows (``CONVEYOR_DEPLOYMENT_ENV``: names, or prefixes ending in ``*``; default
``DEPLOY_SECRET_*``). Conveyor's own settings — every ``CONVEYOR_*`` and ``PREFECT_*``
variable — are never read, whatever the setting says: a file must not be able to copy the
server's key or database URL into a config that is sent to a target or shown to viewers.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from conveyor.deployments_io.format import ENV_REF, secret_fields
from conveyor.deployments_io.yamlsrc import Doc, Loc, field_names, unknown_key
from conveyor.errors import FieldProblem, ValidationFailed
from conveyor.pipelines.registry import Kind, get_type, validate_config


def path_fields(kind: str, type_name: str) -> frozenset[str]:
    """Config keys holding a local path (the type's ``PATH_FIELDS``): relative values are
    taken relative to the deployment file's directory, so files never carry
    machine-specific paths."""
    return get_type(kind, type_name).path_fields  # type: ignore[arg-type]


# Never substituted, whatever CONVEYOR_DEPLOYMENT_ENV says: Conveyor's and Prefect's settings.
NEVER_ALLOWED = ("CONVEYOR_", "PREFECT_")
_ANY_REF = re.compile(r"\$\{([^}]*)\}")


def env_allowed(var: str, allowed: Sequence[str]) -> bool:
    """True when ``var`` may be read: listed by name or by a ``PREFIX*`` entry, and not
    one of Conveyor's or Prefect's own settings."""
    if var.upper().startswith(NEVER_ALLOWED):
        return False
    return any(var.startswith(a[:-1]) if a.endswith("*") else var == a for a in allowed)


def allowed_env() -> list[str]:
    """The admin's list of allowed variables (names and ``PREFIX*``)."""
    from conveyor.settings import get_settings

    return list(get_settings().deployment_env)


def _refs_in(value: Any) -> list[str]:
    """Every ``${...}`` written anywhere inside ``value`` (strings, lists, mappings)."""
    if isinstance(value, str):
        return _ANY_REF.findall(value)
    if isinstance(value, Mapping):
        return [r for v in value.values() for r in _refs_in(v)]
    if isinstance(value, list):
        return [r for v in value for r in _refs_in(v)]
    return []


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
    for fixed in get_type(kind, type_name).fixed_in(override, ""):
        problems.append(doc.problem((*loc, fixed.loc.lstrip(".")), fixed.reason))
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
    allowed = allowed_env()
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key not in secrets:
            refs = _refs_in(value)
            if refs:
                problems.append(
                    doc.problem(
                        (*loc, key),
                        f"${{{refs[0]}}}: environment references are substituted only in "
                        "secret fields (passwords, tokens, keys); write the value itself",
                    )
                )
        elif isinstance(value, Mapping):  # a secret mapping (HTTP headers): each value
            value = {
                k: _secret_ref(doc, (*loc, key, k), kind, key, v, env, check_env, allowed, problems)
                for k, v in value.items()
            }
        elif value is not None:
            value = _secret_ref(
                doc, (*loc, key), kind, key, value, env, check_env, allowed, problems
            )
        out[key] = value
    if not {**(merged_with or {}), **out}.get("bucket"):
        for key in sorted(path_fields(kind, type_name)):
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


def _secret_ref(
    doc: Doc,
    loc: Loc,
    kind: Kind,
    key: str,
    value: Any,
    env: Mapping[str, str],
    check_env: bool,
    allowed: Sequence[str],
    problems: list[FieldProblem],
) -> Any:
    """The value of a secret's ``${VAR}`` (an allowed, set variable), else a problem."""
    ref = ENV_REF.match(value) if isinstance(value, str) else None
    if ref is None:
        example = f"DEPLOY_SECRET_{kind.upper()}_<NAME>_{key.upper()}"
        problems.append(
            doc.problem(
                loc,
                "a secret must be an ${ENV_VAR} reference, never a value in the file "
                f"(e.g. '${{{example}}}')",
            )
        )
        return value
    var = ref.group(1)
    if not env_allowed(var, allowed):
        never = var.upper().startswith(NEVER_ALLOWED)
        why = (
            "Conveyor's and Prefect's own settings (CONVEYOR_*, PREFECT_*) are never read"
            if never
            else f"allowed are {', '.join(allowed) or 'none'} (setting CONVEYOR_DEPLOYMENT_ENV)"
        )
        problems.append(doc.problem(loc, f"environment variable {var} may not be used: {why}"))
        return value
    if var in env:
        return env[var]
    if check_env:
        problems.append(doc.problem(loc, f"environment variable {var} is not set"))
    return value


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
        # A field reported already (a relative path with no directory to resolve it
        # against, a refused reference) is not reported again for what follows from it.
        seen = {p.loc for p in problems}
        for p in exc.problems:
            parts: list[str | int] = [int(x) if x.isdigit() else x for x in p.loc.split(".") if x]
            if only is not None and parts and parts[0] not in only:
                continue
            reason = p.reason
            is_key = reason == "Extra inputs are not permitted" and bool(parts)
            if is_key:
                reason = unknown_key(str(parts[0]), known)
            problem = doc.problem((*loc, *parts), reason, key=is_key or not parts)
            if problem.loc not in seen:
                problems.append(problem)
        return False
    return True
