"""Cancel a run: the API's and the run page's Cancel.

A run that has not started yet (its flow run still Scheduled in Prefect, or none) is
cancelled in Prefect and closed ``cancelled`` at once. A running one is moved to CANCELLING
in Prefect and stays open, its ``waiting_reason`` saying who asked; the process worker then
kills the flow process (its whole process group) and runs the flow's on_cancellation hook,
which closes the record with ``close_cancelled`` below. If the worker is gone nobody runs the
hook, and the watchdog closes the record when Prefect's flow run ends (or its heartbeat
stops), as for any run.

The record is written before Prefect is called (no transaction is held across the call), so
a hook that closes the run at once already finds the requester's name.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from sqlalchemy import select

from conveyor.db.base import utcnow
from conveyor.db.models import Connector, ConnectorRun
from conveyor.db.session import session_scope
from conveyor.domain.vocabulary import OPEN_RUN_STATUSES
from conveyor.errors import ConfigurationError, Conflict, ConveyorError, ExternalError
from conveyor.services import audit, run_events, run_logs, runs
from conveyor.services.authz import Actor, require_owner_or_admin
from conveyor.settings import Settings

log = logging.getLogger("conveyor.services.cancel")

# waiting_reason of a run being cancelled; the name of who asked follows.
CANCELLING = "Cancelling: requested by "
ENDED = frozenset({"COMPLETED", "FAILED", "CRASHED"})


class CancelFlowRun(Protocol):
    """Cancels a flow run; the state type it is left in (``sync.flow_runs.cancel_flow_run``)."""

    def __call__(self, api_url: str, flow_run_id: str, *, message: str) -> str: ...


def cancel(
    run_id: int, *, settings: Settings, actor: Actor, cancel_flow_run: CancelFlowRun
) -> ConnectorRun:
    """Cancel an open run (editor who owns the connector, or admin); the record after.

    409 when the run is not open, or runs outside Prefect (``conveyor run``), or its flow
    run has already ended in Prefect (the watchdog closes such a record).
    """
    flow_run_id, before = _mark(run_id, settings=settings, actor=actor)
    who = actor.username
    state = "NONE"
    if flow_run_id is not None:
        if not settings.prefect_api_url:
            _unmark(run_id, settings=settings)
            raise ConfigurationError(
                "PREFECT_API_URL is not set", hint="point it at the Prefect API"
            )
        try:
            state = cancel_flow_run(
                settings.prefect_api_url, flow_run_id, message=f"Cancelled by {who}"
            )
        except ConveyorError:
            _unmark(run_id, settings=settings)
            raise
    if state in ENDED:
        _unmark(run_id, settings=settings)
        raise Conflict(
            f"run {run_id}'s flow run has already ended in Prefect ({state})",
            hint="its record is closed by the watchdog within a minute",
        )
    if state in ("CANCELLED", "GONE", "NONE"):
        note = " before it started" if before != "running" else ""
        runs.close_if_open(run_id, "cancelled", f"Cancelled by {who}{note}.", settings=settings)
        _clear_reason(run_id, settings=settings, line=f"Run cancelled by {who}{note}.")
    elif state != "CANCELLING":
        _unmark(run_id, settings=settings)
        raise ExternalError(f"Prefect did not cancel flow run {flow_run_id} (it is {state})")
    with session_scope(settings.effective_database_url) as session:
        run = runs.get(run_id, session=session)
        session.expunge(run)
        return run


def _mark(run_id: int, *, settings: Settings, actor: Actor) -> tuple[str | None, str]:
    """Check who asks and that the run is open; note the request; (flow run id, status)."""
    with session_scope(settings.effective_database_url) as session:
        run = runs.get(run_id, session=session)
        connector = session.get(Connector, run.connector_id)
        require_owner_or_admin(actor, connector.owner_id if connector else None, "cancel runs")
        if run.status not in OPEN_RUN_STATUSES:
            raise Conflict(
                f"run {run_id} is {run.status}; only a scheduled, running or retrying run "
                "can be cancelled"
            )
        if run.status == "running" and run.prefect_flow_run_id is None:
            raise Conflict(
                f"run {run_id} runs outside Prefect (conveyor run)",
                hint="stop it where it runs (Ctrl-C)",
            )
        run.waiting_reason = CANCELLING + actor.username
        run_logs.append_line(run_id, f"Cancel requested by {actor.username}.", session=session)
        audit.record(
            session=session,
            actor=actor,
            action="run.cancel",
            entity_type="run",
            entity_id=run_id,
            before={"status": run.status},
        )
        return run.prefect_flow_run_id, run.status


def _unmark(run_id: int, *, settings: Settings) -> None:
    _clear_reason(run_id, settings=settings, line="Cancel request not carried out.")


def _clear_reason(run_id: int, *, settings: Settings, line: str) -> None:
    with session_scope(settings.effective_database_url) as session:
        run = session.get(ConnectorRun, run_id)
        if run is not None and (run.waiting_reason or "").startswith(CANCELLING):
            run.waiting_reason = None
            run_logs.append_line(run_id, line, session=session)


def close_cancelled(flow_run_id: str, *, settings: Settings, state: Any = None) -> bool:
    """Close the open record of a cancelled flow run (the flow's on_cancellation hook, or
    the watchdog when the hook never ran), naming who cancelled it; whether it was open."""
    with session_scope(settings.effective_database_url) as session:
        run = session.scalars(
            select(ConnectorRun).where(ConnectorRun.prefect_flow_run_id == flow_run_id)
        ).first()
        if run is None or run.status not in OPEN_RUN_STATUSES:
            return False
        reason = run.waiting_reason or ""
        who = reason[len(CANCELLING) :] if reason.startswith(CANCELLING) else None
        run.status = "cancelled"
        run.finished_at = utcnow()
        run.waiting_reason = None
        message = getattr(state, "message", None) or ""
        # Cancelled elsewhere (Prefect's UI or API): Prefect's own message says by whom.
        run.error = (
            f"Cancelled by {who}."
            if who
            else f"The run was cancelled in Prefect: {message}"
            if message
            else "The run was cancelled."
        )
        kind = getattr(getattr(state, "type", None), "value", getattr(state, "type", None))
        run.log_summary = f"Prefect state {kind or 'CANCELLING'}: {message}"[:1000]
        ended = "the flow process was stopped"
        run_logs.append_line(int(run.id), f"{run.error.rstrip('.')}; {ended}.", session=session)
        run_events.closed(session, run, settings=settings)  # cancelled: no event, no count
        return True
