"""/runs: one run's record."""

from __future__ import annotations

from fastapi import APIRouter

from conveyor.domain.models import RunOut
from conveyor.services import runs as svc
from conveyor.web.deps import CurrentActor, SessionDep

router = APIRouter(prefix="/runs", tags=["runs"])


@router.get("/{run_id}", response_model=RunOut, summary="Read a run")
def read_run(run_id: int, session: SessionDep, actor: CurrentActor) -> RunOut:
    return svc.to_out(svc.get(run_id, session=session))
