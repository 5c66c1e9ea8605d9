"""/users, /tokens and /audit: administration."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Request, Response

from conveyor.db.models import ApiToken
from conveyor.domain.models import (
    AccessEndedOut,
    AuditOut,
    Id,
    PasswordChange,
    PasswordReset,
    Role,
    TokenCreate,
    TokenCreated,
    TokenOut,
    UserCreate,
    UserOut,
    UserUpdate,
)
from conveyor.errors import ValidationFailed
from conveyor.services import audit
from conveyor.services import users as svc
from conveyor.services.authz import require_role
from conveyor.services.login_throttle import Limits
from conveyor.web.deps import CurrentActor, SettingsDep, unit_of_work
from conveyor.web.openapi import also_answers

router = APIRouter(tags=["admin"])


def _user_out(u: object) -> UserOut:
    return UserOut.model_validate(u, from_attributes=True)


def _token_out(t: ApiToken) -> TokenOut:
    return TokenOut(
        id=t.id,
        name=t.name,
        username=t.user.username,
        prefix=t.prefix,
        created_at=t.created_at,
        last_used_at=t.last_used_at,
        revoked_at=t.revoked_at,
    )


@router.get("/users", response_model=list[UserOut], summary="List users")
def list_users(settings: SettingsDep, actor: CurrentActor) -> list[UserOut]:
    with unit_of_work(settings) as session:
        require_role(actor, "admin", "list users")
        return [_user_out(u) for u in svc.list_users(session=session)]


@router.post("/users", response_model=UserOut, status_code=201, summary="Create a user")
def create_user(data: UserCreate, settings: SettingsDep, actor: CurrentActor) -> UserOut:
    with unit_of_work(settings) as session:
        return _user_out(svc.create_user(data, session=session, actor=actor))


@router.patch(
    "/users/{user_id}", response_model=UserOut, summary="Change a user's role, disable or enable"
)
def update_user(
    user_id: Id,
    settings: SettingsDep,
    actor: CurrentActor,
    data: Annotated[UserUpdate | None, Body()] = None,
    role: Annotated[Role | None, Query(deprecated=True, description="use the body")] = None,
) -> UserOut:
    """`{"role": "editor"}` and/or `{"disabled": true}`: disabling ends the user's logins
    and revokes their tokens at once. The last active admin cannot be demoted or disabled."""
    with unit_of_work(settings) as session:
        data = data or UserUpdate()
        role = data.role or role
        if role is None and data.disabled is None:
            raise ValidationFailed.field("role", "send 'role' and/or 'disabled'")
        user = None
        if role is not None:
            user = svc.set_role(user_id, role, session=session, actor=actor)
        if data.disabled is not None:
            user = svc.set_active(user_id, not data.disabled, session=session, actor=actor)
        return _user_out(user)


@router.delete("/users/{user_id}", status_code=204, summary="Delete a user")
def delete_user(user_id: Id, settings: SettingsDep, actor: CurrentActor) -> Response:
    """Their logins and tokens go with them; their connectors stay, owned by no one
    (admins manage them)."""
    with unit_of_work(settings) as session:
        svc.delete_user(user_id, session=session, actor=actor)
        return Response(status_code=204)


@router.post(
    "/users/{user_id}/password",
    response_model=AccessEndedOut,
    summary="Reset a user's password (admins)",
)
def reset_password(
    user_id: Id, data: PasswordReset, settings: SettingsDep, actor: CurrentActor
) -> AccessEndedOut:
    with unit_of_work(settings) as session:
        ended = svc.reset_password(user_id, data.password, session=session, actor=actor)
        return AccessEndedOut(sessions_ended=ended.sessions, tokens_revoked=ended.tokens)


@router.post(
    "/me/password",
    response_model=AccessEndedOut,
    summary="Change your own password",
    responses=also_answers(429),
)
def change_own_password(
    data: PasswordChange, request: Request, settings: SettingsDep, actor: CurrentActor
) -> AccessEndedOut:
    """Needs the current password (wrong guesses are throttled like logins). Ends every
    login and revokes every token of yours, the one making this request included."""
    # A transaction of its own: a wrong current password is recorded (committed), then
    # reported.
    with unit_of_work(settings) as session:
        ended = svc.change_own_password(
            data.current_password,
            data.new_password,
            address=request.client.host if request.client else "unknown",
            limits=Limits.from_settings(settings),
            session=session,
            actor=actor,
        )
    if ended is None:
        raise ValidationFailed.field("current_password", "is not your current password")
    return AccessEndedOut(sessions_ended=ended.sessions, tokens_revoked=ended.tokens)


@router.get("/tokens", response_model=list[TokenOut], summary="List API tokens")
def list_tokens(settings: SettingsDep, actor: CurrentActor) -> list[TokenOut]:
    with unit_of_work(settings) as session:
        return [_token_out(t) for t in svc.list_tokens(session=session, actor=actor)]


@router.post("/tokens", response_model=TokenCreated, status_code=201, summary="Create a token")
def create_token(data: TokenCreate, settings: SettingsDep, actor: CurrentActor) -> TokenCreated:
    with unit_of_work(settings) as session:
        row, token = svc.create_token(
            data.username or actor.username, data.name, session=session, actor=actor
        )
        return TokenCreated(**_token_out(row).model_dump(), token=token)


@router.delete("/tokens/{token_id}", status_code=204, summary="Revoke a token")
def revoke_token(token_id: Id, settings: SettingsDep, actor: CurrentActor) -> Response:
    with unit_of_work(settings) as session:
        svc.revoke_token(token_id, session=session, actor=actor)
        return Response(status_code=204)


@router.get("/audit", response_model=list[AuditOut], summary="The audit log, newest first")
def list_audit(
    settings: SettingsDep,
    actor: CurrentActor,
    user: str | None = None,
    entity_type: str | None = None,
    entity_id: str | None = None,
    action: str | None = None,
    before_id: Id | None = None,
    limit: int = Query(50, ge=1, le=500),
) -> list[AuditOut]:
    with unit_of_work(settings) as session:
        require_role(actor, "admin", "read the audit log")
        rows = audit.list_entries(
            session=session,
            actor_name=user,
            entity_type=entity_type,
            entity_id=entity_id,
            action=action,
            before_id=before_id,
            limit=limit,
        )
        return [AuditOut.model_validate(r, from_attributes=True) for r in rows]
