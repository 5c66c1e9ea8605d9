"""Administration pages: users (roles, password resets, disable, delete), API tokens
(shown once), the audit log."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, Response
from pydantic import ValidationError

from conveyor.domain.models import Id, UserCreate
from conveyor.errors import Conflict, NotFound, ValidationFailed
from conveyor.pipelines.registry import pydantic_problems
from conveyor.services import audit
from conveyor.services import users as users_svc
from conveyor.services.authz import ROLES, Actor, require_role
from conveyor.web.deps import unit_of_work
from conveyor.web.ui.base import UIActor, UIRoute, flash, get_settings, redirect, render

router = APIRouter(route_class=UIRoute)
AUDIT_PAGE = 50
ENTITY_TYPES = (
    "connector",
    "source",
    "destination",
    "run",
    "notification_channel",
    "user",
    "api_token",
)


def _users_page(
    request: Request, errors: dict[str, str] | None = None, form: dict[str, str] | None = None
) -> dict[str, Any]:
    settings = get_settings(request)
    with unit_of_work(settings) as session:
        users = [
            {
                "id": u.id,
                "username": u.username,
                "role": u.role,
                "is_active": u.is_active,
                "created_at": u.created_at,
            }
            for u in users_svc.list_users(session=session)
        ]
    return {"users": users, "roles": ROLES, "errors": errors or {}, "form": form or {}}


@router.get("/admin/users", include_in_schema=False)
def users_page(request: Request, actor: UIActor) -> Response:
    require_role(actor, "admin", "manage users")
    return render(request, "admin/users.html", _users_page(request))


@router.post("/admin/users", include_in_schema=False)
def create_user(
    request: Request,
    actor: UIActor,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = "viewer",
) -> Response:
    require_role(actor, "admin", "manage users")
    errors: dict[str, str] = {}
    try:
        data = UserCreate(username=username.strip(), password=password, role=role)  # type: ignore[arg-type]
    except ValidationError as exc:
        for p in pydantic_problems(exc):
            errors[p.loc] = p.reason
    else:
        try:
            with unit_of_work(get_settings(request)) as session:
                users_svc.create_user(data, session=session, actor=actor)
        except Conflict as exc:
            errors["username"] = exc.reason
        except ValidationFailed as exc:
            errors.update({p.loc: p.reason for p in exc.problems})
    if errors:
        ctx = _users_page(request, errors, {"username": username, "role": role})
        return render(request, "admin/users.html", ctx, status_code=422)
    flash(request, f"Created user '{username.strip()}' ({role}).")
    return redirect(request, "/admin/users")


@router.post("/admin/users/{user_id:int}/role", include_in_schema=False)
def set_role(
    request: Request, user_id: Id, actor: UIActor, role: Annotated[str, Form()] = ""
) -> Response:
    require_role(actor, "admin", "manage users")
    with unit_of_work(get_settings(request)) as session:
        user = users_svc.set_role(user_id, role, session=session, actor=actor)
        name = user.username
    flash(request, f"'{name}' is now {role}.")
    return redirect(request, "/admin/users")


@router.post("/admin/users/{user_id:int}/password", include_in_schema=False)
def reset_password(
    request: Request, user_id: Id, actor: UIActor, password: Annotated[str, Form()] = ""
) -> Response:
    require_role(actor, "admin", "reset passwords")
    try:
        with unit_of_work(get_settings(request)) as session:
            ended = users_svc.reset_password(user_id, password, session=session, actor=actor)
            name = users_svc.get(user_id, session=session).username
    except ValidationFailed as exc:
        errors = {f"password-{user_id}": p.reason for p in exc.problems}
        return render(request, "admin/users.html", _users_page(request, errors), status_code=422)
    flash(
        request,
        f"New password set for '{name}': {ended.sessions} login(s) ended, "
        f"{ended.tokens} token(s) revoked.",
    )
    return redirect(request, "/admin/users")


@router.post("/admin/users/{user_id:int}/disable", include_in_schema=False)
def disable_user(request: Request, user_id: Id, actor: UIActor) -> Response:
    return _set_active(request, user_id, actor, active=False)


@router.post("/admin/users/{user_id:int}/enable", include_in_schema=False)
def enable_user(request: Request, user_id: Id, actor: UIActor) -> Response:
    return _set_active(request, user_id, actor, active=True)


def _set_active(request: Request, user_id: Id, actor: Actor, *, active: bool) -> Response:
    require_role(actor, "admin", "disable or enable users")
    with unit_of_work(get_settings(request)) as session:
        name = users_svc.set_active(user_id, active, session=session, actor=actor).username
    if active:
        flash(request, f"'{name}' can log in again (with new API tokens: the old stay revoked).")
    else:
        flash(request, f"'{name}' is disabled: their logins ended and their tokens are revoked.")
    return redirect(request, "/admin/users")


@router.post("/admin/users/{user_id:int}/delete", include_in_schema=False)
def delete_user(request: Request, user_id: Id, actor: UIActor) -> Response:
    require_role(actor, "admin", "delete users")
    with unit_of_work(get_settings(request)) as session:
        name = users_svc.get(user_id, session=session).username
        users_svc.delete_user(user_id, session=session, actor=actor)
    flash(request, f"Deleted '{name}'. Their connectors are kept, with no owner.")
    return redirect(request, "/admin/users")


# --- tokens ----------------------------------------------------------------------------


def _tokens(request: Request, actor: Any) -> list[dict[str, Any]]:
    with unit_of_work(get_settings(request)) as session:
        return [
            {
                "id": t.id,
                "name": t.name,
                "username": t.user.username,
                "prefix": t.prefix,
                "created_at": t.created_at,
                "last_used_at": t.last_used_at,
                "revoked_at": t.revoked_at,
            }
            for t in users_svc.list_tokens(session=session, actor=actor)
        ]


@router.get("/admin/tokens", include_in_schema=False)
def tokens_page(request: Request, actor: UIActor) -> Response:
    """Everyone manages their own tokens here; admins see (and revoke) everyone's."""
    return render(
        request,
        "admin/tokens.html",
        {
            "tokens": _tokens(request, actor),
            "new_token": None,
            "errors": {},
            "users": _usernames(request, actor),
        },
    )


