"""Security headers on every response the web app sends: pages, JSON, errors, static files.

One ASGI wrapper around the whole app (outside Starlette's error middleware too, so even an
unhandled-exception 500 carries them). The Content-Security-Policy allows no inline script
and no eval anywhere: the UI's behaviour lives in /static/app.js and htmx runs with
``allowEval: false``. Styles come from /static only, except on /redoc, whose vendored
renderer writes its styles from JavaScript.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The fetch directives name every kind a page here loads; nothing comes from elsewhere.
_BASE = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "font-src": "'self'",
    "connect-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'self'",
    "frame-ancestors": "'none'",
    "form-action": "'self'",
}
# ReDoc (styled-components) writes <style> elements at run time and runs its search in a
# worker made from a blob: URL. Inline *styles* only: its scripts are static files, and
# eval stays forbidden. Swagger UI on /docs works under the strict policy.
_REDOC = {**_BASE, "style-src": "'self' 'unsafe-inline'", "worker-src": "'self' blob:"}


def _policy(directives: dict[str, str]) -> str:
    return "; ".join(f"{name} {value}" for name, value in directives.items())


CSP = _policy(_BASE)
REDOC_CSP = _policy(_REDOC)
_CSP_FOR_PATH = {"/redoc": REDOC_CSP}

HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Permissions-Policy": (
        "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), "
        "microphone=(), payment=(), usb=()"
    ),
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
HSTS = "max-age=31536000; includeSubDomains"


def headers_for(path: str, *, https_only: bool) -> dict[str, str]:
    """The security headers a response to ``path`` carries."""
    out = {
        **HEADERS,
        "Content-Security-Policy": _CSP_FOR_PATH.get(path, CSP),
    }
    if https_only:
        out["Strict-Transport-Security"] = HSTS
    return out


class SecurityHeaders:
    """Sets :func:`headers_for` on every HTTP response, replacing any a route set itself."""

    def __init__(self, app: ASGIApp, *, https_only: bool) -> None:
        self.app = app
        self.https_only = https_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = headers_for(scope["path"], https_only=self.https_only)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in extra.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
