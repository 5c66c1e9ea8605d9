"""The FastAPI application: JSON API under /api/v1 (OpenAPI at /docs) and the UI."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor import __version__
from conveyor.secrets import SecretBox, install_log_masking
from conveyor.services.audit import REQUEST_ID
from conveyor.settings import Settings, get_settings
from conveyor.web import errors, ui
from conveyor.web.api import connectors, deployments, endpoints, meta, metrics, runs, users

MAX_BODY_BYTES = 1024 * 1024
API_PREFIX = "/api/v1"

log = logging.getLogger("conveyor.web")


class BodySizeLimit:
    """Refuse request bodies over the limit with 413, before anything reads them."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _too_large(send, self.limit)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _BodyTooLarge:
            await _too_large(send, self.limit)


class _BodyTooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    body = b'{"detail":"request body is larger than %d bytes"}' % limit
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _session_secret(box_keys: list[bytes]) -> str:
    # Derived from the newest secret key, so no extra secret needs managing.
    return hmac.new(box_keys[0], b"conveyor-session", hashlib.sha256).hexdigest()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for ``settings`` (default: from the environment)."""
    settings = settings or get_settings()
    keys = settings.secret_keys()
    app = FastAPI(
        title="Conveyor",
        version=__version__,
        description="Connectors in a database, one Prefect deployment each, data moved by dlt.",
        docs_url="/docs",
        openapi_url=f"{API_PREFIX}/openapi.json",
    )
    app.state.settings = settings
    app.state.secret_box = SecretBox(keys)
    install_log_masking()

    errors.install(app)
    for router in (
        meta.router,
        endpoints.sources,
        endpoints.destinations,
        endpoints.source_types,
        endpoints.destination_types,
        connectors.router,
        runs.router,
        users.router,
        deployments.router,
    ):
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(metrics.router)  # /metrics at the root, where Prometheus looks
    ui.install(app)  # HTML pages at the root, assets under /static

    @app.middleware("http")
    async def request_id(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        # A caller's id is kept only if it is short and plain, so logs cannot be forged.
        given = request.headers.get("x-request-id", "")
        rid = given if 0 < len(given) <= 64 and given.isprintable() else uuid.uuid4().hex
        token = REQUEST_ID.set(rid)
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
        finally:
            # The access log line is written here, while the request id is still set.
            log.info(
                "%s %s %d %.1fms",
                request.method,
                request.url.path,
                status,
                (time.perf_counter() - started) * 1000,
                extra={"method": request.method, "path": request.url.path, "status": status},
            )
            REQUEST_ID.reset(token)
        response.headers["X-Request-ID"] = rid
        return response

    app.add_middleware(
        SessionMiddleware,
        secret_key=_session_secret(keys),
        session_cookie="conveyor_session",
        same_site="lax",
        https_only=settings.session_secure_cookie,
        max_age=12 * 3600,
    )
    app.add_middleware(BodySizeLimit)
    return app
