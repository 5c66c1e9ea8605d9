"""/runs: one run's record."""

from __future__ import annotations

from fastapi import APIRouter

from conveyor.domain.models import RunOut
from conveyor.services import runs as svc
from conveyor.web.deps import CurrentActor, SettingsDep, unit_of_work

router = APIRouter(prefix="/runs", tags=["runs"])


@router.get("/{run_id}", response_model=RunOut, summary="Read a run")
def read_run(run_id: int, settings: SettingsDep, actor: CurrentActor) -> RunOut:
    with unit_of_work(settings) as session:
        return svc.to_out(svc.get(run_id, session=session))
