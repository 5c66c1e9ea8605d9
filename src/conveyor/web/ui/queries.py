"""Small read-only queries only the UI needs (tag choices, counts, chart points).

Everything that changes data goes through ``conveyor.services``; these only read.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from conveyor.db.models import Connector, ConnectorRun

_DISTINCT_TAGS = {
    # The database unnests the JSON arrays itself: no row per connector reaches Python.
    "postgresql": "SELECT DISTINCT jsonb_array_elements_text(tags) FROM connectors",
    "sqlite": "SELECT DISTINCT j.value FROM connectors, json_each(connectors.tags) AS j",
}


def all_tags(*, session: Session) -> list[str]:
    """Every user tag in use, sorted (for the list's tag filter)."""
    sql = _DISTINCT_TAGS.get(session.get_bind().dialect.name)
    if sql is not None:
        return sorted(str(t) for t in session.scalars(text(sql)))
    seen: set[str] = set()
    for tags in session.scalars(select(Connector.tags)):
        seen.update(tags or [])
    return sorted(seen)


def run_count(connector_id: int, *, session: Session) -> int:
    stmt = select(func.count()).where(ConnectorRun.connector_id == connector_id)
    return int(session.scalar(stmt) or 0)


def connectors_using(field: Any, endpoint_id: int, *, session: Session) -> list[dict[str, Any]]:
    """Connectors whose source (or destination) is ``endpoint_id``, by name (columns only)."""
    stmt = (
        select(Connector.id, Connector.name, Connector.is_active, Connector.sync_status)
        .where(field == endpoint_id)
        .order_by(Connector.name)
    )
    return [dict(row._mapping) for row in session.execute(stmt)]
