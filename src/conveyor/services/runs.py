"""Run history of connectors (written by the flow; read here)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.db.models import ConnectorRun
from conveyor.domain.models import RunOut
from conveyor.errors import NotFound
from conveyor.services.connectors import duration


def get(run_id: int, *, session: Session) -> ConnectorRun:
    run = session.get(ConnectorRun, run_id)
    if run is None:
        raise NotFound(f"run {run_id} does not exist")
    return run


def list_for_connector(
    connector_id: int, *, session: Session, before_id: int | None = None, limit: int = 50
) -> list[ConnectorRun]:
    """Newest first; page with ``before_id``."""
    q = (
        select(ConnectorRun)
        .where(ConnectorRun.connector_id == connector_id)
        .order_by(ConnectorRun.id.desc())
        .limit(limit)
    )
    if before_id is not None:
        q = q.where(ConnectorRun.id < before_id)
    return list(session.scalars(q))


def to_out(r: ConnectorRun) -> RunOut:
    return RunOut(
        id=r.id,
        connector_id=r.connector_id,
        prefect_flow_run_id=r.prefect_flow_run_id,
        status=r.status,
        trigger=r.trigger,
        started_at=r.started_at,
        finished_at=r.finished_at,
        duration_seconds=duration(r),
        rows_loaded=r.rows_loaded,
        bytes_loaded=r.bytes_loaded,
        table_stats=r.table_stats or {},
        schema_changes=r.schema_changes or [],
        log_summary=r.log_summary,
        error=r.error,
        created_at=r.created_at,
    )
