"""YAML with positions: parse a file with the C parser, keep where every key and value
starts (for ``file:line:col``), and turn parse errors and pydantic errors into
FieldProblems that point into the file.

Scalars follow the YAML 1.2 core schema (``yes``/``on`` are strings, ``010`` is ten, no
implicit dates), as editors and the JSON schema read them.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from conveyor.deployments_io.format import (
    MAX_FILE_BYTES,
    ConnectorBlock,
    DeploymentFile,
    Endpoint,
    Parameters,
    Schedule,
)
from conveyor.errors import FieldProblem

Loc = tuple[str | int, ...]
Pos = tuple[int, int]  # 1-based line, column


@dataclass
class Doc:
    """One parsed file: its name, directory and node tree (positions, found on demand)."""

    file: str
    base_dir: Path | None
    root: Node | None = field(default=None, repr=False)

    def where(self, loc: Loc = (), *, key: bool = False) -> str:
        line, col = self.position(loc, key=key)
        return f"{self.file}:{line}:{col}"

    def position(self, loc: Loc, *, key: bool = False) -> Pos:
        """Where the deepest existing part of ``loc`` starts: its value, or its key when
        ``key`` or when only a prefix exists (the field is missing)."""
        node, found, depth = self.root, None, 0
        for part in loc:
            pair = _child(node, part)
            if pair is None:
                break
            found, node, depth = pair, pair[1], depth + 1
        if found is None:
            return (1, 1)
        return _pos(found[0] if key or depth < len(loc) else found[1])

    def problem(self, loc: Loc, reason: str, *, key: bool = False) -> FieldProblem:
        dotted = ".".join(str(p) for p in loc)
        return FieldProblem(self.where(loc, key=key), f"{dotted}: {reason}" if dotted else reason)


def _child(node: Node | None, part: str | int) -> tuple[Node, Node] | None:
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.value == str(part):
                return key_node, value_node
    elif isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        return node.value[part], node.value[part]
    return None


_TAG = "tag:yaml.org,2002:"
# YAML 1.2 core schema, in the order they are tried.
_IMPLICIT = [
    (_TAG + "null", re.compile(r"^(?:~|null|Null|NULL|)$")),
    (_TAG + "bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")),
    (_TAG + "int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")),
    (
        _TAG + "float",
        re.compile(
            r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
            r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
        ),
    ),
]
_MAYBE_TYPED = frozenset("~nNtTfF-+.0123456789")


def implicit_tag(value: str) -> str:
    """The tag a plain (unquoted) scalar gets under YAML 1.2's core schema."""
    if not value or value[0] in _MAYBE_TYPED:
        for tag, pattern in _IMPLICIT:
            if pattern.match(value):
                return tag
    return _TAG + "str"


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The C parser with YAML 1.2 core-schema resolution (no path resolvers: this is
    called for every scalar, and PyYAML's general resolver dominated load time)."""

    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is ScalarNode:
            return implicit_tag(value) if implicit[0] else _TAG + "str"
        return _TAG + ("seq" if kind is SequenceNode else "map")


class _Problem(Exception):
    def __init__(self, node: Node, reason: str) -> None:
        super().__init__(reason)
        self.pos = _pos(node)
        self.reason = reason


def _pos(node: Node) -> Pos:
    return node.start_mark.line + 1, node.start_mark.column + 1


def too_large(size: int) -> str:
    return (
        f"file is {size / 1_000_000:.1f} MB; a deployment file may be at most "
        f"{MAX_FILE_BYTES // 1024 // 1024} MB (one connector per file)"
    )


def parse(
    name: str, content: bytes | str, base_dir: Path | None, problems: list[FieldProblem]
) -> tuple[Doc, dict[str, Any]] | None:
    """The file's positions and its data as plain values, or None (problem recorded)."""
    if len(content) > MAX_FILE_BYTES:
        problems.append(FieldProblem(f"{name}:1:1", too_large(len(content))))
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
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else f"{name}:1:1"
        reason = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        problems.append(FieldProblem(where, f"YAML syntax error: {reason}"))
        return None
    except yaml.YAMLError as exc:  # e.g. a control character the reader refuses
        problems.append(FieldProblem(f"{name}:1:1", f"YAML syntax error: {exc}"))
        return None
    doc = Doc(name, base_dir, root)
    if root is None:
        problems.append(FieldProblem(f"{name}:1:1", "file is empty"))
        return None
    if not isinstance(root, MappingNode):
        problems.append(FieldProblem(f"{name}:1:1", "the top level must be a mapping (name: ...)"))
        return None
    try:
        data = _build(root, set())
    except _Problem as exc:
        line, col = exc.pos
        problems.append(FieldProblem(f"{name}:{line}:{col}", exc.reason))
        return None
    return doc, data


def _build(node: Node, seen: set[int]) -> Any:
    """Plain values from the node tree; refuses aliases (shared nodes can blow a small
    file up into a huge document) and duplicate keys."""
    if id(node) in seen:
        raise _Problem(node, "YAML anchors and aliases are not supported")
    seen.add(id(node))
    if isinstance(node, MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                raise _Problem(key_node, "a key must be a plain value")
            key = _scalar(key_node)
            key = key if isinstance(key, str) else str(key)
            if key in out:
                raise _Problem(key_node, f"duplicate key '{key}'")
            out[key] = _build(value_node, seen)
        return out
    if isinstance(node, SequenceNode):
        return [_build(item, seen) for item in node.value]
    assert isinstance(node, ScalarNode)
    return _scalar(node)


def _scalar(node: ScalarNode) -> Any:
    tag, value = node.tag, node.value
    if tag == _TAG + "str":
        return value
    if tag == _TAG + "null":
        return None
    if tag == _TAG + "bool":
        return value.lower() == "true"
    if tag == _TAG + "int":
        if value.startswith(("0o", "0x")):
            return int(value[2:], 8 if value[1] == "o" else 16)
        return int(value, 10)
    if tag == _TAG + "float":
        lowered = value.lower().lstrip("+")
        if lowered in (".inf", "-.inf", ".nan"):
            return float(lowered.replace(".", ""))
        return float(value)
    raise _Problem(node, f"unsupported YAML tag {tag}")


# --- pydantic errors → file:line:col ------------------------------------------------

_MODELS_BY_PATH: dict[tuple[str, ...], type[BaseModel]] = {
    (): DeploymentFile,
    ("parameters",): Parameters,
    ("schedule",): Schedule,
    ("connector",): ConnectorBlock,
    ("connector", "source"): Endpoint,
    ("connector", "destination"): Endpoint,
}


def pydantic_problems(doc: Doc, exc: ValidationError) -> list[FieldProblem]:
    out = []
    for err in exc.errors(include_url=False):
        loc: Loc = tuple(p for p in err["loc"] if not _is_union_member(p))
        msg = str(err["msg"]).removeprefix("Value error, ")
        key = err["type"] == "extra_forbidden"
        if key and loc:
            parent = _MODELS_BY_PATH.get(tuple(str(p) for p in loc[:-1]))
            known = field_names(parent) if parent is not None else []
            msg = unknown_key(str(loc[-1]), known)
        elif err["type"] == "missing":
            msg = "is required"
        out.append(doc.problem(loc, msg, key=key))
    return out


def _is_union_member(part: Any) -> bool:
    return isinstance(part, str) and (part[:1].isupper() or part in ("str", "int", "none"))


def field_names(model: type[BaseModel]) -> list[str]:
    return sorted(f.alias or name for name, f in model.model_fields.items())


def unknown_key(key: str, known: list[str]) -> str:
    if not known:
        return f"unknown key '{key}'"
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f" (known: {', '.join(known)})"
    return f"unknown key '{key}'{hint}"
