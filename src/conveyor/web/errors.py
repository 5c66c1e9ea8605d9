"""The one place that maps Conveyor errors to HTTP responses."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.orm.exc import StaleDataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from conveyor.errors import (
    ConfigurationError,
    Conflict,
    ConveyorError,
    ExternalError,
    NotAuthenticated,
    NotFound,
    PermissionDenied,
    TooManyAttempts,
    ValidationFailed,
)

STATUS: list[tuple[type[ConveyorError], int]] = [
    (ValidationFailed, 422),
    (NotAuthenticated, 401),
    (PermissionDenied, 403),
    (NotFound, 404),
    (Conflict, 409),
    (TooManyAttempts, 429),
    (ExternalError, 502),
    (ConfigurationError, 500),
]


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def status_for(exc: ConveyorError) -> int:
    for cls, code in STATUS:
        if isinstance(exc, cls):
            return code
    return 400


def error_body(
    reason: str, hint: str | None = None, errors: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"detail": reason}
    if hint:
        body["hint"] = hint
    if errors:
        body["errors"] = errors
    return body


async def _conveyor_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ConveyorError)
    problems = (
        [{"field": p.loc, "reason": p.reason} for p in exc.problems]
        if isinstance(exc, ValidationFailed)
        else None
    )
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, NotAuthenticated) else None
    if isinstance(exc, TooManyAttempts):
        headers = {"Retry-After": str(exc.retry_after)}
    return JSONResponse(
        error_body(exc.reason, exc.hint, problems), status_code=status_for(exc), headers=headers
    )


def _loc(parts: tuple[Any, ...]) -> str:
    # Drop the "body"/"query" prefix and pydantic's union member names.
    keep = [str(p) for p in parts[1:] if not (isinstance(p, str) and p[:1].isupper())]
    return ".".join(keep) or str(parts[0])


async def _stale(request: Request, exc: Exception) -> JSONResponse:
    # An optimistic-lock UPDATE that matched no row: another request changed (or deleted)
    # the same row between our read and our write. A clash, not a server fault.
    return JSONResponse(
        error_body(
            "it was changed by another request at the same time",
            hint="read it again and retry",
        ),
        status_code=409,
    )


async def _request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            return JSONResponse(
                error_body(f"malformed JSON: {err.get('ctx', {}).get('error', err['msg'])}"),
                status_code=400,
            )
        msg = str(err["msg"]).removeprefix("Value error, ")
        errors.append({"field": _loc(tuple(err["loc"])), "reason": msg})
    reason = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
    return JSONResponse(error_body(reason, errors=errors), status_code=422)


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    """A 405 whose ``Allow`` lists every method of the path: Starlette names only those of
    the first route matching it, and here each method of a path is a route of its own."""
    assert isinstance(exc, StarletteHTTPException)
    routes = request.app.router.routes
    allowed = [
        method
        for method in _METHODS
        if any(r.matches({**request.scope, "method": method})[0] == Match.FULL for r in routes)
    ]
    exc.headers = {**(exc.headers or {}), "Allow": ", ".join(allowed)}
    return await http_exception_handler(request, exc)


def install(app: FastAPI) -> None:
    app.add_exception_handler(ConveyorError, _conveyor_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StaleDataError, _stale)
    app.add_exception_handler(405, _method_not_allowed)  # before any handler by class
