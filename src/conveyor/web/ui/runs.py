"""A run's page: its summary, failure explained, attempts, full log, and Retry / Cancel.

The page and its live partial (polled by htmx while the run is open) share one context.
Retry and Cancel call the same services as the API (``services.retries.retry_now``,
``services.cancel.cancel``), which check the caller's role; the buttons are only shown to
users those services would let through.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse

from conveyor.db.models import ConnectorRun
from conveyor.domain.models import Id
from conveyor.errors import ConveyorError, NotFound, PermissionDenied
from conveyor.services import connectors as svc
from conveyor.services import run_logs
from conveyor.services import runs as runs_svc
from conveyor.web.deps import unit_of_work
from conveyor.web.ui import landing, run_advice
from conveyor.web.ui.base import (
    UIActor,
    UIRoute,
    can_change_connector,
    flash,
    fmt_dt,
    get_settings,
    redirect,
    render,
)
from conveyor.web.ui.connectors import flow_run_url
from conveyor.web.ui.schema_changes import schema_change_rows

router = APIRouter(route_class=UIRoute)

LOG_TAIL_LINES = 500  # the page shows the end of the log; "Download full log" has it all


def table_rows(stats: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """(table, rows) pairs from a run's table_stats, whatever shape the flow wrote."""
    out = []
    for table, value in (stats or {}).items():
        if isinstance(value, dict):
            rows = next(
                (value[k] for k in ("rows", "row_count", "rows_loaded", "count") if k in value),
                None,
            )
        else:
            rows = value
        out.append((str(table), rows))
    return sorted(out)


def _run_context(request: Request, run_id: Id) -> dict[str, Any]:
    settings = get_settings(request)
    with unit_of_work(settings) as session:
        run: ConnectorRun = runs_svc.get(run_id, session=session)
        c = svc.get(run.connector_id, session=session)
        out = runs_svc.to_out(run)
        ends = run_advice.Endpoints(
            c.source_id, c.source.name, c.destination_id, c.destination.name
        )
        name, owner_id = c.name, c.owner_id
        lands = landing.landing(c, settings, landing.loaded_tables(out.table_stats))
        log_tail = run_logs.read(run_id, session=session, tail=LOG_TAIL_LINES)
    busy = out.status in run_advice.CANCELLABLE_STATUSES
    may = can_change_connector(request.state.actor, owner_id)
    next_at = fmt_dt(out.next_attempt_at) if out.next_attempt_at else None
    return {
        "run": out,
        "connector_name": name,
        "tables": table_rows(out.table_stats),
        "schema_changes": schema_change_rows(out.schema_changes),
        "landing": lands if out.status == "succeeded" else None,
        "flow_run_url": flow_run_url(settings, out.prefect_flow_run_id),
        "busy": busy,
        "advice": run_advice.advice(out, ends, next_at),
        "waiting": run_advice.waiting(out),
        "attempts": run_advice.attempt_rows(out),
        "log_tail": log_tail,
        "log_tail_cut": log_tail.count("\n") >= LOG_TAIL_LINES,
        "can_retry": may and out.status in run_advice.RETRYABLE_STATUSES,
        "can_cancel": may and busy,
    }


@router.get("/runs/{run_id:int}", include_in_schema=False)
def run_page(request: Request, run_id: Id, actor: UIActor) -> Response:
    return render(request, "runs/detail.html", _run_context(request, run_id))


@router.get("/runs/{run_id:int}/live", include_in_schema=False)
def run_live(request: Request, run_id: Id, actor: UIActor) -> Response:
    return render(request, "partials/run_live.html", _run_context(request, run_id))


@router.get("/runs/{run_id:int}/log", include_in_schema=False)
def run_log(request: Request, run_id: Id, actor: UIActor) -> Response:
    """The whole stored log as a text file (secrets were masked when it was written)."""
    settings = get_settings(request)
    with unit_of_work(settings) as session:
        text = run_logs.read(run_id, session=session)
    return PlainTextResponse(
        text,
        headers={"Content-Disposition": f'attachment; filename="conveyor-run-{run_id}.log"'},
    )


@router.post("/runs/{run_id:int}/retry", include_in_schema=False)
def retry(request: Request, run_id: Id, actor: UIActor) -> Response:
    """Retry now: a new run record (trigger "retry") started through Prefect."""
    from conveyor.services.retries import retry_now
    from conveyor.sync.flow_runs import create_flow_run

    settings = get_settings(request)
    try:
        new = retry_now(run_id, settings=settings, actor=actor, start=create_flow_run)
    except ConveyorError as exc:
        if isinstance(exc, PermissionDenied | NotFound):
            raise
        flash(request, f"Could not retry: {exc}", "error")
        return redirect(request, f"/runs/{run_id}")
    flash(request, f"Run {new.id} started: a retry of run {run_id}. It updates on its own.")
    return redirect(request, f"/runs/{new.id}")


@router.post("/runs/{run_id:int}/cancel", include_in_schema=False)
def cancel(request: Request, run_id: Id, actor: UIActor) -> Response:
    """Cancel an open run: its Prefect flow run is cancelled and the record closed."""
    from conveyor.services.cancel import cancel as cancel_run
    from conveyor.sync.flow_runs import cancel_flow_run

    settings = get_settings(request)
    try:
        run = cancel_run(run_id, settings=settings, actor=actor, cancel_flow_run=cancel_flow_run)
    except ConveyorError as exc:
        if isinstance(exc, PermissionDenied | NotFound):
            raise
        flash(request, f"Could not cancel: {exc}", "error")
        return redirect(request, f"/runs/{run_id}")
    if run.status == "cancelled":
        flash(request, f"Run {run_id} cancelled.")
    else:
        flash(request, f"Cancelling run {run_id}: Prefect is stopping its process.")
    return redirect(request, f"/runs/{run_id}")
