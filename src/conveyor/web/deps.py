"""FastAPI dependencies: settings, a transaction per request, and who is asking."""

from __future__ import annotations

import hmac
from contextlib import AbstractContextManager
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from conveyor.db.models import User
from conveyor.db.session import session_scope
from conveyor.errors import NotAuthenticated, PermissionDenied
from conveyor.secrets import SecretBox
from conveyor.services import users as users_service
from conveyor.services.authz import Actor
from conveyor.settings import Settings

SESSION_USER_KEY = "uid"
SESSION_TOKEN_KEY = "sid"  # names the login's ui_sessions row
CSRF_SESSION_KEY = "csrf"  # the login's CSRF token (web/ui/csrf.py makes and rotates it)
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Only documents the scheme in OpenAPI (Swagger's "Authorize"); _actor reads the header.
bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearerAuth",
    description="An API token (`cvt_...`), made on the API tokens page or with the CLI.",
)
BearerDoc = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_box(request: Request) -> SecretBox:
    return request.app.state.secret_box  # type: ignore[no-any-return]


def unit_of_work(settings: Settings) -> AbstractContextManager[Session]:
    """The web layer's one way to the database: a transaction of its own, committed when
    the block ends and rolled back if it raises, so a handler's answer follows its commit.

    Keep the block to the database work: on SQLite every transaction takes the write lock
    up front, so never hold one across a call to Prefect or another HTTP service (the runs
    service's Run now commits its record first, then calls Prefect).
    """
    return session_scope(settings.effective_database_url)


SettingsDep = Annotated[Settings, Depends(get_settings)]
BoxDep = Annotated[SecretBox, Depends(get_box)]


def current_actor(request: Request, _bearer: BearerDoc) -> Actor:
    """The user behind a bearer token or a UI session cookie; 401 otherwise.

    Uses a short transaction of its own: on SQLite every transaction takes the write
    lock up front, so a handler's own session must not wait behind this one.
    """
    with unit_of_work(request.app.state.settings) as session:
        return _actor(request, session)


def _actor(request: Request, session: Session) -> Actor:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        user = users_service.user_for_token(auth[7:].strip(), session=session)
        if user is None:
            raise NotAuthenticated("the API token is invalid or revoked")
        return users_service.actor_for(user)
    user = session_user(request, session)
    if user is not None:
        require_csrf_header(request)
        return users_service.actor_for(user)
    raise _unauthenticated()


class CsrfFailed(PermissionDenied):
    """The request's CSRF token is missing or wrong."""


def require_csrf_header(request: Request) -> None:
    """An unsafe request authenticated by the session cookie must carry the login's CSRF
    token in ``X-CSRF-Token``; a browser sends the cookie to any site's form or script,
    the token only to pages of this one. Bearer-token requests never get here.
    """
    if request.method in SAFE_METHODS:
        return
    expected = request.session.get(CSRF_SESSION_KEY)
    sent = request.headers.get(CSRF_HEADER, "")
    if not isinstance(expected, str) or not expected or not sent:
        raise CsrfFailed(
            "a request authenticated by the login cookie needs the X-CSRF-Token header",
            hint="send the page's CSRF token in X-CSRF-Token, or use 'Authorization: Bearer'",
        )
    if not hmac.compare_digest(expected.encode(), sent.encode()):
        raise CsrfFailed(
            "the X-CSRF-Token header does not match this login's token",
            hint="reload the page to get the current token",
        )


def _unauthenticated() -> NotAuthenticated:
    return NotAuthenticated(
        "authentication required", hint="send 'Authorization: Bearer <token>' or log in"
    )


def session_user(request: Request, session: Session) -> User | None:
    """The user of the browser login the session cookie names (None if logged out)."""
    if "session" not in request.scope:
        return None
    uid = request.session.get(SESSION_USER_KEY)
    token = request.session.get(SESSION_TOKEN_KEY)
    if not isinstance(uid, int) or not isinstance(token, str):
        return None
    return users_service.user_for_ui_session(uid, token, session=session)


CurrentActor = Annotated[Actor, Depends(current_actor)]


class Credentials:
    """What the request presents as its user, checked inside the caller's own transaction.

    For the busiest writes (connector changes): checking the token in the transaction that
    makes the change saves the request a transaction and a thread hop of its own.
    """

    def __init__(self, request: Request) -> None:
        self.request = request

    def actor(self, session: Session) -> Actor:
        return _actor(self.request, session)


async def credentials(request: Request, _bearer: BearerDoc) -> Credentials:
    """401 at once when the request carries no credentials at all (before the body is
    looked at); a token or login that is present is checked by ``Credentials.actor``."""
    has_token = request.headers.get("authorization", "").lower().startswith("bearer ")
    has_login = "session" in request.scope and isinstance(
        request.session.get(SESSION_USER_KEY), int
    )
    if not (has_token or has_login):
        raise _unauthenticated()
    return Credentials(request)


CredentialsDep = Annotated[Credentials, Depends(credentials)]
