"""The FastAPI application: JSON API under /api/v1 (OpenAPI at /docs, /redoc) and the UI."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
import uuid
from typing import Any

from fastapi import FastAPI
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor import __version__
from conveyor.logs import REQUEST_ID
from conveyor.secrets import SecretBox, install_log_masking
from conveyor.settings import Settings, get_settings
from conveyor.web import api_docs, errors, openapi, ui
from conveyor.web.api import (
    connectors,
    deployments,
    endpoints,
    meta,
    metrics,
    notification_channels,
    runs,
    sync,
    users,
    versions,
)
from conveyor.web.headers import SecurityHeaders

MAX_BODY_BYTES = 1024 * 1024
API_PREFIX = "/api/v1"

log = logging.getLogger("conveyor.web")


class RequestLog:
    """Gives every request an id (``X-Request-ID``; the audit log and the log lines carry
    it) and writes its access log line. Plain ASGI: Starlette's ``BaseHTTPMiddleware``
    runs each request in an extra task and stream, a measurable share of a small request.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # A caller's id is kept only if it is short and plain, so logs cannot be forged.
        given = Headers(scope=scope).get("x-request-id", "")
        rid = given if 0 < len(given) <= 64 and given.isprintable() else uuid.uuid4().hex
        token = REQUEST_ID.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            # The access log line is written here, while the request id is still set.
            method, path = scope["method"], scope["path"]
            log.info(
                "%s %s %d %.1fms",
                method,
                path,
                status,
                (time.perf_counter() - started) * 1000,
                extra={"method": method, "path": path, "status": status},
            )
            REQUEST_ID.reset(token)


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


class ConveyorApp(FastAPI):
    """FastAPI with the security headers outermost: outside Starlette's error middleware
    too, so every response (a 500 from an unhandled exception included) carries them."""

    def __init__(self, *, https_only: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.https_only = https_only

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(super().build_middleware_stack(), https_only=self.https_only)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for ``settings`` (default: from the environment)."""
    settings = settings or get_settings()
    keys = settings.secret_keys()
    app = ConveyorApp(
        https_only=settings.session_secure_cookie,
        title="Conveyor",
        version=__version__,
        description="Connectors in a database, one Prefect deployment each, data moved by dlt.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        # FastAPI's pages load their scripts from a CDN; api_docs serves vendored copies.
        docs_url=None,
        redoc_url=None,
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
        sync.router,
        users.router,
        deployments.router,
        notification_channels.router,
        versions.connectors,
        versions.sources,
        versions.destinations,
    ):
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(metrics.router)  # /metrics at the root, where Prometheus looks
    app.include_router(api_docs.make_router(app.title, f"{API_PREFIX}/openapi.json"))
    ui.install(app)  # HTML pages at the root, assets under /static
    openapi.install(app)  # error models and statuses for every route (web/openapi.py)

    app.add_middleware(
        SessionMiddleware,
        secret_key=_session_secret(keys),
        session_cookie="conveyor_session",
        same_site="lax",
        https_only=settings.session_secure_cookie,
        max_age=12 * 3600,
    )
    app.add_middleware(BodySizeLimit)
    app.add_middleware(RequestLog)
    return app
