"""History pages: a connector's, source's or destination's versions, one version side by
side with the current one (or the one before), and "Restore this version"."""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from conveyor.domain.versions import EntityId, VersionNumber
from conveyor.errors import ConveyorError, NotFound, PermissionDenied
from conveyor.services import catalog
from conveyor.services import connectors as connectors_svc
from conveyor.services import restore as restore_svc
from conveyor.services import versions as svc
from conveyor.services.versions import EntityType
from conveyor.web.deps import unit_of_work
from conveyor.web.ui.base import (
    UIActor,
    UIRoute,
    can_change_connector,
    can_change_endpoint,
    flash,
    get_settings,
    redirect,
    render,
)

router = APIRouter(route_class=UIRoute)

PLURAL = {"connector": "connectors", "source": "sources", "destination": "destinations"}
# Plain words for the change column (the API's ``change`` values).
CHANGE_WORDS = {
    "create": "created",
    "update": "changed",
    "pause": "paused",
    "resume": "resumed",
    "system_pause": "paused by Conveyor",
    "reset": "reset (state forgotten)",
    "restore": "restored",
    "baseline": "as it was when history began",
}


def shown(value: Any) -> str:
    """A snapshot value as text: strings as they are, the rest as indented JSON."""
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def _entity(entity_type: EntityType, entity_id: int, request: Request) -> dict[str, Any]:
    """The entity's name and whether the caller may restore it."""
    actor = request.state.actor
    with unit_of_work(get_settings(request)) as session:
        if entity_type == "connector":
            c = connectors_svc.get(entity_id, session=session)
            return {"name": c.name, "can_change": can_change_connector(actor, c.owner_id)}
        obj = catalog.get(entity_type, entity_id, session=session)
        return {"name": obj.name, "can_change": can_change_endpoint(actor, obj.created_by)}


def _history(request: Request, entity_type: EntityType, entity_id: int) -> Response:
    with unit_of_work(get_settings(request)) as session:
        rows = svc.list_versions(entity_type, entity_id, session=session)
    base = f"/{PLURAL[entity_type]}/{entity_id}"
    ctx = {
        **_entity(entity_type, entity_id, request),
        "kind": entity_type,
        "plural": PLURAL[entity_type],
        "base": base,
        "versions": rows,
        "words": CHANGE_WORDS,
    }
    return render(request, "history/list.html", ctx)


def _version(
    request: Request,
    entity_type: EntityType,
    entity_id: int,
    number: int,
    against: Literal["current", "previous"],
) -> Response:
    with unit_of_work(get_settings(request)) as session:
        v = svc.get_version(entity_type, entity_id, number, session=session)
    previous = against == "previous" and bool(v.against_previous)
    ctx = {
        **_entity(entity_type, entity_id, request),
        "kind": entity_type,
        "plural": PLURAL[entity_type],
        "base": f"/{PLURAL[entity_type]}/{entity_id}",
        "v": v,
        "words": CHANGE_WORDS,
        "against": "previous" if previous else "current",
        "rows": v.against_previous if previous else v.against_current,
        "shown": shown,
        "is_current": not any(f.changed for f in v.against_current),
    }
    return render(request, "history/version.html", ctx)


async def _restore(
    request: Request, entity_type: EntityType, entity_id: int, number: int
) -> Response:
    """The confirmed restore (the version page's form; its box must be ticked)."""
    form = await request.form()
    base = f"/{PLURAL[entity_type]}/{entity_id}"
    if form.get("confirm") != "yes":
        flash(request, "Nothing was restored: tick the box to confirm the restore.", "error")
        return redirect(request, f"{base}/history/{number}")
    return await run_in_threadpool(_restore_now, request, entity_type, entity_id, number)


def _restore_now(
    request: Request, entity_type: EntityType, entity_id: int, number: int
) -> Response:
    actor = request.state.actor
    box = request.app.state.secret_box
    base = f"/{PLURAL[entity_type]}/{entity_id}"
    settings = get_settings(request)
    try:
        with unit_of_work(settings) as session:
            if entity_type == "connector":
                restore_svc.restore_connector(
                    entity_id, number, session=session, actor=actor, box=box, settings=settings
                )
            else:
                restore_svc.restore_endpoint(
                    entity_type, entity_id, number, session=session, actor=actor, box=box
                )
    except ConveyorError as exc:
        if isinstance(exc, PermissionDenied | NotFound):
            raise
        flash(request, f"Nothing was restored: {exc}", "error")
        return redirect(request, f"{base}/history/{number}")
    synced = " Its Prefect deployment follows." if entity_type == "connector" else ""
    flash(request, f"Restored version {number} as a new version.{synced}")
    return redirect(request, base)


# --- routes ------------------------------------------------------------------------------
# One set per kind; connectors use {connector_id}, sources and destinations {endpoint_id}
# (as their other pages do).


@router.get("/connectors/{connector_id:int}/history", include_in_schema=False)
def connector_history(request: Request, connector_id: EntityId, actor: UIActor) -> Response:
    return _history(request, "connector", connector_id)


@router.get("/connectors/{connector_id:int}/history/{number:int}", include_in_schema=False)
def connector_version(
    request: Request,
    connector_id: EntityId,
    number: VersionNumber,
    actor: UIActor,
    against: Literal["current", "previous"] = "current",
) -> Response:
    return _version(request, "connector", connector_id, number, against)


@router.post("/connectors/{connector_id:int}/history/{number:int}/restore", include_in_schema=False)
async def connector_restore(
    request: Request, connector_id: EntityId, number: VersionNumber, actor: UIActor
) -> Response:
    return await _restore(request, "connector", connector_id, number)


def _endpoint_routes(kind: Literal["source", "destination"]) -> None:
    prefix = f"/{PLURAL[kind]}/{{endpoint_id:int}}/history"

    def history(request: Request, endpoint_id: EntityId, actor: UIActor) -> Response:
        return _history(request, kind, endpoint_id)

    def version(
        request: Request,
        endpoint_id: EntityId,
        number: VersionNumber,
        actor: UIActor,
        against: Literal["current", "previous"] = "current",
    ) -> Response:
        return _version(request, kind, endpoint_id, number, against)

    async def restore(
        request: Request, endpoint_id: EntityId, number: VersionNumber, actor: UIActor
    ) -> Response:
        return await _restore(request, kind, endpoint_id, number)

    router.add_api_route(prefix, history, methods=["GET"], include_in_schema=False)
    router.add_api_route(
        prefix + "/{number:int}", version, methods=["GET"], include_in_schema=False
    )
    router.add_api_route(
        prefix + "/{number:int}/restore", restore, methods=["POST"], include_in_schema=False
    )


_endpoint_routes("source")
_endpoint_routes("destination")
