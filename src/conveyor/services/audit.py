"""The audit log: who changed what, with before/after copies whose secrets are masked."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.db.models import AuditEntry
from conveyor.logs import REQUEST_ID
from conveyor.services.authz import Actor


def record(
    *,
    session: Session,
    actor: Actor,
    action: str,
    entity_type: str,
    entity_id: object,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append one entry. Callers pass masked snapshots only."""
    entry = AuditEntry(
        actor=actor.username,
        action=action,
        entity_type=entity_type,
        entity_id=None if entity_id is None else str(entity_id),
        before=before,
        after=after,
        request_id=REQUEST_ID.get(),
    )
    session.add(entry)
    return entry


def list_entries(
    *,
    session: Session,
    actor_name: str | None = None,
    entity_type: str | None = None,
    entity_id: str | None = None,
    action: str | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[AuditEntry]:
    """Newest first, filtered; page with ``before_id``."""
    q = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if actor_name:
        q = q.where(AuditEntry.actor == actor_name)
    if entity_type:
        q = q.where(AuditEntry.entity_type == entity_type)
    if entity_id:
        q = q.where(AuditEntry.entity_id == entity_id)
    if action:
        q = q.where(AuditEntry.action == action)
    if before_id:
        q = q.where(AuditEntry.id < before_id)
    return list(session.scalars(q))