def _usernames(request: Request, actor: Any) -> list[str]:
    if not actor.is_admin:
        return [actor.username]
    with unit_of_work(get_settings(request)) as session:
        return [u.username for u in users_svc.list_users(session=session)]


@router.post("/admin/tokens", include_in_schema=False)
def create_token(
    request: Request,
    actor: UIActor,
    name: Annotated[str, Form()] = "",
    username: Annotated[str, Form()] = "",
) -> Response:
    name = name.strip()
    errors = {}
    if not name or len(name) > 100:
        errors["name"] = "give the token a name of 1 to 100 characters (what it is for)"
    token = None
    if not errors:
        try:
            with unit_of_work(get_settings(request)) as session:
                _row, token = users_svc.create_token(
                    username or actor.username, name, session=session, actor=actor
                )
        except NotFound as exc:
            errors["username"] = exc.reason
    ctx = {
        "tokens": _tokens(request, actor),
        "new_token": token,
        "new_token_name": name,
        "errors": errors,
        "users": _usernames(request, actor),
    }
    # The token is in this response only; it is never stored or shown again.
    return render(
        request,
        "admin/tokens.html",
        ctx,
        status_code=201 if token else 422,
        headers={"Cache-Control": "no-store"},
    )


@router.post("/admin/tokens/{token_id:int}/revoke", include_in_schema=False)
def revoke_token(request: Request, token_id: Id, actor: UIActor) -> Response:
    with unit_of_work(get_settings(request)) as session:
        users_svc.revoke_token(token_id, session=session, actor=actor)
    flash(request, "Token revoked: it no longer works.")
    return redirect(request, "/admin/tokens")


# --- audit -----------------------------------------------------------------------------


@router.get("/admin/audit", include_in_schema=False)
def audit_page(
    request: Request,
    actor: UIActor,
    user: str | None = None,
    entity_type: str | None = None,
    entity_id: str | None = None,
    action: str | None = None,
    before_id: Id | None = None,
) -> Response:
    require_role(actor, "admin", "read the audit log")
    filters = {
        "user": (user or "").strip(),
        "entity_type": (entity_type or "").strip(),
        "entity_id": (entity_id or "").strip(),
        "action": (action or "").strip(),
    }
    with unit_of_work(get_settings(request)) as session:
        rows = audit.list_entries(
            session=session,
            actor_name=filters["user"] or None,
            entity_type=filters["entity_type"] or None,
            entity_id=filters["entity_id"] or None,
            action=filters["action"] or None,
            before_id=before_id,
            limit=AUDIT_PAGE + 1,
        )
        entries = [
            {
                "id": r.id,
                "at": r.at,
                "actor": r.actor,
                "action": r.action,
                "entity_type": r.entity_type,
                "entity_id": r.entity_id,
                "label": _label(r.before, r.after),
                "changes": _changes(r.before, r.after),
            }
            for r in rows[:AUDIT_PAGE]
        ]
    more = len(rows) > AUDIT_PAGE
    return render(
        request,
        "admin/audit.html",
        {
            "entries": entries,
            "filters": {k: v for k, v in filters.items() if v},
            "f": filters,
            "entity_types": ENTITY_TYPES,
            "next_before": entries[-1]["id"] if more and entries else None,
            "before_id": before_id,
        },
    )


def _changes(
    before: dict[str, Any] | None, after: dict[str, Any] | None
) -> list[tuple[str, str, str]]:
    """(field, old, new) for each field that differs; values already masked."""
    before, after = before or {}, after or {}
    keys = sorted(set(before) | set(after))
    out = []
    for k in keys:
        old, new = before.get(k), after.get(k)
        if old != new:
            out.append((k, _short(old), _short(new)))
    return out


def _label(before: dict[str, Any] | None, after: dict[str, Any] | None) -> str | None:
    """The changed thing's name, as its snapshot recorded it."""
    for snap in (after, before):
        if snap:
            for key in ("name", "username"):
                if isinstance(snap.get(key), str):
                    return str(snap[key])
    return None


def _short(value: Any) -> str:
    text = "—" if value is None else str(value)
    return text if len(text) <= 80 else text[:77] + "…"
