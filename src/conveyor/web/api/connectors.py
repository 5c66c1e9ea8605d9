"""/connectors: create, list, change, pause, resume, run and delete connectors."""

from __future__ import annotations

import asyncio
import time
from typing import Literal

from fastapi import APIRouter, Query, Response
from fastapi.concurrency import run_in_threadpool

from conveyor.db.session import session_scope
from conveyor.domain.models import ConnectorCreate, ConnectorOut, ConnectorPatch, Page, RunOut
from conveyor.services import connectors as svc
from conveyor.services import runs as runs_svc
from conveyor.settings import Settings
from conveyor.web.deps import BoxDep, CurrentActor, SessionDep, SettingsDep

router = APIRouter(prefix="/connectors", tags=["connectors"])

WaitParam = Query(
    0, ge=0, le=30, description="Wait up to this many seconds for the Prefect sync to finish"
)


@router.get("", response_model=Page, summary="List connectors (filters, cursor pagination)")
def list_connectors(
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
    q: str | None = Query(None, description="Name contains (case-insensitive)"),
    sync_status: Literal["pending", "synced", "error"] | None = None,
    tag: str | None = None,
    is_active: bool | None = None,
    source_id: int | None = None,
    destination_id: int | None = None,
    last_run_status: str | None = None,
    cursor: str | None = None,
    limit: int = Query(50, ge=1, le=500),
) -> Page:
    return svc.list_page(
        session=session,
        settings=settings,
        q=q,
        sync_status=sync_status,
        tag=tag,
        is_active=is_active,
        source_id=source_id,
        destination_id=destination_id,
        last_run_status=last_run_status,
        cursor=cursor,
        limit=limit,
    )


async def _after_write(connector_id: int, settings: Settings, wait: float) -> ConnectorOut:
    """Optionally wait for the reconciler, then read the connector back."""
    deadline = time.monotonic() + wait
    while True:
        out = await run_in_threadpool(_read, connector_id, settings)
        if out.sync_status != "pending" or time.monotonic() >= deadline:
            return out
        await asyncio.sleep(0.2)


def _read(connector_id: int, settings: Settings) -> ConnectorOut:
    with session_scope(settings.effective_database_url) as session:
        c = svc.get(connector_id, session=session)
        return svc.to_out(c, settings, svc.last_runs([c.id], session=session).get(c.id))


@router.post("", response_model=ConnectorOut, status_code=201, summary="Create a connector")
async def create_connector(
    data: ConnectorCreate,
    settings: SettingsDep,
    actor: CurrentActor,
    box: BoxDep,
    wait: float = WaitParam,
) -> ConnectorOut:
    def write() -> int:
        with session_scope(settings.effective_database_url) as session:
            return svc.create(data, session=session, actor=actor, box=box).id

    connector_id = await run_in_threadpool(write)
    return await _after_write(connector_id, settings, wait)


@router.get("/{connector_id}", response_model=ConnectorOut, summary="Read a connector")
def read_connector(connector_id: int, settings: SettingsDep, actor: CurrentActor) -> ConnectorOut:
    return _read(connector_id, settings)


@router.patch("/{connector_id}", response_model=ConnectorOut, summary="Change a connector")
async def patch_connector(
    connector_id: int,
    data: ConnectorPatch,
    settings: SettingsDep,
    actor: CurrentActor,
    box: BoxDep,
    wait: float = WaitParam,
) -> ConnectorOut:
    def write() -> None:
        with session_scope(settings.effective_database_url) as session:
            svc.update(connector_id, data, session=session, actor=actor, box=box)

    await run_in_threadpool(write)
    return await _after_write(connector_id, settings, wait)


@router.post("/{connector_id}/pause", response_model=ConnectorOut, summary="Pause its schedule")
async def pause_connector(
    connector_id: int,
    settings: SettingsDep,
    actor: CurrentActor,
    box: BoxDep,
    wait: float = WaitParam,
) -> ConnectorOut:
    return await _set_active(connector_id, False, settings, actor, box, wait)


@router.post("/{connector_id}/resume", response_model=ConnectorOut, summary="Resume its schedule")
async def resume_connector(
    connector_id: int,
    settings: SettingsDep,
    actor: CurrentActor,
    box: BoxDep,
    wait: float = WaitParam,
) -> ConnectorOut:
    return await _set_active(connector_id, True, settings, actor, box, wait)


async def _set_active(
    connector_id: int,
    active: bool,
    settings: Settings,
    actor: CurrentActor,
    box: BoxDep,
    wait: float,
) -> ConnectorOut:
    def write() -> None:
        with session_scope(settings.effective_database_url) as session:
            svc.set_active(connector_id, active, session=session, actor=actor, box=box)

    await run_in_threadpool(write)
    return await _after_write(connector_id, settings, wait)


@router.delete("/{connector_id}", status_code=204, summary="Delete a connector and its runs")
def delete_connector(connector_id: int, session: SessionDep, actor: CurrentActor) -> Response:
    svc.delete(connector_id, session=session, actor=actor)
    return Response(status_code=204)


@router.post("/{connector_id}/run", response_model=RunOut, status_code=202, summary="Run it now")
def run_connector(
    connector_id: int, session: SessionDep, settings: SettingsDep, actor: CurrentActor
) -> RunOut:
    from conveyor.sync.runs import trigger_manual_run

    run = trigger_manual_run(connector_id, session=session, settings=settings, actor=actor)
    return runs_svc.to_out(run)


@router.get("/{connector_id}/runs", response_model=list[RunOut], summary="Run history")
def list_runs(
    connector_id: int,
    session: SessionDep,
    actor: CurrentActor,
    before_id: int | None = None,
    limit: int = Query(50, ge=1, le=500),
) -> list[RunOut]:
    svc.get(connector_id, session=session)
    rows = runs_svc.list_for_connector(
        connector_id, session=session, before_id=before_id, limit=limit
    )
    return [runs_svc.to_out(r) for r in rows]
