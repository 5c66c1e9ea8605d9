"""Users (argon2 password hashes) and API tokens (only a sha256 of each is stored)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from conveyor.db.models import ApiToken, UiSession, User
from conveyor.domain.models import UserCreate
from conveyor.errors import Conflict, NotFound, ValidationFailed
from conveyor.services import audit
from conveyor.services.authz import ROLES, Actor, require_role

_HASHER = PasswordHasher()
TOKEN_PREFIX = "cvt_"


def actor_for(user: User) -> Actor:
    return Actor(username=user.username, role=user.role, user_id=user.id)


def get_by_username(username: str, *, session: Session) -> User | None:
    return session.scalars(select(User).where(User.username == username)).first()


def count(*, session: Session) -> int:
    return len(session.scalars(select(User.id).limit(2)).all())


def create_user(data: UserCreate, *, session: Session, actor: Actor) -> User:
    require_role(actor, "admin", "manage users")
    if data.role not in ROLES:
        raise ValidationFailed.field("role", f"must be one of {', '.join(ROLES)}")
    user = User(username=data.username, password_hash=_HASHER.hash(data.password), role=data.role)
    session.add(user)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        raise Conflict(f"a user named '{data.username}' already exists") from exc
    audit.record(
        session=session,
        actor=actor,
        action="user.create",
        entity_type="user",
        entity_id=user.id,
        after={"username": user.username, "role": user.role},
    )
    return user


def set_role(user_id: int, role: str, *, session: Session, actor: Actor) -> User:
    require_role(actor, "admin", "manage users")
    if role not in ROLES:
        raise ValidationFailed.field("role", f"must be one of {', '.join(ROLES)}")
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} does not exist")
    before = {"username": user.username, "role": user.role}
    user.role = role
    audit.record(
        session=session,
        actor=actor,
        action="user.update",
        entity_type="user",
        entity_id=user.id,
        before=before,
        after={"username": user.username, "role": role},
    )
    return user


def authenticate(username: str, password: str, *, session: Session) -> User | None:
    """The user if the password matches, else None (same cost either way)."""
    user = get_by_username(username, session=session)
    if user is None or not user.is_active:
        _HASHER.hash(password)  # spend the same time as a real check
        return None
    try:
        _HASHER.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    if _HASHER.check_needs_rehash(user.password_hash):
        user.password_hash = _HASHER.hash(password)
    return user


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    username: str, name: str, *, session: Session, actor: Actor
) -> tuple[ApiToken, str]:
    """A new token for ``username``; returns the row and the token, shown once."""
    user = get_by_username(username, session=session)
    if user is None:
        raise NotFound(f"user '{username}' does not exist")
    if user.id != actor.user_id:
        require_role(actor, "admin", "create tokens for other users")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user.id, name=name, token_hash=_token_hash(token), prefix=token[:12])
    session.add(row)
    session.flush()
    audit.record(
        session=session,
        actor=actor,
        action="token.create",
        entity_type="api_token",
        entity_id=row.id,
        after={"username": username, "name": name, "prefix": row.prefix},
    )
    return row, token


def revoke_token(token_id: int, *, session: Session, actor: Actor) -> None:
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFound(f"token {token_id} does not exist")
    if row.user_id != actor.user_id:
        require_role(actor, "admin", "revoke other users' tokens")
    row.revoked_at = datetime.now(UTC)
    audit.record(
        session=session,
        actor=actor,
        action="token.revoke",
        entity_type="api_token",
        entity_id=row.id,
        before={"name": row.name, "prefix": row.prefix},
    )


def user_for_token(token: str, *, session: Session) -> User | None:
    row = session.scalars(
        select(ApiToken).where(
            ApiToken.token_hash == _token_hash(token), ApiToken.revoked_at.is_(None)
        )
    ).first()
    if row is None or not row.user.is_active:
        return None
    now = datetime.now(UTC)
    # Write last use at most once a minute to keep token auth read-only on hot paths.
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
        row.last_used_at = now
    return row.user


# A browser login lasts as long as its cookie (SessionMiddleware's max_age).
UI_SESSION_HOURS = 12


def start_ui_session(user: User, *, session: Session) -> str:
    """A new browser login for ``user``; returns the token the signed cookie carries.
    Expired logins of any user are cleared on the way."""
    now = datetime.now(UTC)
    session.execute(delete(UiSession).where(UiSession.expires_at < now))
    token = secrets.token_urlsafe(32)
    session.add(
        UiSession(
            user_id=user.id,
            token_hash=_token_hash(token),
            created_at=now,
            expires_at=now + timedelta(hours=UI_SESSION_HOURS),
        )
    )
    return token


def user_for_ui_session(user_id: int, token: str, *, session: Session) -> User | None:
    """The active user of an unexpired browser login, else None."""
    row = session.scalars(
        select(UiSession).where(
            UiSession.token_hash == _token_hash(token),
            UiSession.user_id == user_id,
            UiSession.expires_at > datetime.now(UTC),
        )
    ).first()
    if row is None:
        return None
    user = session.get(User, user_id)
    return user if user is not None and user.is_active else None


def end_ui_session(token: str, *, session: Session) -> None:
    """Log a browser out: its cookie no longer opens anything, even if copied."""
    session.execute(delete(UiSession).where(UiSession.token_hash == _token_hash(token)))


def list_users(*, session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def list_tokens(*, session: Session, actor: Actor) -> list[ApiToken]:
    q = select(ApiToken).order_by(ApiToken.id.desc())
    if not actor.is_admin:
        q = q.where(ApiToken.user_id == actor.user_id)
    return list(session.scalars(q))
