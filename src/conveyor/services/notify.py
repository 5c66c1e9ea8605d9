"""Events for notification channels, written in the caller's transaction.

``emit`` stores the event and one pending delivery per channel subscribed to it at that
moment, in the same transaction as the change that caused it (a run closed failed, a
connector auto-paused): the change and its notification commit together or not at all.
The delivery loop (``services/notify_delivery.py``) sends them later, with backoff.

Every event has an idempotency ``key``, made from what happened (``run.failed:run-42``),
so emitting the same event twice stores it once, and receivers can drop duplicate
deliveries by the body's ``id``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from conveyor.db.base import utcnow
from conveyor.db.models import (
    Connector,
    ConnectorRun,
    NotificationChannel,
    NotificationDelivery,
    NotificationEvent,
)
from conveyor.domain.vocabulary import NotificationEvent as EventName


def run_payload(run: ConnectorRun) -> dict[str, Any]:
    """The ``run`` object of a run event's body."""
    return {
        "id": run.id,
        "status": run.status,
        "failure_class": run.failure_class,
        "error": run.error,
    }


def body(event: NotificationEvent) -> dict[str, Any]:
    """What a webhook receives: ``id`` (the idempotency key), ``event``, ``occurred_at``,
    then the payload (``connector``, ``run`` for run events, and the event's details)."""
    return {
        "id": event.key,
        "event": event.event,
        "occurred_at": event.occurred_at.isoformat(),
        **event.payload,
    }


def subscribed(channel: NotificationChannel, event: str, connector: Connector | None) -> bool:
    """Whether ``channel`` wants ``event`` about ``connector``: it lists the event, and it
    listens to every connector (no ids, no tags) or to this one by id or by a tag."""
    if not channel.is_active or event not in (channel.events or []):
        return False
    if channel.connector_ids is None and channel.tags is None:
        return True
    if connector is None:
        return False
    if channel.connector_ids and connector.id in channel.connector_ids:
        return True
    return bool(channel.tags and set(channel.tags) & set(connector.tags or []))


def emit(
    session: Session,
    event: EventName,
    *,
    key: str,
    connector: Connector | None,
    run: ConnectorRun | None = None,
    details: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> NotificationEvent | None:
    """Store ``event`` and its deliveries in the caller's transaction (nothing is sent
    here). ``key`` names this occurrence (the same key again stores nothing: None)."""
    if session.scalar(select(NotificationEvent.id).where(NotificationEvent.key == key)):
        return None
    payload: dict[str, Any] = {}
    if connector is not None:
        payload["connector"] = {"id": connector.id, "name": connector.name}
    if run is not None:
        payload["run"] = run_payload(run)
    payload.update(details or {})
    row = NotificationEvent(
        key=key,
        event=event,
        occurred_at=now or utcnow(),
        connector_id=connector.id if connector is not None else None,
        payload=payload,
    )
    try:
        with session.begin_nested():  # another process stored the same key meanwhile
            session.add(row)
            session.flush()
    except IntegrityError:
        return None
    channels = session.scalars(
        select(NotificationChannel).where(NotificationChannel.is_active.is_(True))
    )
    for channel in channels:
        if subscribed(channel, event, connector):
            session.add(
                NotificationDelivery(
                    event_id=row.id, channel_id=channel.id, next_attempt_at=row.occurred_at
                )
            )
    session.flush()
    return row
