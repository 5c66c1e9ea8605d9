"""Small assertions shared by tests."""

from __future__ import annotations

from sqlalchemy import func, select

from conveyor.db import models
from conveyor.db.session import session_scope

TABLES = (
    models.Source,
    models.Destination,
    models.Connector,
    models.ConnectorRun,
    models.AuditEntry,
    models.OutboxEntry,
    models.User,
    models.ApiToken,
)


def table_counts(database_url: str) -> dict[str, int]:
    """Row count of every Conveyor table: compare before/after to prove nothing was written."""
    with session_scope(database_url) as session:
        return {
            m.__tablename__: int(session.scalar(select(func.count()).select_from(m)) or 0)
            for m in TABLES
        }
