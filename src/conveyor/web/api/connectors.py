"""/connectors: create, list, change, pause, resume, run and delete connectors."""

from __future__ import annotations

import asyncio
import time
from typing import Literal

from fastapi import APIRouter, Query, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from conveyor.db.models import Connector
from conveyor.domain.models import (
    ConnectorCreate,
    ConnectorOut,
    ConnectorPatch,
    Id,
    Page,
    ResetIn,
    ResetOut,
    RunOut,
)
from conveyor.secrets import SecretBox
from conveyor.services import connectors as svc
from conveyor.services import runs as runs_svc
from conveyor.settings import Settings
from conveyor.web.deps import (
    BoxDep,
    Credentials,
    CredentialsDep,
    CurrentActor,
    SettingsDep,
    unit_of_work,
)
from conveyor.web.openapi import also_answers

router = APIRouter(prefix="/connectors", tags=["connectors"])

WaitParam = Query(
    0, ge=0, le=30, description="Wait up to this many seconds for the Prefect sync to finish"
)


@router.get("", response_model=Page, summary="List connectors (filters, cursor pagination)")
def list_connectors(
    settings: SettingsDep,
    actor: CurrentActor,
    q: str | None = Query(None, description="Name contains (case-insensitive)"),
    sync_status: Literal["pending", "synced", "error"] | None = None,
    tag: str | None = None,
    is_active: bool | None = None,
    source_id: Id | None = None,
    destination_id: Id | None = None,
    last_run_status: str | None = None,
    cursor: str | None = None,
    limit: int = Query(50, ge=1, le=500),
) -> Page:
    with unit_of_work(settings) as session:
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


async def _after_write(out: ConnectorOut, settings: Settings, wait: float) -> ConnectorOut:
    """``out`` as the change left it, or, with ``wait``, once the reconciler has synced it
    (or ``wait`` seconds have passed)."""
    deadline = time.monotonic() + wait
    while out.sync_status == "pending" and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        out = await run_in_threadpool(_read, out.id, settings)
    return out


def _read(connector_id: Id, settings: Settings) -> ConnectorOut:
    with unit_of_work(settings) as session:
        return _out(svc.get(connector_id, session=session), settings, session)


def _out(c: Connector, settings: Settings, session: Session) -> ConnectorOut:
    return svc.to_out(c, settings, svc.last_runs([c.id], session=session).get(c.id))


@router.post("", response_model=ConnectorOut, status_code=201, summary="Create a connector")
async def create_connector(
    data: ConnectorCreate,
    settings: SettingsDep,
    who: CredentialsDep,
    box: BoxDep,
    wait: float = WaitParam,
) -> ConnectorOut:
    # One transaction and one thread hop: check the caller, write, read back.
    def write() -> ConnectorOut:
        with unit_of_work(settings) as session:
            c = svc.create(
                data, session=session, actor=who.actor(session), box=box, settings=settings
            )
            return svc.to_out(c, settings)  # a new connector has no runs

    return await _after_write(await run_in_threadpool(write), settings, wait)


@router.get("/{connector_id}", response_model=ConnectorOut, summary="Read a connector")
def read_connector(connector_id: Id, settings: SettingsDep, actor: CurrentActor) -> ConnectorOut:
    return _read(connector_id, settings)


@router.patch("/{connector_id}", response_model=ConnectorOut, summary="Change a connector")
async def patch_connector(
    connector_id: Id,
    data: ConnectorPatch,
    settings: SettingsDep,
    who: CredentialsDep,
    box: BoxDep,
    wait: float = WaitParam,
) -> ConnectorOut:
    def write() -> ConnectorOut:
        with unit_of_work(settings) as session:
            c = svc.update(
                connector_id,
                data,
                session=session,
                actor=who.actor(session),
                box=box,
                settings=settings,
            )
            return _out(c, settings, session)

    return await _after_write(await run_in_threadpool(write), settings, wait)


@router.post("/{connector_id}/pause", response_model=ConnectorOut, summary="Pause its schedule")
async def pause_connector(
    connector_id: Id,
    settings: SettingsDep,
    who: CredentialsDep,
    box: BoxDep,
    wait: float = WaitParam,
) -> ConnectorOut:
    return await _set_active(connector_id, False, settings, who, box, wait)


@router.post("/{connector_id}/resume", response_model=ConnectorOut, summary="Resume its schedule")
async def resume_connector(
    connector_id: Id,
    settings: SettingsDep,
    who: CredentialsDep,
    box: BoxDep,
    wait: float = WaitParam,
) -> ConnectorOut:
    return await _set_active(connector_id, True, settings, who, box, wait)


async def _set_active(
    connector_id: Id,
    active: bool,
    settings: Settings,
    who: Credentials,
    box: SecretBox,
    wait: float,
) -> ConnectorOut:
    def write() -> ConnectorOut:
        with unit_of_work(settings) as session:
            c = svc.set_active(
                connector_id, active, session=session, actor=who.actor(session), box=box
            )
            return _out(c, settings, session)

    return await _after_write(await run_in_threadpool(write), settings, wait)


@router.delete("/{connector_id}", status_code=204, summary="Delete a connector and its runs")
def delete_connector(connector_id: Id, settings: SettingsDep, actor: CurrentActor) -> Response:
    with unit_of_work(settings) as session:
        svc.delete(connector_id, session=session, actor=actor)
        return Response(status_code=204)


@router.post(
    "/{connector_id}/run",
    response_model=RunOut,
    status_code=202,
    summary="Run it now",
    responses=also_answers(502),
)
def run_connector(connector_id: Id, settings: SettingsDep, actor: CurrentActor) -> RunOut:
    # No request transaction: the run record commits before Prefect is called.
    from conveyor.sync.flow_runs import create_flow_run

    run = runs_svc.trigger(connector_id, settings=settings, actor=actor, start=create_flow_run)
    return runs_svc.to_out(run)


@router.post(
    "/{connector_id}/reset",
    response_model=ResetOut,
    responses=also_answers(502),
    summary="Clear incremental state (the next run reloads in full); drop_tables: its tables too",
)
def reset_connector(
    connector_id: Id, settings: SettingsDep, actor: CurrentActor, body: ResetIn | None = None
) -> ResetOut:
    # No request transaction: the service drops tables at the destination between its own.
    from conveyor.services.reset import reset

    done = reset(
        connector_id,
        settings=settings,
        actor=actor,
        drop_tables=bool(body and body.drop_tables),
    )
    return ResetOut(
        connector_id=done.connector_id, dropped_tables=done.dropped_tables, message=done.message
    )


@router.get("/{connector_id}/runs", response_model=list[RunOut], summary="Run history")
def list_runs(
    connector_id: Id,
    settings: SettingsDep,
    actor: CurrentActor,
    before_id: Id | None = None,
    limit: int = Query(50, ge=1, le=500),
) -> list[RunOut]:
    with unit_of_work(settings) as session:
        svc.get(connector_id, session=session)
        rows = runs_svc.list_for_connector(
            connector_id, session=session, before_id=before_id, limit=limit
        )
        return [runs_svc.to_out(r) for r in rows]
