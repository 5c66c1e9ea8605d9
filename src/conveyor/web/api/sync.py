"""/sync: how far Prefect is from the database (the reconciler's progress)."""

from __future__ import annotations

from fastapi import APIRouter

from conveyor.sync import status
from conveyor.sync.status import SyncStatusOut
from conveyor.web.deps import CurrentActor, SessionDep

router = APIRouter(prefix="/sync", tags=["sync"])


@router.get(
    "",
    response_model=SyncStatusOut,
    summary="Connectors by sync status, the oldest queued change, the last full pass",
)
def read_sync_status(session: SessionDep, actor: CurrentActor) -> SyncStatusOut:
    return status.read(session)
