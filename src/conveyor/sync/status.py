"""How far Prefect is from the database: read by ``GET /api/v1/sync`` and ``sync status``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from conveyor.db.base import utcnow
from conveyor.db.models import Connector, Lease, OutboxEntry
from conveyor.sync.store import LEASE_NAME


class PendingChange(BaseModel):
    connector_id: int
    action: str
    queued_at: datetime
    age_seconds: float
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None


class ReconcilerInfo(BaseModel):
    holder: str | None
    heartbeat_at: datetime | None
    lease_expires_at: datetime | None
    alive: bool


class SyncStatusOut(BaseModel):
    counts: dict[str, int]  # connectors by sync_status: pending, synced, error
    total: int
    queued_changes: int
    oldest_pending_change: PendingChange | None
    reconciler: ReconcilerInfo
    last_full_pass: dict[str, Any] | None  # see reconciler.PassReport
    last_outbox_pass: dict[str, Any] | None


def read(session: Session, now: datetime | None = None) -> SyncStatusOut:
    """Counts by status, the oldest queued change, the reconciler and its last passes."""
    now = now or utcnow()
    counts = {"pending": 0, "synced": 0, "error": 0}
    for status, n in session.execute(
        select(Connector.sync_status, func.count()).group_by(Connector.sync_status)
    ):
        counts[status] = int(n)
    queued = int(session.scalar(select(func.count()).select_from(OutboxEntry)) or 0)
    oldest = session.scalars(select(OutboxEntry).order_by(OutboxEntry.id).limit(1)).first()
    lease = session.get(Lease, LEASE_NAME)
    info = (lease.info if lease else None) or {}
    alive = bool(lease and lease.holder and lease.expires_at is not None and lease.expires_at > now)
    return SyncStatusOut(
        counts=counts,
        total=sum(counts.values()),
        queued_changes=queued,
        oldest_pending_change=(
            PendingChange(
                connector_id=oldest.connector_id,
                action=oldest.action,
                queued_at=oldest.created_at,
                age_seconds=round((now - oldest.created_at).total_seconds(), 1),
                attempts=oldest.attempts,
                next_attempt_at=oldest.next_attempt_at,
                last_error=oldest.last_error,
            )
            if oldest
            else None
        ),
        reconciler=ReconcilerInfo(
            holder=lease.holder if lease else None,
            heartbeat_at=lease.heartbeat_at if lease else None,
            lease_expires_at=lease.expires_at if lease else None,
            alive=alive,
        ),
        last_full_pass=info.get("last_full_pass"),
        last_outbox_pass=info.get("last_outbox_pass"),
    )
