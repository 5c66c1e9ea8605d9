"""Run records, in one place: opened and closed by the flow, started by "Run now" (API, UI,
first run), heartbeats from a running flow, closed by the watchdog when a worker is gone.

Functions that take ``settings`` own their short transactions: a run record must be
committed before anything slow (a Prefect call, a data copy) happens, so that a crash at
any point leaves a record someone can close (invariant 6 of docs/design.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol, cast

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from conveyor.db.base import utcnow
from conveyor.db.models import Connector, ConnectorRun
from conveyor.db.session import session_scope
from conveyor.domain.models import RunOut
from conveyor.domain.vocabulary import (
    MANUAL_RUN_TAG,
    OPEN_RUN_STATUSES,
    PAUSED_MEANS,
    RESUME_TO_RUN,
    TRIGGER_MANUAL,
    TRIGGER_SCHEDULE,
    FailureClass,
    run_record_id_from_tags,
    run_record_tag,
)
from conveyor.errors import ConfigurationError, Conflict, ConveyorError, NotFound
from conveyor.services import audit, run_commit, run_events
from conveyor.services.authz import Actor, require_owner_or_admin
from conveyor.services.connectors import duration
from conveyor.settings import Settings

log = logging.getLogger("conveyor.services.runs")


class StartFlowRun(Protocol):
    """Starts a flow run of a deployment now; its id (``sync.flow_runs.create_flow_run``)."""

    def __call__(self, api_url: str, deployment_id: str, *, tags: list[str]) -> str: ...


class RunStatsLike(Protocol):
    """What a finished copy reports (``pipelines.runner.RunStats``)."""

    @property
    def total_rows(self) -> int: ...
    @property
    def bytes(self) -> int | None: ...
    @property
    def rows(self) -> dict[str, int]: ...
    @property
    def schema_changes(self) -> list[str]: ...


# --- reading -----------------------------------------------------------------------


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


def count_for_connector(connector_id: int, *, session: Session) -> int:
    """How many run records the connector has."""
    stmt = select(func.count()).where(ConnectorRun.connector_id == connector_id)
    return int(session.scalar(stmt) or 0)


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
        scheduled_for=r.scheduled_for,
        retry_of=r.retry_of,
        failure_class=cast(FailureClass | None, r.failure_class),
        failure_side=cast(Literal["source", "destination"] | None, r.failure_side),
        attempt=r.attempt or 1,
        max_attempts=r.max_attempts or 1,
        attempts=list(r.attempts or []),
        waiting_reason=r.waiting_reason,
        next_attempt_at=r.next_attempt_at,
        committed_at=r.committed_at,
        log_bytes=r.log_bytes or 0,
        log_truncated=bool(r.log_truncated),
    )


# --- Run now -----------------------------------------------------------------------


def trigger(
    connector_id: int,
    *,
    settings: Settings,
    actor: Actor,
    start: StartFlowRun,
    kind: str = TRIGGER_MANUAL,
    tag: str = MANUAL_RUN_TAG,
    retry_of: int | None = None,
) -> ConnectorRun:
    """Start a flow run of the connector's deployment now, recorded as a ``kind`` run
    (manual: Run now; retry: Retry now of run ``retry_of``), its flow run tagged ``tag``.

    The record is committed first, then Prefect is called with no transaction open (on
    SQLite a transaction holds the database's write lock), then the flow run is linked to
    the record. If Prefect refuses or cannot be reached, the record is closed as failed
    with the reason and the error propagates.
    """
    url = settings.effective_database_url
    with session_scope(url) as session:
        deployment_id = _runnable_deployment(connector_id, session=session, actor=actor)
        if not settings.prefect_api_url:
            raise ConfigurationError(
                "PREFECT_API_URL is not set", hint="point it at the Prefect API"
            )
        run = ConnectorRun(
            connector_id=connector_id, status="scheduled", trigger=kind, retry_of=retry_of
        )
        session.add(run)
        session.flush()
        run_id = int(run.id)
    try:
        # The record's tag lets the flow find its record even before it is linked below.
        flow_run_id = start(
            settings.prefect_api_url, deployment_id, tags=[tag, run_record_tag(run_id)]
        )
    except ConveyorError as exc:
        close(
            run_id,
            settings=settings,
            status="failed",
            error=f"Prefect did not start the run: {exc}",
            only_if_open=True,
        )
        raise
    with session_scope(url) as session:
        run = get(run_id, session=session)
        if run.prefect_flow_run_id is None:
            run.prefect_flow_run_id = flow_run_id
        audit.record(
            session=session,
            actor=actor,
            action="connector.run" if retry_of is None else "run.retry",
            entity_type="connector",
            entity_id=connector_id,
            after={
                "run_id": run_id,
                **({"retry_of": retry_of} if retry_of is not None else {}),
                "prefect_flow_run_id": flow_run_id,
            },
        )
        session.flush()
        return run


def _runnable_deployment(connector_id: int, *, session: Session, actor: Actor) -> str:
    c = session.get(Connector, connector_id)
    if c is None:
        raise NotFound(f"connector {connector_id} does not exist")
    require_owner_or_admin(actor, c.owner_id, "run this connector")
    if not c.is_active:
        raise Conflict(f"connector {connector_id} is paused: {PAUSED_MEANS}", hint=RESUME_TO_RUN)
    if not c.prefect_deployment_id or c.sync_status != "synced":
        detail = f": {c.sync_error}" if c.sync_error else ""
        raise Conflict(
            f"connector {connector_id} is not synced to Prefect yet "
            f"(sync status {c.sync_status}{detail})",
            hint="wait for the reconciler (GET /api/v1/sync), then try again",
        )
    return c.prefect_deployment_id


# --- the flow's side ---------------------------------------------------------------


def open_run(
    connector_id: int,
    *,
    settings: Settings,
    flow_run_id: str | None = None,
    tags: Sequence[str] = (),
) -> int:
    """Mark the pre-created record running, or insert one; close stale ones of the connector."""
    now = utcnow()
    manual = flow_run_id is None or MANUAL_RUN_TAG in tags
    with session_scope(settings.effective_database_url) as session:
        if session.get(Connector, connector_id) is None:
            raise NotFound(f"connector {connector_id} does not exist")
        _close_silent(session, connector_id, settings, now)
        run = _precreated(session, connector_id, flow_run_id, tags)
        if run is None:
            run = ConnectorRun(
                connector_id=connector_id,
                prefect_flow_run_id=flow_run_id,
                trigger=TRIGGER_MANUAL if manual else TRIGGER_SCHEDULE,
            )
            session.add(run)
        if run.status != "retrying" or run.started_at is None:
            run.started_at = now  # a retry's record keeps its first attempt's start
        run.status = "running"
        run.heartbeat_at = now
        run.finished_at = None
        run.error = None
        run.failure_class = run.failure_side = None  # an earlier attempt's are in attempts
        run.waiting_reason = run.next_attempt_at = None
        session.flush()
        return int(run.id)


def _precreated(
    session: Session, connector_id: int, flow_run_id: str | None, tags: Sequence[str]
) -> ConnectorRun | None:
    """The record "Run now" made for this flow run: by flow run id, else by its tag (the
    flow may start before "Run now" has linked the two)."""
    if flow_run_id is not None:
        run = session.scalars(
            select(ConnectorRun).where(ConnectorRun.prefect_flow_run_id == flow_run_id)
        ).first()
        if run is not None:
            return run
    record_id = run_record_id_from_tags(tags)
    if record_id is None:
        return None
    run = session.get(ConnectorRun, record_id)
    if run is None or run.connector_id != connector_id:
        return None
    if run.prefect_flow_run_id not in (None, flow_run_id):
        return None
    run.prefect_flow_run_id = flow_run_id
    return run


def _close_silent(session: Session, connector_id: int, settings: Settings, now: datetime) -> None:
    # Runs of one connector never overlap (concurrency limit 1), so a record still
    # "running" whose heartbeat stopped belongs to a worker that died.
    cutoff = now - timedelta(seconds=settings.run_heartbeat_timeout)
    stale = session.scalars(
        select(ConnectorRun).where(
            ConnectorRun.connector_id == connector_id,
            ConnectorRun.status == "running",
            ConnectorRun.heartbeat_at < cutoff,
        )
    )
    for run in stale:
        if not run_commit.settle(run):  # its data committed: succeeded (invariant 8)
            run.status = "crashed"
            run.finished_at = now
            run.error = (
                "The worker running this connector stopped (no heartbeat since "
                f"{run.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC)."
            )
            run.log_summary = run.log_summary or "Closed by the next run: heartbeat stopped."
        run_events.closed(session, run, settings=settings)


def close(
    run_id: int,
    *,
    settings: Settings,
    status: str,
    stats: RunStatsLike | None = None,
    summary: str | None = None,
    error: str | None = None,
    only_if_open: bool = False,
    failure_class: FailureClass | None = None,
    failure_side: str | None = None,
) -> None:
    """Close the record with its outcome, rows per table, bytes and schema changes (and, for
    a failure, its class and side; ``services.retries.after_failure`` decides on retries)."""
    with session_scope(settings.effective_database_url) as session:
        run = session.get(ConnectorRun, run_id)
        if run is None or (only_if_open and run.status not in OPEN_RUN_STATUSES):
            return
        if status != "succeeded" and run_commit.settle(run):  # committed: invariant 8
            run_events.closed(session, run, settings=settings)
            return
        run.status = status
        run.finished_at = utcnow()
        if stats is not None:
            run.rows_loaded = stats.total_rows
            run.bytes_loaded = stats.bytes
            run.table_stats = {t: {"rows": n} for t, n in sorted(stats.rows.items())}
            run.schema_changes = stats.schema_changes
        run.log_summary = summary
        run.error = error
        run.failure_class = failure_class
        run.failure_side = failure_side
        run.waiting_reason = run.next_attempt_at = None
        run_events.closed(session, run, settings=settings)  # same transaction


def close_flow_run(
    flow_run_id: str, *, settings: Settings, status: str, error: str, summary: str
) -> bool:
    """Close the open record of a flow run (Prefect's crash and cancel hooks); whether it was."""
    with session_scope(settings.effective_database_url) as session:
        run = session.scalars(
            select(ConnectorRun).where(ConnectorRun.prefect_flow_run_id == flow_run_id)
        ).first()
        if run is None or run.status not in OPEN_RUN_STATUSES:
            return False
        if not run_commit.settle(run):  # its data committed: succeeded (invariant 8)
            run.status = status
            run.finished_at = utcnow()
            run.error = error
            run.log_summary = summary[:1000]
        run_events.closed(session, run, settings=settings)
        return True


def heartbeat(run_id: int, *, settings: Settings) -> None:
    """Renew the run's heartbeat (the watchdog closes runs whose heartbeat stops)."""
    with session_scope(settings.effective_database_url) as session:
        run = session.get(ConnectorRun, run_id)
        if run is not None and run.status == "running":
            run.heartbeat_at = utcnow()


# --- the watchdog's side -----------------------------------------------------------


@dataclass(frozen=True)
class OpenRun:
    """An open record, as the watchdog looks at it."""

    id: int
    prefect_flow_run_id: str | None
    status: str
    last_sign_of_life: datetime  # heartbeat, else start, else creation


def open_runs(*, settings: Settings) -> list[OpenRun]:
    """Every record still scheduled or running."""
    with session_scope(settings.effective_database_url) as session:
        rows = session.execute(
            select(
                ConnectorRun.id,
                ConnectorRun.prefect_flow_run_id,
                ConnectorRun.status,
                ConnectorRun.heartbeat_at,
                ConnectorRun.started_at,
                ConnectorRun.created_at,
            ).where(ConnectorRun.status.in_(OPEN_RUN_STATUSES))
        ).all()
    return [
        OpenRun(
            r.id, r.prefect_flow_run_id, r.status, r.heartbeat_at or r.started_at or r.created_at
        )
        for r in rows
    ]


def heartbeat_since(run_id: int, cutoff: datetime, *, settings: Settings) -> bool:
    """Whether the run has beaten at or after ``cutoff``."""
    with session_scope(settings.effective_database_url) as session:
        beat = session.scalar(select(ConnectorRun.heartbeat_at).where(ConnectorRun.id == run_id))
    return beat is not None and beat >= cutoff


def close_if_open(
    run_id: int,
    status: str,
    reason: str,
    *,
    settings: Settings,
    stale_before: datetime | None = None,
) -> int:
    """Close the record only while it is still open (a conditional UPDATE), so a flow
    finishing at the same moment keeps its own result; 1 if closed, else 0."""
    with session_scope(settings.effective_database_url) as session:
        if run_commit.settle_if_open(session, run_id):  # committed: invariant 8
            run_events.closed_by_id(session, run_id, settings=settings)
            log.info("run %s closed as succeeded: its data had committed", run_id)
            return 1
        stmt = update(ConnectorRun).where(
            ConnectorRun.id == run_id, ConnectorRun.status.in_(OPEN_RUN_STATUSES)
        )
        if stale_before is not None:
            # A heartbeat that landed since we looked means the worker is alive after all.
            stmt = stmt.where(
                or_(ConnectorRun.heartbeat_at.is_(None), ConnectorRun.heartbeat_at < stale_before)
            )
        result = session.execute(
            stmt.values(status=status, error=reason, finished_at=utcnow()).execution_options(
                synchronize_session=False
            )
        )
        changed = int(getattr(result, "rowcount", 0) or 0)
        if changed:
            run_events.closed_by_id(session, run_id, settings=settings)
    if changed:
        log.info("run %s closed as %s: %s", run_id, status, reason)
    return changed
