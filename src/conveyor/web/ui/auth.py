"""Login, logout and changing your own password (the signed session cookie holds the user
id, the login's token and the CSRF token; the login itself is a ui_sessions row, deleted on
logout, on a password change and when the user is disabled)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request, Response

from conveyor.errors import TooManyAttempts, ValidationFailed
from conveyor.services import users as users_service
from conveyor.services.login_throttle import Limits
from conveyor.web.deps import SESSION_TOKEN_KEY, SESSION_USER_KEY, unit_of_work
from conveyor.web.ui import csrf
from conveyor.web.ui.base import UIActor, UIRoute, flash, get_settings, redirect, render

router = APIRouter(route_class=UIRoute)


def safe_next(target: str | None) -> str:
    """Only same-site paths: '/connectors?x=1' yes, '//evil.example' or 'https://...' no."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/connectors"
    return target


def client_address(request: Request) -> str:
    """Where the request comes from (behind a proxy, as uvicorn's proxy headers say)."""
    return request.client.host if request.client else "unknown"


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
    settings = get_settings(request)
    try:
        with unit_of_work(settings) as session:
            user = users_service.login(
                username.strip(),
                password,
                address=client_address(request),
                limits=Limits.from_settings(settings),
                session=session,
            )
            uid = user.id if user else None
            token = users_service.start_ui_session(user, session=session) if user else None
    except TooManyAttempts as exc:
        return render(
            request,
            "login.html",
            {"next": safe_next(next), "username": username, "errors": {"password": exc.reason}},
            status_code=429,
            headers={"Retry-After": str(exc.retry_after)},
        )
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
        with unit_of_work(get_settings(request)) as session:
            users_service.end_ui_session(token, session=session)
    request.session.clear()
    return redirect(request, "/login")


@router.get("/", include_in_schema=False)
def home(request: Request, actor: UIActor) -> Response:
    return redirect(request, "/connectors")


@router.get("/account/password", include_in_schema=False)
def password_page(request: Request, actor: UIActor) -> Response:
    """Any logged-in user changes their own password here."""
    return render(request, "account/password.html", {"errors": {}})


@router.post("/account/password", include_in_schema=False)
def change_password(
    request: Request,
    actor: UIActor,
    current_password: Annotated[str, Form()] = "",
    new_password: Annotated[str, Form()] = "",
    confirm_password: Annotated[str, Form()] = "",
) -> Response:
    settings = get_settings(request)
    errors: dict[str, str] = {}
    headers: dict[str, str] = {}
    token, revoked = None, 0
    if new_password != confirm_password:
        errors["confirm_password"] = "does not match the new password"
    else:
        try:
            # Ends every login of this user, this browser's included; this browser, having
            # just shown the current password, gets a new login in the same transaction.
            with unit_of_work(settings) as session:
                ended = users_service.change_own_password(
                    current_password,
                    new_password,
                    address=client_address(request),
                    limits=Limits.from_settings(settings),
                    session=session,
                    actor=actor,
                )
                if ended is None:
                    errors["current_password"] = "is not your current password"
                else:
                    assert actor.user_id is not None
                    user = users_service.get(actor.user_id, session=session)
                    token = users_service.start_ui_session(user, session=session)
                    revoked = ended.tokens
        except ValidationFailed as exc:
            errors.update({p.loc: p.reason for p in exc.problems})
        except TooManyAttempts as exc:
            errors["current_password"] = exc.reason
            headers["Retry-After"] = str(exc.retry_after)
    if token is None:
        status = 429 if headers else 422
        return render(
            request,
            "account/password.html",
            {"errors": errors},
            status_code=status,
            headers=headers,
        )
    request.session[SESSION_TOKEN_KEY] = token
    csrf.rotate(request)
    flash(
        request,
        f"Password changed. Your other logins ended and your {revoked} API token(s) "
        "were revoked: make new ones on the API tokens page.",
    )
    return redirect(request, "/connectors")
