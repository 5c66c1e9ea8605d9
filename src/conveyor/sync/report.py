"""What one reconcile pass did; the last full one is shown by ``GET /api/v1/sync``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

MAX_LISTED = 100  # repairs and errors kept in a report


@dataclass
class PassReport:
    kind: str  # outbox | full
    started_at: datetime
    finished_at: datetime | None = None
    seconds: float = 0.0
    connectors: int = 0
    deployments: int | None = None
    unchanged: int = 0
    recorded: int = 0  # database brought up to date without a Prefect call
    created: int = 0
    updated: int = 0
    paused: int = 0
    resumed: int = 0
    deleted: int = 0
    failed: int = 0
    stale_runs_closed: int = 0
    old_runs_deleted: int = 0  # by retention (`reconcile --once` runs one batch)
    repairs: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None  # the pass itself could not run (Prefect down, ...)

    @property
    def changed(self) -> int:
        return self.created + self.updated + self.paused + self.resumed + self.deleted

    def count(self, name: str) -> None:
        setattr(self, name, getattr(self, name) + 1)

    def note(self, bucket: list[dict[str, Any]], **entry: Any) -> None:
        if len(bucket) < MAX_LISTED:
            bucket.append(entry)

    def merge(self, other: PassReport) -> None:
        """Add another pass's work (the outbox pass a full pass starts with)."""
        for name in ("recorded", "created", "updated", "paused", "resumed", "deleted", "failed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for entry in other.errors:
            self.note(self.errors, **entry)
        for entry in other.repairs:
            self.note(self.repairs, **entry)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.__dict__)
        out["started_at"] = self.started_at.isoformat()
        out["finished_at"] = self.finished_at.isoformat() if self.finished_at else None
        return out
