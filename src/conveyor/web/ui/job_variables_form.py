"""The connector form's Advanced section: the flow runs' job variables (resources, image,
node selector, tolerations, environment) as text inputs. Fills the inputs from a connector's
variables, parses them back (plain-words errors on the input that holds the mistake) and
says which inputs the work pool takes no variable for.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import yaml

from conveyor.domain.job_variables import IMAGE, QUANTITY
from conveyor.errors import FieldProblem

JV = "job_variables."
# One input each: (variable, label, help). The line inputs take one entry a line.
JV_TEXT: tuple[tuple[str, str, str], ...] = (
    ("cpu_request", "CPU request", "A Kubernetes quantity, e.g. 500m (half a core) or 2."),
    ("cpu_limit", "CPU limit", "e.g. 2; empty: the pool's default."),
    ("memory_request", "Memory request", "e.g. 512Mi or 1Gi."),
    ("memory_limit", "Memory limit", "e.g. 4Gi; a run using more is killed (OOMKilled)."),
    ("image", "Image", "The flow run's image, e.g. registry.example/conveyor:1.2.3 or …@sha256:…"),
)
JV_LINES = ("node_selector", "tolerations", "env")
JV_INPUTS = tuple(JV + name for name in (*(n for n, _, _ in JV_TEXT), *JV_LINES))
_QUANTITY_HINT = "write e.g. 500m or 2 for CPU, 512Mi or 4Gi for memory"
_TAINT_LINE = re.compile(r"^([^=:\s]+)(?:=([^:\s]*))?(?::(\w+))?$")


def _pairs_text(pairs: Mapping[str, Any] | None) -> str:
    return "\n".join(f"{k}={v}" for k, v in (pairs or {}).items())


def tolerations_text(tolerations: list[dict[str, Any]] | None) -> str:
    """Tolerations as the form shows them: one ``key=value:Effect`` line each (``key:Effect``
    for operator Exists) when they all fit that, else one YAML item a line."""
    items = list(tolerations or [])
    lines = []
    for t in items:
        if t.get("key") is None or t.get("tolerationSeconds") is not None:
            return "\n".join(f"- {json.dumps(t)}" for t in items)
        exists = t.get("operator") == "Exists"
        line = t["key"] if exists else f"{t['key']}={t.get('value') or ''}"
        lines.append(line + (f":{t['effect']}" if t.get("effect") else ""))
    return "\n".join(lines)


def job_variable_values(variables: Mapping[str, Any] | None) -> dict[str, str]:
    """The Advanced inputs, filled from a connector's job variables (empty: the pool's)."""
    v = variables or {}
    return {
        **{JV + name: str(v.get(name) or "") for name, _, _ in JV_TEXT},
        JV + "node_selector": _pairs_text(v.get("node_selector")),
        JV + "tolerations": tolerations_text(v.get("tolerations")),
        JV + "env": _pairs_text(v.get("env")),
    }


def _lines(text: str) -> list[tuple[int, str]]:
    return [
        (n, line.strip())
        for n, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.strip().startswith("#")
    ]


def _pairs(name: str, text: str, what: str, problems: list[FieldProblem]) -> dict[str, str] | None:
    """``KEY=value`` lines (blank lines and # comments skipped) as a dict; None when empty."""
    out: dict[str, str] = {}
    for n, line in _lines(text):
        key, eq, value = line.partition("=")
        key = key.strip()
        if not eq or not key:
            problems.append(FieldProblem(JV + name, f"line {n}: '{line}' is not {what}"))
        elif key in out:
            problems.append(FieldProblem(JV + name, f"line {n}: {key} is given twice"))
        else:
            out[key] = value.strip()
    return out or None


def _tolerations(text: str, problems: list[FieldProblem]) -> list[Any] | None:
    """Tolerations from ``key=value:Effect`` / ``key:Effect`` / ``key`` lines, or from a
    YAML or JSON list of Kubernetes tolerations."""
    loc = JV + "tolerations"
    stripped = text.strip()
    if not stripped:
        return None
    if stripped[0] in "[{-":
        try:
            data = yaml.safe_load(stripped)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            problems.append(FieldProblem(loc, f"not valid YAML or JSON{where}"))
            return None
        data = [data] if isinstance(data, dict) else data
        if not isinstance(data, list) or not all(isinstance(t, dict) for t in data):
            problems.append(
                FieldProblem(loc, "write a list of tolerations: - {key: etl, effect: NoSchedule}")
            )
            return None
        return data
    out: list[dict[str, Any]] = []
    for n, line in _lines(text):
        m = _TAINT_LINE.match(line)
        if m is None:
            problems.append(
                FieldProblem(loc, f"line {n}: '{line}' is not key=value:Effect, key:Effect or key")
            )
            continue
        key, value, effect = m[1], m[2], m[3]
        t: dict[str, Any] = {"key": key, "operator": "Exists" if value is None else "Equal"}
        if value is not None:
            t["value"] = value
        if effect:
            t["effect"] = effect
        out.append(t)
    return out or None


def job_variables_from(
    values: Mapping[str, Any], problems: list[FieldProblem]
) -> dict[str, Any] | None:
    """The job variables the Advanced inputs ask for (None: all empty, the pool's defaults).
    Quantities and the image are checked here for a plain-words error; the rest (label keys,
    env names, tolerations' fields) by the model, on the same field."""
    out: dict[str, Any] = {}
    for name, _label, _help in JV_TEXT:
        raw = str(values.get(JV + name) or "").strip()
        if not raw:
            continue
        if name == "image" and not re.match(IMAGE, raw):
            problems.append(
                FieldProblem(
                    JV + name,
                    f"'{raw}' is not an image reference: a lowercase repository with an "
                    "optional :tag and @sha256: digest, e.g. registry.example/conveyor:1.2.3",
                )
            )
        elif name != "image" and not re.match(QUANTITY, raw):
            problems.append(
                FieldProblem(JV + name, f"'{raw}' is not a Kubernetes quantity: {_QUANTITY_HINT}")
            )
        out[name] = raw
    selector = _pairs(
        "node_selector", str(values.get(JV + "node_selector") or ""), "key=value", problems
    )
    tolerations = _tolerations(str(values.get(JV + "tolerations") or ""), problems)
    env = _pairs("env", str(values.get(JV + "env") or ""), "NAME=value", problems)
    for name, value in (("node_selector", selector), ("tolerations", tolerations), ("env", env)):
        if value is not None:
            out[name] = value
    return out or None


def advanced_inputs(accepted: frozenset[str], values: Mapping[str, Any]) -> dict[str, bool]:
    """Which Advanced inputs are switched off: those the pool takes no variable for, unless
    they hold a value (then the save's pool check says why, on the field)."""
    return {
        JV + name: name not in accepted and not str(values.get(JV + name) or "").strip()
        for name in (*(n for n, _, _ in JV_TEXT), *JV_LINES)
    }
