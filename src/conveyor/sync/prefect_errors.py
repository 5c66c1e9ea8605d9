"""Prefect client failures as Conveyor errors: transient for connection errors, timeouts and
5xx (retry later), terminal for 4xx (the request itself is wrong; retrying it unchanged
cannot help)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from pydantic import ValidationError

from conveyor.errors import ExternalError


class PrefectUnavailable(ExternalError):
    """Prefect could not be reached or did not answer in time."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, hint="is the Prefect server running?", transient=True)


class ServerBusy(ExternalError):
    """Prefect took the request but did not answer in time."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, hint="the Prefect server is overloaded", transient=True)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        if isinstance(detail, list):  # FastAPI validation errors
            return "; ".join(
                f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}"
                for d in detail
                if isinstance(d, dict)
            ) or str(detail)
        return str(detail)
    return str(body)[:300]


def translate(exc: BaseException, doing: str) -> ExternalError | None:
    """The Conveyor error for a Prefect client failure, or None if it is not one."""
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    if isinstance(exc, ExternalError):
        return exc
    if isinstance(exc, ObjectNotFound | ObjectAlreadyExists):
        inner = exc.http_exc
        if isinstance(inner, httpx.HTTPStatusError):
            return translate(inner, doing)
        return ExternalError(f"Prefect refused to {doing}: {exc}")
    if isinstance(exc, httpx.HTTPStatusError):
        code = exc.response.status_code
        reason = f"Prefect answered {code} to {doing}: {_detail(exc.response)}"
        return ExternalError(reason, transient=code >= 500 or code in (408, 429))
    if isinstance(exc, httpx.ConnectTimeout):
        return PrefectUnavailable(f"cannot reach Prefect to {doing}: connection timed out")
    if isinstance(exc, httpx.TimeoutException):
        # Connected but no answer: an overloaded server, not a missing one.
        return ServerBusy(f"Prefect did not answer in time to {doing}")
    if isinstance(exc, httpx.ConnectError):
        return PrefectUnavailable(f"cannot reach Prefect to {doing}: {exc or type(exc).__name__}")
    if isinstance(exc, httpx.TransportError):
        # Connected, then the connection broke (a read or write error, the server closing
        # it mid-answer): this request failed, but the server is there — the rest of a
        # batch is still sent (PrefectUnavailable would stop it).
        return ServerBusy(f"Prefect dropped the connection to {doing}: {exc or type(exc).__name__}")
    if isinstance(exc, ValidationError):
        # The client validates schedules itself (e.g. a cron expression it rejects).
        why = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        return ExternalError(f"Prefect rejected the request to {doing}: {why}")
    if isinstance(exc, ValueError):
        return ExternalError(f"Prefect rejected the request to {doing}: {exc}")
    return None


@contextmanager
def prefect_errors(doing: str) -> Iterator[None]:
    """Re-raise Prefect client failures as ``ExternalError``."""
    try:
        yield
    except Exception as exc:
        err = translate(exc, doing)
        if err is None or err is exc:
            raise
        raise err from exc


def status_code(exc: ExternalError) -> int | None:
    """The HTTP status Prefect answered with, if it answered."""
    cause = exc.__cause__
    if isinstance(cause, httpx.HTTPStatusError):
        return cause.response.status_code
    http_exc = getattr(cause, "http_exc", None)
    if isinstance(http_exc, httpx.HTTPStatusError):
        return http_exc.response.status_code
    return None
