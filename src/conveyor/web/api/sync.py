"""/sync: how far Prefect is from the database (the reconciler's progress)."""

from __future__ import annotations

from fastapi import APIRouter

from conveyor.sync import status
from conveyor.sync.status import SyncStatusOut
from conveyor.web.deps import CurrentActor, SettingsDep, unit_of_work

router = APIRouter(prefix="/sync", tags=["sync"])


@router.get(
    "",
    response_model=SyncStatusOut,
    summary="Connectors by sync status, the oldest queued change, the last full pass",
)
def read_sync_status(settings: SettingsDep, actor: CurrentActor) -> SyncStatusOut:
    with unit_of_work(settings) as session:
        return status.read(session)
