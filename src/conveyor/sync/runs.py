"""Manual runs, and the watchdog that closes runs whose worker is gone (invariant 6)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from conveyor.db.base import utcnow
from conveyor.db.models import ConnectorRun
from conveyor.db.session import session_scope
from conveyor.errors import ConfigurationError, Conflict, ExternalError
from conveyor.services import audit
from conveyor.services import connectors as connectors_svc
from conveyor.services.authz import Actor, require_owner_or_admin
from conveyor.settings import Settings
from conveyor.sync import gateway as gw
from conveyor.sync import store
from conveyor.sync.gateway import Gateway

log = logging.getLogger("conveyor.sync.runs")

MANUAL_TAG = "trigger:manual"
OPEN = ("scheduled", "running")
# Prefect's final state → the run's status. A flow run Prefect calls Completed whose
# record is still open never wrote its result: that is a crash as far as the record goes.
CLOSED_AS = {"FAILED": "failed", "CRASHED": "crashed", "CANCELLED": "cancelled"}
HEARTBEAT_REASON = "worker stopped sending heartbeats"


def trigger_manual_run(
    connector_id: int, *, session: Session, settings: Settings, actor: Actor
) -> ConnectorRun:
    """Start a flow run of the connector's deployment now, recorded as a manual run."""
    c = connectors_svc.get(connector_id, session=session)
    require_owner_or_admin(actor, c.owner_id, "run this connector")
    if not c.is_active:
        raise Conflict(
            f"connector {connector_id} is paused", hint="resume it before running it by hand"
        )
    if not c.prefect_deployment_id or c.sync_status != "synced":
        detail = f": {c.sync_error}" if c.sync_error else ""
        raise Conflict(
            f"connector {connector_id} is not synced to Prefect yet "
            f"(sync status {c.sync_status}{detail})",
            hint="wait for the reconciler (GET /api/v1/sync), then try again",
        )
    if not settings.prefect_api_url:
        raise ConfigurationError("PREFECT_API_URL is not set", hint="point it at the Prefect API")
    flow_run_id = gw.create_flow_run(
        settings.prefect_api_url, c.prefect_deployment_id, tags=[MANUAL_TAG]
    )
    run = ConnectorRun(
        connector_id=c.id,
        prefect_flow_run_id=flow_run_id,
        status="scheduled",
        trigger="manual",
    )
    session.add(run)
    session.flush()
    audit.record(
        session=session,
        actor=actor,
        action="connector.run",
        entity_type="connector",
        entity_id=c.id,
        after={"run_id": run.id, "prefect_flow_run_id": flow_run_id},
    )
    return run


async def close_stale_runs(
    *, settings: Settings, gateway: Gateway, now: datetime | None = None
) -> int:
    """Close open run records whose flow run ended or whose worker went silent; the count.

    A record is closed only while still open (conditional UPDATE), so a flow finishing at
    the same moment keeps its own result.
    """
    now = now or utcnow()
    cutoff = now - timedelta(seconds=settings.run_heartbeat_timeout)
    url = settings.effective_database_url
    with session_scope(url) as session:
        rows = session.execute(
            select(
                ConnectorRun.id,
                ConnectorRun.prefect_flow_run_id,
                ConnectorRun.status,
                ConnectorRun.heartbeat_at,
                ConnectorRun.started_at,
                ConnectorRun.created_at,
            ).where(ConnectorRun.status.in_(OPEN), ConnectorRun.prefect_flow_run_id.is_not(None))
        ).all()
    if not rows:
        return 0
    states = await gateway.flow_run_states([r.prefect_flow_run_id for r in rows])
    closed = 0
    for run_id, flow_run_id, status, heartbeat_at, started_at, created_at in rows:
        state = states.get(flow_run_id)
        if state is None:
            closed += _close(url, run_id, "crashed", "the flow run no longer exists in Prefect")
        elif state.is_final:
            new = CLOSED_AS.get(state.type, "crashed")
            why = state.message or f"Prefect reports the flow run {state.name or state.type}"
            if state.type == "COMPLETED":
                why = "the flow run completed in Prefect but never recorded its result"
            closed += _close(url, run_id, new, why)
        elif status == "running" and (heartbeat_at or started_at or created_at) < cutoff:
            if _heartbeat_since(url, run_id, cutoff):
                continue
            try:
                await gateway.crash_flow_run(flow_run_id, HEARTBEAT_REASON)
            except ExternalError as exc:
                # Leave the record open: the next pass retries, and the flow run must be
                # crashed in Prefect too or it keeps the connector's concurrency slot.
                log.warning("run %s: cannot mark the flow run crashed: %s", run_id, exc)
                continue
            closed += _close(url, run_id, "crashed", HEARTBEAT_REASON, stale_before=cutoff)
    return closed


def _heartbeat_since(url: str, run_id: int, cutoff: datetime) -> bool:
    with session_scope(url) as session:
        beat = session.scalar(select(ConnectorRun.heartbeat_at).where(ConnectorRun.id == run_id))
    return beat is not None and beat >= cutoff


def _close(
    url: str, run_id: int, status: str, reason: str, *, stale_before: datetime | None = None
) -> int:
    now = utcnow()
    with session_scope(url) as session:
        stmt = update(ConnectorRun).where(ConnectorRun.id == run_id, ConnectorRun.status.in_(OPEN))
        if stale_before is not None:
            # A heartbeat that landed since we looked means the worker is alive after all.
            stmt = stmt.where(
                or_(ConnectorRun.heartbeat_at.is_(None), ConnectorRun.heartbeat_at < stale_before)
            )
        result = session.execute(
            stmt.values(status=status, error=reason, finished_at=now).execution_options(
                synchronize_session=False
            )
        )
        changed = store.rowcount(result)
    if changed:
        log.info("run %s closed as %s: %s", run_id, status, reason)
    return changed
