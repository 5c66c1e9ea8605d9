"""YAML with positions: parse a file, keep the tree for ``file:line:col`` locations, and
turn parse errors and pydantic errors into FieldProblems that point into the file."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError

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


@dataclass
class Doc:
    """One parsed file: its name, directory and YAML tree (for line numbers)."""

    file: str
    base_dir: Path | None
    raw: Any

    def where(self, loc: Loc = (), *, key: bool = False) -> str:
        line, col = position(self.raw, loc, key=key)
        return f"{self.file}:{line}:{col}"

    def problem(self, loc: Loc, reason: str, *, key: bool = False) -> FieldProblem:
        dotted = ".".join(str(p) for p in loc)
        return FieldProblem(self.where(loc, key=key), f"{dotted}: {reason}" if dotted else reason)


def too_large(size: int) -> str:
    return (
        f"file is {size / 1_000_000:.1f} MB; a deployment file may be at most "
        f"{MAX_FILE_BYTES // 1024 // 1024} MB (one connector per file)"
    )


def parse(
    name: str,
    content: bytes | str,
    base_dir: Path | None,
    yaml: YAML,
    problems: list[FieldProblem],
) -> tuple[Doc, dict[str, Any]] | None:
    """The file's tree and its plain-dict form, or None (with the problem recorded)."""
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
        raw = yaml.load(text)
    except DuplicateKeyError as exc:
        key = (exc.problem or "").split('"')[1] if '"' in (exc.problem or "") else "?"
        problems.append(FieldProblem(_mark(name, exc), f"duplicate key '{key}'"))
        return None
    except MarkedYAMLError as exc:
        reason = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        problems.append(FieldProblem(_mark(name, exc), f"YAML syntax error: {reason}"))
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
    return doc, plain(raw)


def _mark(name: str, exc: MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    return f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else f"{name}:1:1"


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


def plain(node: Any) -> Any:
    """ruamel's commented containers and scalar subclasses as plain Python values."""
    if isinstance(node, CommentedMap):
        return {k if isinstance(k, str) else str(k): plain(v) for k, v in node.items()}
    if isinstance(node, CommentedSeq):
        return [plain(v) for v in node]
    if isinstance(node, str):
        return str(node)
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, datetime | date):
        # JSON columns hold no dates: keep what the user wrote, as ISO text.
        return node.isoformat()
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
