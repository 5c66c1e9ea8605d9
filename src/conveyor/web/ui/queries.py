"""Small read-only queries only the UI needs (tag choices, counts, chart points).

Everything that changes data goes through ``conveyor.services``; these only read.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from conveyor.db.models import Connector, ConnectorRun


def all_tags(*, session: Session) -> list[str]:
    """Every user tag in use, sorted (for the list's tag filter)."""
    seen: set[str] = set()
    for tags in session.scalars(select(Connector.tags)):
        seen.update(tags or [])
    return sorted(seen)


def run_count(connector_id: int, *, session: Session) -> int:
    stmt = select(func.count()).where(ConnectorRun.connector_id == connector_id)
    return int(session.scalar(stmt) or 0)


def connectors_using(field: Any, endpoint_id: int, *, session: Session) -> list[Connector]:
    """Connectors whose source (or destination) is ``endpoint_id``, by name."""
    return list(
        session.scalars(select(Connector).where(field == endpoint_id).order_by(Connector.name))
    )


def runs_in_flight(connector_id: int, *, session: Session) -> bool:
    stmt = (
        select(ConnectorRun.id)
        .where(
            ConnectorRun.connector_id == connector_id,
            ConnectorRun.status.in_(("scheduled", "pending", "running")),
        )
        .limit(1)
    )
    return session.scalar(stmt) is not None
