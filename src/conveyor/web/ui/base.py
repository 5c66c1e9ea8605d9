"""What every UI page shares: templates, the logged-in user, flash messages, error pages."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from conveyor.domain.vocabulary import PAUSED_MEANS, RESUME_TO_RUN
from conveyor.errors import ConveyorError, NotAuthenticated, ValidationFailed
from conveyor.services import users as users_service
from conveyor.services.authz import ROLES, Actor
from conveyor.settings import Settings
from conveyor.web.deps import SESSION_TOKEN_KEY, SESSION_USER_KEY, session_user, unit_of_work
from conveyor.web.errors import status_for
from conveyor.web.ui import csrf

log = logging.getLogger("conveyor.web.ui")

WEB_DIR = Path(__file__).resolve().parent.parent
templates = Jinja2Templates(directory=str(WEB_DIR / "templates"))
FLASH_KEY = "flash"
# Security headers (CSP, framing, sniffing, referrer) are set on every response, pages
# included, by conveyor.web.headers.


# --- formatting filters --------------------------------------------------------------


def fmt_dt(value: datetime | None, tz: str | None = None) -> str:
    """'2025-03-01 14:05 UTC' (or in ``tz``); an em dash for nothing."""
    if value is None:
        return "—"
    zone = ZoneInfo(tz) if tz else UTC
    local = value.astimezone(zone)
    return local.strftime("%Y-%m-%d %H:%M ") + (local.tzname() or "")


def fmt_ago(value: datetime | None, now: datetime | None = None) -> str:
    """'3 min ago', 'in 2 h'."""
    if value is None:
        return "—"
    seconds = ((now or datetime.now(UTC)) - value).total_seconds()
    future = seconds < 0
    s = abs(seconds)
    if s < 60:
        text = f"{int(s)} s"
    elif s < 3600:
        text = f"{int(s // 60)} min"
    elif s < 86400 * 2:
        text = f"{int(s // 3600)} h"
    else:
        text = f"{int(s // 86400)} days"
    return f"in {text}" if future else f"{text} ago"


def fmt_duration(seconds: float | None) -> str:
    """'850 ms', '42 s', '3 min 12 s', '2 h 5 min'."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{int(seconds * 1000)} ms"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{int(seconds)} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


def fmt_num(value: int | float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,}".replace(",", "\u202f")  # narrow no-break space groups digits


templates.env.filters.update(dt=fmt_dt, ago=fmt_ago, duration=fmt_duration, num=fmt_num)
# One wording for a paused connector on every page (the API's 409 says the same).
templates.env.globals.update(PAUSED_MEANS=PAUSED_MEANS, RESUME_TO_RUN=RESUME_TO_RUN)


# --- who is asking ---------------------------------------------------------------------


class LoginRequired(NotAuthenticated):
    """No logged-in user: the UI sends the browser to the login page."""


def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def ui_actor(request: Request) -> Actor:
    """The logged-in user (from the session cookie), else a redirect to the login page."""
    if request.session.get(SESSION_USER_KEY) is not None:
        with unit_of_work(get_settings(request)) as session:
            user = session_user(request, session)
            if user is not None:
                actor = users_service.actor_for(user)
                request.state.actor = actor
                return actor
        request.session.pop(SESSION_USER_KEY, None)
        request.session.pop(SESSION_TOKEN_KEY, None)
    raise LoginRequired("please log in")


UIActor = Annotated[Actor, Depends(ui_actor)]


def at_least(actor: Actor | None, role: str) -> bool:
    return actor is not None and ROLES.index(actor.role) >= ROLES.index(role)


def can_change_connector(actor: Actor | None, owner_id: int | None) -> bool:
    """Mirror of services.authz.require_owner_or_admin, to hide controls that would fail."""
    if actor is None or not at_least(actor, "editor"):
        return False
    return actor.is_admin or owner_id == actor.user_id


def can_change_endpoint(actor: Actor | None, created_by: str | None) -> bool:
    if actor is None or not at_least(actor, "editor"):
        return False
    return actor.is_admin or created_by == actor.username


# --- rendering -------------------------------------------------------------------------


def flash(request: Request, message: str, kind: str = "ok") -> None:
    """Show ``message`` on the next page rendered for this session."""
    # Reassigned, not appended in place: the session only saves changes it sees.
    request.session[FLASH_KEY] = [*request.session.get(FLASH_KEY, []), [kind, message]]


def render(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """Render ``name`` with what every page needs (user, CSRF token, flashes, nav)."""
    actor: Actor | None = getattr(request.state, "actor", None)
    is_partial = name.startswith("partials/")
    ctx: dict[str, Any] = {
        "actor": actor,
        "csrf_token": csrf.token(request),
        "flashes": [] if is_partial else request.session.pop(FLASH_KEY, []),
        "is_editor": at_least(actor, "editor"),
        "is_admin": at_least(actor, "admin"),
        "path": request.url.path,
        "settings": get_settings(request),
    }
    ctx.update(context or {})
    return templates.TemplateResponse(request, name, ctx, status_code=status_code, headers=headers)


def redirect(request: Request, url: str) -> Response:
    """303 to ``url``; for htmx requests the HX-Redirect header does the same."""
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def error_page(request: Request, exc: ConveyorError) -> Response:
    status = status_for(exc)
    if isinstance(exc, NotAuthenticated):
        nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        target = "/login" if request.url.path == "/" else f"/login?next={quote(nxt, safe='')}"
        return redirect(request, target)
    if request.headers.get("hx-request"):
        # htmx swaps only 2xx responses by default; retarget so the reason is visible.
        return render(
            request,
            "partials/error.html",
            {"reason": exc.reason, "hint": exc.hint, "status": status},
            status_code=200,
            headers={"HX-Retarget": "#toast", "HX-Reswap": "innerHTML"},
        )
    return render(
        request,
        "error.html",
        {"reason": exc.reason, "hint": exc.hint, "status": status},
        status_code=status,
    )


class UIRoute(APIRoute):
    """Routes whose Conveyor errors become HTML pages (or a login redirect), not JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def ui_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except ConveyorError as exc:
                return error_page(request, exc)
            except RequestValidationError as exc:
                fields = ", ".join(".".join(str(p) for p in e["loc"][1:]) for e in exc.errors())
                return error_page(
                    request, ValidationFailed.field(fields, "is missing or malformed")
                )

        return ui_handler
