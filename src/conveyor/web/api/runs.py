"""/runs: one run's record."""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse

from conveyor.domain.models import Id, RunOut
from conveyor.services import run_logs
from conveyor.services import runs as svc
from conveyor.web.deps import CurrentActor, SettingsDep, unit_of_work
from conveyor.web.openapi import also_answers

router = APIRouter(prefix="/runs", tags=["runs"])


@router.get("/{run_id}", response_model=RunOut, summary="Read a run")
def read_run(run_id: Id, settings: SettingsDep, actor: CurrentActor) -> RunOut:
    with unit_of_work(settings) as session:
        return svc.to_out(svc.get(run_id, session=session))


@router.post(
    "/{run_id}/retry",
    response_model=RunOut,
    status_code=202,
    responses=also_answers(502),
    summary="Retry a failed, crashed or cancelled run now (a new run)",
)
def retry_run(run_id: Id, settings: SettingsDep, actor: CurrentActor) -> RunOut:
    # No request transaction: the new record commits before Prefect is called.
    from conveyor.services.retries import retry_now
    from conveyor.sync.flow_runs import create_flow_run

    run = retry_now(run_id, settings=settings, actor=actor, start=create_flow_run)
    return svc.to_out(run)


@router.post(
    "/{run_id}/cancel",
    response_model=RunOut,
    status_code=202,
    summary="Cancel an open run",
    responses=also_answers(502),
)
def cancel_run(run_id: Id, settings: SettingsDep, actor: CurrentActor) -> RunOut:
    # No request transaction: the service commits before and after calling Prefect.
    from conveyor.services.cancel import cancel
    from conveyor.sync.flow_runs import cancel_flow_run

    run = cancel(run_id, settings=settings, actor=actor, cancel_flow_run=cancel_flow_run)
    return svc.to_out(run)


@router.get(
    "/{run_id}/logs",
    response_class=PlainTextResponse,
    summary="A run's full log (plain text)",
    responses={200: {"content": {"text/plain": {}}}},
)
def read_run_logs(
    run_id: Id,
    settings: SettingsDep,
    actor: CurrentActor,
    tail: int | None = Query(None, ge=1, le=run_logs.TAIL_MAX, description="last N lines"),
    download: bool = Query(False, description="as an attachment, run-<id>.log"),
) -> PlainTextResponse:
    with unit_of_work(settings) as session:
        text = run_logs.read(run_id, session=session, tail=tail)
    headers = {"Content-Disposition": f"attachment; filename=run-{run_id}.log"} if download else {}
    return PlainTextResponse(text, headers=headers)
