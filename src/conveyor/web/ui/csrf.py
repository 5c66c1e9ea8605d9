"""CSRF protection: one random token per session, checked on every unsafe request.

Forms carry it in a hidden ``csrf_token`` field; htmx requests send it in the
``X-CSRF-Token`` header (set once on ``<body hx-headers=...>``, which htmx parses as JSON,
never evaluates). The JSON API asks cookie-authenticated writes for the same header
(``web/deps.py``, ``require_csrf_header``).
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import Request

from conveyor.web.deps import CSRF_HEADER, CSRF_SESSION_KEY, SAFE_METHODS, CsrfFailed

SESSION_KEY = CSRF_SESSION_KEY
FORM_FIELD = "csrf_token"
HEADER = CSRF_HEADER


def token(request: Request) -> str:
    """The session's token, created on first use."""
    value = request.session.get(SESSION_KEY)
    if not isinstance(value, str) or not value:
        value = request.session[SESSION_KEY] = secrets.token_urlsafe(32)
    return value


def rotate(request: Request) -> str:
    """A fresh token (on login, so a token seen before login is worthless after)."""
    request.session[SESSION_KEY] = secrets.token_urlsafe(32)
    return str(request.session[SESSION_KEY])


async def verify(request: Request) -> None:
    """Router dependency: refuse unsafe requests without the session's token."""
    if request.method in SAFE_METHODS:
        return
    expected = request.session.get(SESSION_KEY)
    sent = request.headers.get(HEADER)
    if not sent:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()  # cached by Starlette; handlers read it again for free
            value = form.get(FORM_FIELD)
            sent = value if isinstance(value, str) else None
    if not expected or not sent or not hmac.compare_digest(str(expected).encode(), sent.encode()):
        raise CsrfFailed(
            "the form's security token is missing or has expired",
            hint="reload the page and try again",
        )
