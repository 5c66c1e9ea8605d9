"""Users (argon2 password hashes) and API tokens (only a sha256 of each is stored)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from conveyor.db.models import ApiToken, Connector, Destination, Source, UiSession, User
from conveyor.domain.models import PASSWORD_MAX, PASSWORD_MIN, UserCreate
from conveyor.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from conveyor.services import audit, login_throttle
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
    user = get(user_id, session=session)
    if role != "admin":
        _keep_an_admin(user, "taking the admin role from", session=session)
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


def get(user_id: int, *, session: Session) -> User:
    """The user with this id; NotFound otherwise."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} does not exist", hint="list users with GET /users")
    return user


def _keep_an_admin(user: User, doing: str, *, session: Session) -> None:
    """409 when ``user`` is the last active admin: someone must still manage users."""
    if user.role != "admin" or not user.is_active:
        return
    # Lock every active admin in id order: two admins disabling each other at once queue
    # here and the second sees the first's change, instead of both passing the count.
    admins = session.scalars(
        select(User.id)
        .where(User.role == "admin", User.is_active.is_(True))
        .order_by(User.id)
        .with_for_update()
    ).all()
    if not [uid for uid in admins if uid != user.id]:
        raise Conflict(
            f"'{user.username}' is the last active admin; {doing} them would leave no one "
            "able to manage users",
            hint="make another user an admin first",
        )


def _not_yourself(user: User, actor: Actor, doing: str) -> None:
    if user.id == actor.user_id:
        raise Conflict(f"you cannot {doing} your own account", hint="ask another admin")


def _check_password(password: str, loc: str) -> None:
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise ValidationFailed.field(
            loc, f"must be {PASSWORD_MIN} to {PASSWORD_MAX} characters long"
        )


@dataclass(frozen=True)
class AccessEnded:
    """What a password change or a disable ended: browser logins and API tokens."""

    sessions: int
    tokens: int


def _end_access(user: User, *, session: Session) -> AccessEnded:
    """End every browser login of ``user`` and revoke every token, effective at once."""
    ended = session.execute(delete(UiSession).where(UiSession.user_id == user.id))
    revoked = session.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
        .execution_options(synchronize_session=False)
    )
    return AccessEnded(sessions=ended.rowcount or 0, tokens=revoked.rowcount or 0)  # type: ignore[attr-defined]


def _set_password(
    user: User, password: str, action: str, *, session: Session, actor: Actor
) -> AccessEnded:
    user.password_hash = _HASHER.hash(password)
    ended = _end_access(user, session=session)
    audit.record(
        session=session,
        actor=actor,
        action=action,
        entity_type="user",
        entity_id=user.id,
        # Never the password or its hash: only that it changed and what that ended.
        after={
            "username": user.username,
            "sessions_ended": ended.sessions,
            "tokens_revoked": ended.tokens,
        },
    )
    return ended


def change_own_password(
    current: str,
    new: str,
    *,
    address: str,
    limits: login_throttle.Limits,
    session: Session,
    actor: Actor,
) -> AccessEnded | None:
    """Set the actor's password after checking the current one (throttled like a login);
    None when ``current`` is wrong: the failure is recorded, so the caller must commit
    and then report it. Ends every login and token of the actor, this one included."""
    if actor.user_id is None:
        raise PermissionDenied("this account has no password", hint="use a user's token")
    _check_password(new, "new_password")
    user = get(actor.user_id, session=session)
    attempt = login_throttle.begin(user.username, address, session=session, limits=limits)
    if not _verify(user, current):
        attempt.failed()
        return None
    attempt.succeeded()
    return _set_password(user, new, "user.password_change", session=session, actor=actor)


def reset_password(user_id: int, password: str, *, session: Session, actor: Actor) -> AccessEnded:
    """An admin sets another user's password; that user's logins and tokens end, and the
    failed logins counted against the account are forgotten."""
    require_role(actor, "admin", "reset passwords")
    _check_password(password, "password")
    user = get(user_id, session=session)
    login_throttle.clear_account(user.username, session=session)
    return _set_password(user, password, "user.password_reset", session=session, actor=actor)


def set_active(user_id: int, active: bool, *, session: Session, actor: Actor) -> User:
    """Disable (ending every login and token at once) or re-enable a user. Tokens revoked
    by disabling stay revoked: a re-enabled user logs in and makes new ones."""
    require_role(actor, "admin", "disable or enable users")
    user = get(user_id, session=session)
    if not active:
        _not_yourself(user, actor, "disable")
        _keep_an_admin(user, "disabling", session=session)
    before = {"username": user.username, "is_active": user.is_active}
    user.is_active = active
    ended = None if active else _end_access(user, session=session)
    if before["is_active"] != active:
        after: dict[str, object] = {"username": user.username, "is_active": active}
        if ended is not None:
            after.update(sessions_ended=ended.sessions, tokens_revoked=ended.tokens)
        audit.record(
            session=session,
            actor=actor,
            action="user.enable" if active else "user.disable",
            entity_type="user",
            entity_id=user.id,
            before=before,
            after=after,
        )
    return user


def delete_user(user_id: int, *, session: Session, actor: Actor) -> None:
    """Delete a user with their logins and tokens. Their connectors, sources and
    destinations are kept, with no owner: from then on only admins change them."""
    require_role(actor, "admin", "delete users")
    user = get(user_id, session=session)
    _not_yourself(user, actor, "delete")
    _keep_an_admin(user, "deleting", session=session)
    kept = session.execute(
        update(Connector)
        .where(Connector.owner_id == user.id)
        .values(owner_id=None)
        .execution_options(synchronize_session="fetch")
    )
    # Sources and destinations name their creator, and the creator may change them: a
    # later user given the same name must not inherit them, so they become admins' only.
    for endpoint in (Source, Destination):
        session.execute(
            update(endpoint)
            .where(endpoint.created_by == user.username)
            .values(created_by=None)
            .execution_options(synchronize_session="fetch")
        )
    session.execute(delete(UiSession).where(UiSession.user_id == user.id))
    session.execute(delete(ApiToken).where(ApiToken.user_id == user.id))
    audit.record(
        session=session,
        actor=actor,
        action="user.delete",
        entity_type="user",
        entity_id=user.id,
        before={
            "username": user.username,
            "role": user.role,
            "connectors_kept": kept.rowcount or 0,  # type: ignore[attr-defined]
        },
    )
    session.delete(user)
    session.flush()


def _verify(user: User, password: str) -> bool:
    try:
        _HASHER.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
    if _HASHER.check_needs_rehash(user.password_hash):
        user.password_hash = _HASHER.hash(password)
    return True


def login(
    username: str, password: str, *, address: str, limits: login_throttle.Limits, session: Session
) -> User | None:
    """``authenticate``, throttled per account name and per client address: raises
    TooManyAttempts, before any hashing, while either has failed too often."""
    attempt = login_throttle.begin(username, address, session=session, limits=limits)
    user = authenticate(username, password, session=session)
    if user is None:
        attempt.failed()
    else:
        attempt.succeeded()
    return user


def authenticate(username: str, password: str, *, session: Session) -> User | None:
    """The user if the password matches, else None (same cost either way)."""
    user = get_by_username(username, session=session)
    if user is None or not user.is_active:
        _HASHER.hash(password)  # spend the same time as a real check
        return None
    return user if _verify(user, password) else None


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
