"""Notification channels: where events go (admins only, since channels hold secrets).

Configs are checked per type (``channel_config``), their secrets encrypted and write-only
like a source's: never returned, logged or audited in clear (invariant 4).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from conveyor.db.base import utcnow
from conveyor.db.models import Connector, NotificationChannel, NotificationDelivery
from conveyor.domain.notifications import ChannelCreate, ChannelOut, ChannelPatch, ChannelTestOut
from conveyor.domain.vocabulary import DEFAULT_CHANNEL_EVENTS
from conveyor.errors import Conflict, FieldProblem, NotFound, ValidationFailed
from conveyor.secrets import MASK, SecretBox, keep_unchanged_secrets, mask_config, moved_fields
from conveyor.services import audit, channel_config
from conveyor.services.authz import Actor, require_role
from conveyor.settings import Settings

ENTITY = "notification_channel"


def _admin(actor: Actor, doing: str) -> None:
    require_role(actor, "admin", doing)


def get(channel_id: int, *, session: Session) -> NotificationChannel:
    channel = session.get(NotificationChannel, channel_id)
    if channel is None:
        raise NotFound(f"notification channel {channel_id} does not exist")
    return channel


def masked(channel: NotificationChannel) -> dict[str, Any]:
    return mask_config(channel.config, channel_config.SECRET_FIELDS[channel.type])


def decrypted(channel: NotificationChannel, box: SecretBox) -> dict[str, Any]:
    return box.decrypt_config(channel.config, channel_config.SECRET_FIELDS[channel.type])


def _counts(session: Session) -> dict[int, dict[str, int]]:
    rows = session.execute(
        select(NotificationDelivery.channel_id, NotificationDelivery.status, func.count()).group_by(
            NotificationDelivery.channel_id, NotificationDelivery.status
        )
    )
    out: dict[int, dict[str, int]] = {}
    for channel_id, status, n in rows:
        out.setdefault(channel_id, {})[status] = int(n)
    return out


def to_out(channel: NotificationChannel, counts: dict[str, int] | None = None) -> ChannelOut:
    counts = counts or {}
    return ChannelOut(
        id=channel.id,
        name=channel.name,
        type=channel.type,
        config=masked(channel),
        events=list(channel.events or []),
        connector_ids=channel.connector_ids,
        tags=channel.tags,
        is_active=channel.is_active,
        last_delivery_at=channel.last_delivery_at,
        last_error=channel.last_error,
        last_error_at=channel.last_error_at,
        pending=counts.get("pending", 0),
        delivered=counts.get("delivered", 0),
        expired=counts.get("expired", 0),
        created_at=channel.created_at,
        updated_at=channel.updated_at,
        created_by=channel.created_by,
        updated_by=channel.updated_by,
    )


def list_all(*, session: Session, actor: Actor) -> list[ChannelOut]:
    _admin(actor, "read notification channels")
    counts = _counts(session)
    rows = session.scalars(select(NotificationChannel).order_by(NotificationChannel.name))
    return [to_out(c, counts.get(c.id)) for c in rows]


def read(channel_id: int, *, session: Session, actor: Actor) -> ChannelOut:
    _admin(actor, "read notification channels")
    return out_of(get(channel_id, session=session), session=session)


def out_of(channel: NotificationChannel, *, session: Session) -> ChannelOut:
    session.flush()
    return to_out(channel, _counts(session).get(channel.id))


def _snapshot(channel: NotificationChannel) -> dict[str, Any]:
    return {
        "name": channel.name,
        "type": channel.type,
        "config": masked(channel),
        "events": list(channel.events or []),
        "connector_ids": channel.connector_ids,
        "tags": channel.tags,
        "is_active": channel.is_active,
    }


def _check_connectors(ids: list[int] | None, session: Session) -> None:
    if not ids:
        return
    found = set(session.scalars(select(Connector.id).where(Connector.id.in_(ids))))
    missing = [i for i in ids if i not in found]
    if missing:
        raise ValidationFailed.field(
            "connector_ids", f"no connector has the id {', '.join(map(str, missing))}"
        )


def _valid_config(
    type_name: str, plain: dict[str, Any], settings: Settings
) -> channel_config.ChannelConfig:
    model = channel_config.parse(type_name, plain)
    channel_config.check_on_save(model, settings)
    return model


def create(
    data: ChannelCreate, *, session: Session, actor: Actor, box: SecretBox, settings: Settings
) -> NotificationChannel:
    """Check the config for its type, encrypt its secrets, store the channel."""
    _admin(actor, "create notification channels")
    secrets = channel_config.SECRET_FIELDS[data.type]
    # A secret sent masked was not entered: it is missing, not "********".
    plain = keep_unchanged_secrets(data.config, {}, secrets)
    model = _valid_config(data.type, plain, settings)
    _check_connectors(data.connector_ids, session)
    channel = NotificationChannel(
        name=data.name,
        type=data.type,
        config=box.encrypt_config(channel_config.stored(model), secrets),
        events=list(data.events if data.events is not None else DEFAULT_CHANNEL_EVENTS),
        connector_ids=data.connector_ids,
        tags=data.tags,
        is_active=data.is_active,
        created_by=actor.username,
        updated_by=actor.username,
    )
    session.add(channel)
    _flush_unique(session, data.name)
    audit.record(
        session=session,
        actor=actor,
        action=f"{ENTITY}.create",
        entity_type=ENTITY,
        entity_id=channel.id,
        after=_snapshot(channel),
    )
    return channel


def update(
    channel_id: int,
    data: ChannelPatch,
    *,
    session: Session,
    actor: Actor,
    box: SecretBox,
    settings: Settings,
) -> NotificationChannel:
    """Rename, re-scope or merge config changes; secrets not sent are kept (unless the
    email server moved: then its password must be entered again)."""
    _admin(actor, "change notification channels")
    channel = get(channel_id, session=session)
    before = _snapshot(channel)
    sent = data.model_fields_set
    if data.config is not None:
        secrets = channel_config.SECRET_FIELDS[channel.type]
        connection = channel_config.CONNECTION_FIELDS[channel.type]
        stored_plain = decrypted(channel, box)
        patched = {**channel.config, **data.config}
        _require_secrets_again(data.config, stored_plain, channel.type)
        merged = keep_unchanged_secrets(patched, channel.config, secrets, connection)
        plain = box.decrypt_config({k: v for k, v in merged.items() if v is not None}, secrets)
        model = _valid_config(channel.type, plain, settings)
        channel.config = box.encrypt_config(channel_config.stored(model), secrets)
    if data.name is not None:
        channel.name = data.name
    if "events" in sent:
        if data.events is None:
            raise ValidationFailed.field("events", "list the events (an empty list: none)")
        channel.events = list(data.events)
    if "connector_ids" in sent:
        _check_connectors(data.connector_ids, session)
        channel.connector_ids = data.connector_ids
    if "tags" in sent:
        channel.tags = data.tags
    if data.is_active is not None:
        channel.is_active = data.is_active
    channel.updated_by = actor.username
    _flush_unique(session, channel.name)
    after = _snapshot(channel)
    if after != before:
        audit.record(
            session=session,
            actor=actor,
            action=f"{ENTITY}.update",
            entity_type=ENTITY,
            entity_id=channel.id,
            before=before,
            after=after,
        )
    return channel


def _require_secrets_again(sent: dict[str, Any], stored_plain: dict[str, Any], type_: str) -> None:
    """An email channel moved to another server must carry its password again: a stored
    secret is only sent to the server it was stored with (invariant 7)."""
    secrets = channel_config.SECRET_FIELDS[type_]
    moved = moved_fields(sent, stored_plain, channel_config.CONNECTION_FIELDS[type_], secrets)
    if not moved:
        return
    missing = [
        name for name in secrets if stored_plain.get(name) and sent.get(name, MASK) in (MASK, "")
    ]
    if missing:
        raise ValidationFailed(
            [
                FieldProblem(
                    f"config.{name}",
                    f"enter it again (or send null to remove it): {', '.join(moved)} changed, "
                    "and a stored secret is only sent to the server it was stored with",
                )
                for name in missing
            ]
        )


def delete(channel_id: int, *, session: Session, actor: Actor) -> int:
    """Delete the channel and its deliveries; how many were still pending."""
    _admin(actor, "delete notification channels")
    channel = get(channel_id, session=session)
    pending = int(
        session.scalar(
            select(func.count()).where(
                NotificationDelivery.channel_id == channel_id,
                NotificationDelivery.status == "pending",
            )
        )
        or 0
    )
    audit.record(
        session=session,
        actor=actor,
        action=f"{ENTITY}.delete",
        entity_type=ENTITY,
        entity_id=channel.id,
        before={**_snapshot(channel), "pending_dropped": pending},
    )
    session.query(NotificationDelivery).filter(
        NotificationDelivery.channel_id == channel_id
    ).delete(synchronize_session=False)
    session.delete(channel)
    session.flush()
    return pending


def _flush_unique(session: Session, name: str) -> None:
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict(
            f"a notification channel named '{name}' already exists",
            hint="choose another name",
        ) from None


# --- test ---------------------------------------------------------------------------


def test_target(
    channel_id: int, *, session: Session, actor: Actor, box: SecretBox
) -> tuple[str, dict[str, Any], str]:
    """What ``send_test`` needs, read in the caller's transaction: (type, config, name)."""
    _admin(actor, "test notification channels")
    channel = get(channel_id, session=session)
    return channel.type, decrypted(channel, box), channel.name


def send_test(
    type_name: str, config: dict[str, Any], channel_name: str, *, settings: Settings
) -> ChannelTestOut:
    """Send a ``test`` event now (outside any transaction) and say what happened."""
    from conveyor.services import notify_senders

    key = f"test:{uuid.uuid4().hex}"
    body = {
        "id": key,
        "event": "test",
        "occurred_at": utcnow().isoformat(),
        "channel": {"name": channel_name},
        "message": "A test from Conveyor: this channel works.",
    }
    try:
        notify_senders.send(type_name, config, body, settings=settings)
    except notify_senders.SendFailed as exc:
        return ChannelTestOut(ok=False, message=exc.message, id=key)
    return ChannelTestOut(ok=True, message=f"sent to {notify_senders.where(type_name)}", id=key)
