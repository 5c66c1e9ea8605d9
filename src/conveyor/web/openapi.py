"""The OpenAPI document as the API really answers: every error body in the project's own
shape (``web/errors.py``), every status a route can give, and integer bounds exact.

FastAPI documents a 422 as its ``HTTPValidationError`` (``detail`` an array) and no other
error; Conveyor answers ``{"detail": "<reason>", "hint": ..., "errors": [...]}`` with the
status of the error's kind. ``install`` replaces ``app.openapi`` once for every route, so a
new route is documented like the others without doing anything. The document is checked
against the running API by schemathesis (``make fuzz-ci``, ``tests/fuzz/``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from conveyor.domain.models import DB_BIGINT_MAX

ERROR = "Error"
VALIDATION_ERROR = "ValidationErrorOut"
_WRITES = frozenset({"post", "put", "patch", "delete"})
_METHODS = frozenset({"get", "head", "options", *_WRITES})

_SCHEMAS: dict[str, dict[str, Any]] = {
    "FieldError": {
        "title": "FieldError",
        "type": "object",
        "required": ["field", "reason"],
        "properties": {
            "field": {"type": "string", "description": "Dotted field path, or file:line"},
            "reason": {"type": "string"},
        },
    },
    ERROR: {
        "title": "Error",
        "type": "object",
        "required": ["detail"],
        "properties": {
            "detail": {"type": "string", "description": "What went wrong, in one sentence"},
            "hint": {"type": "string", "description": "What to do about it"},
            "errors": {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}},
        },
    },
    VALIDATION_ERROR: {
        "title": "ValidationErrorOut",
        "type": "object",
        "required": ["detail", "errors"],
        "properties": {
            "detail": {"type": "string", "description": "Every problem, '; '-separated"},
            "hint": {"type": "string"},
            "errors": {
                "type": "array",
                "minItems": 1,
                "items": {"$ref": "#/components/schemas/FieldError"},
            },
        },
    },
}

_WHY = {
    400: "Malformed request (JSON that does not parse)",
    401: "No valid API token or login",
    403: "Your role may not do this (or a login cookie without its CSRF token)",
    404: "No such resource",
    409: "Clashes with the current state (a duplicate name, a stale version, still in use)",
    413: "Request body too large",
    422: "Invalid input: every field at fault, with the reason",
    429: "Too many failed attempts: wait Retry-After seconds",
    502: "A system Conveyor talks to (Prefect, a source, a destination) failed",
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}},
    429: {"Retry-After": {"schema": {"type": "string"}, "required": True}},
}


def also_answers(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that can also answer these (429, 502): the document
    gives each the error model like the rest."""
    return {status: {"description": _WHY.get(status, "Error")} for status in statuses}


def _content(status: int) -> dict[str, Any]:
    name = VALIDATION_ERROR if status == 422 else ERROR
    return {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}


def _statuses(path: str, method: str, op: dict[str, Any]) -> set[int]:
    """What the shared machinery answers for this operation, whatever its handler does."""
    found: set[int] = set()
    if "requestBody" in op:
        found |= {400, 413, 422}  # malformed JSON; over the size limit; invalid fields
    if op.get("parameters"):
        found.add(422)
    if "security" in op:
        found |= {401, 403}
    if "{" in path:
        found.add(404)
    if method in _WRITES and "security" in op:
        # Services refuse clashes and bad values by name, and a body can name something
        # that does not exist (POST /tokens for an unknown username).
        found |= {404, 409, 422}
    return found


def document_errors(doc: dict[str, Any]) -> dict[str, Any]:
    """Put the project's error model and statuses into ``doc`` (FastAPI's output)."""
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            if method not in _METHODS:
                continue
            responses = op.setdefault("responses", {})
            for status in sorted(_statuses(path, method, op) | _declared_errors(responses)):
                entry = responses.setdefault(str(status), {"description": _WHY.get(status, "")})
                entry["description"] = entry.get("description") or _WHY.get(status, "Error")
                entry.update(_content(status))
                if status in _HEADERS:
                    entry["headers"] = _HEADERS[status]
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas.update(_SCHEMAS)
    _exact_integers(doc)
    return doc


def _declared_errors(responses: dict[str, Any]) -> set[int]:
    return {int(code) for code in responses if code.isdigit() and int(code) >= 400}


def _exact_integers(node: Any) -> None:
    """FastAPI's OpenAPI models hold bounds as floats, which turns the largest id
    (2^63 - 1) into 2^63: put every whole bound back as an integer."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("minimum", "maximum") and isinstance(value, float) and value.is_integer():
                whole = int(value)
                node[key] = DB_BIGINT_MAX if whole == DB_BIGINT_MAX + 1 else whole
            else:
                _exact_integers(value)
    elif isinstance(node, list):
        for value in node:
            _exact_integers(value)


def install(app: FastAPI) -> None:
    """Serve the corrected document as the app's OpenAPI (built once, on first use)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                openapi_version=app.openapi_version,
            )
            app.openapi_schema = document_errors(doc)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
