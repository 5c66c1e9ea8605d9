"""A connector's drift repairs as its page shows them: "Prefect had … → restored …"."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from conveyor.services import audit
from conveyor.sync import drift

SHOWN = 5  # the newest repairs on a connector's page


def _value(key: str, value: Any) -> str:
    if key == "deployment" and value == drift.MISSING:
        return "no deployment"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "none"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "none"
    return "—" if value is None else str(value)


def words(snapshot: dict[str, Any] | None) -> str:
    """``{"paused": True, "schedule": ["5 5 * * * UTC"]}`` → "paused: yes; schedule: 5 5 …"."""
    snap = snapshot or {}
    if snap.get("deployment") == drift.MISSING and len(snap) == 1:
        return "no deployment"
    return "; ".join(f"{k.replace('_', ' ')}: {_value(k, v)}" for k, v in snap.items())


def latest(connector_id: int, session: Session) -> list[dict[str, Any]]:
    """The connector's newest drift repairs, newest first."""
    rows = audit.list_entries(
        session=session,
        entity_type="connector",
        entity_id=str(connector_id),
        action=drift.ACTION,
        limit=SHOWN,
    )
    return [{"at": r.at, "had": words(r.before), "restored": words(r.after)} for r in rows]
