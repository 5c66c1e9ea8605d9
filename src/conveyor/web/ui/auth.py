"""Login and logout (the signed session cookie holds the user id, the login's token and the
CSRF token; the login itself is a ui_sessions row, deleted on logout)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request, Response

from conveyor.db.session import session_scope
from conveyor.services import users as users_service
from conveyor.web.deps import SESSION_TOKEN_KEY, SESSION_USER_KEY
from conveyor.web.ui import csrf
from conveyor.web.ui.base import UIActor, UIRoute, get_settings, redirect, render

router = APIRouter(route_class=UIRoute)


def safe_next(target: str | None) -> str:
    """Only same-site paths: '/connectors?x=1' yes, '//evil.example' or 'https://...' no."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/connectors"
    return target


@router.get("/login", include_in_schema=False)
def login_page(request: Request, next: str | None = None) -> Response:
    return render(request, "login.html", {"next": safe_next(next), "errors": {}})


@router.post("/login", include_in_schema=False)
def login(
    request: Request,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "",
) -> Response:
    with session_scope(get_settings(request).effective_database_url) as session:
        user = users_service.authenticate(username.strip(), password, session=session)
        uid = user.id if user else None
        token = users_service.start_ui_session(user, session=session) if user else None
    if uid is None or token is None:
        return render(
            request,
            "login.html",
            {
                "next": safe_next(next),
                "username": username,
                "errors": {"password": "Unknown user or wrong password"},
            },
            status_code=401,
        )
    # A new session on login: nothing set before (e.g. by someone else) carries over.
    request.session.clear()
    request.session[SESSION_USER_KEY] = uid
    request.session[SESSION_TOKEN_KEY] = token
    csrf.rotate(request)
    return redirect(request, safe_next(next))


@router.post("/logout", include_in_schema=False)
def logout(request: Request, actor: UIActor) -> Response:
    token = request.session.get(SESSION_TOKEN_KEY)
    if isinstance(token, str):
        with session_scope(get_settings(request).effective_database_url) as session:
            users_service.end_ui_session(token, session=session)
    request.session.clear()
    return redirect(request, "/login")


@router.get("/", include_in_schema=False)
def home(request: Request, actor: UIActor) -> Response:
    return redirect(request, "/connectors")
