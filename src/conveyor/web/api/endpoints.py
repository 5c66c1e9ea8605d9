"""/sources, /destinations and their type catalogues (the two resources share one shape)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Response

from conveyor.domain.models import EndpointCreate, EndpointOut, EndpointPatch, Id
from conveyor.errors import Conflict
from conveyor.pipelines.registry import Kind, list_types
from conveyor.secrets import SecretBox
from conveyor.services import catalog
from conveyor.services.authz import require_role
from conveyor.settings import Settings
from conveyor.web.deps import BoxDep, CurrentActor, SettingsDep, unit_of_work
from conveyor.web.openapi import also_answers


def _require_check_passes(
    kind: Kind,
    endpoint_id: Id,
    data: EndpointPatch,
    actor: Any,
    box: SecretBox,
    settings: Settings,
) -> None:
    """PATCH ?check=true: the changed config must pass the connection check, or the
    request fails (409, the reason) and nothing is saved. The change is merged in a
    transaction rolled back at once, and checked outside it (never hold the database
    across a network call)."""
    from conveyor.pipelines.check import check as run_check

    with unit_of_work(settings) as session:
        obj = catalog.update(kind, endpoint_id, data, session=session, actor=actor, box=box)
        type_name, config = obj.type, catalog.decrypted_config(kind, obj, box)
        session.rollback()
    result = run_check(kind, type_name, config, settings=settings)
    if not result.ok:
        raise Conflict(
            f"the {kind}'s connection check failed: {result.message}",
            hint="fix the config, or send it without ?check=true to save it anyway",
        )


def _router(kind: Kind) -> APIRouter:
    plural = f"{kind}s"
    router = APIRouter(prefix=f"/{plural}", tags=[plural])

    @router.get("", response_model=list[EndpointOut], summary=f"List {plural}")
    def list_(settings: SettingsDep, actor: CurrentActor) -> list[EndpointOut]:
        with unit_of_work(settings) as session:
            return catalog.list_all(kind, session=session)

    @router.post("", response_model=EndpointOut, status_code=201, summary=f"Create a {kind}")
    def create(
        data: EndpointCreate, settings: SettingsDep, actor: CurrentActor, box: BoxDep
    ) -> EndpointOut:
        with unit_of_work(settings) as session:
            obj = catalog.create(kind, data, session=session, actor=actor, box=box)
            return catalog.to_out(kind, obj)

    @router.get("/{endpoint_id}", response_model=EndpointOut, summary=f"Read a {kind}")
    def read(endpoint_id: Id, settings: SettingsDep, actor: CurrentActor) -> EndpointOut:
        with unit_of_work(settings) as session:
            obj = catalog.get(kind, endpoint_id, session=session)
            count = catalog.connector_count(kind, endpoint_id, session=session)
            return catalog.to_out(kind, obj, count)

    @router.patch(
        "/{endpoint_id}",
        response_model=EndpointOut,
        summary=f"Change a {kind}",
        responses=also_answers(502),
    )
    def patch(
        endpoint_id: Id,
        data: EndpointPatch,
        settings: SettingsDep,
        actor: CurrentActor,
        box: BoxDep,
        check: bool = Query(
            False,
            description="Try the changed config first; a failing check saves nothing (409).",
        ),
    ) -> EndpointOut:
        if check and data.config is not None:
            _require_check_passes(kind, endpoint_id, data, actor, box, settings)
        with unit_of_work(settings) as session:
            obj = catalog.update(kind, endpoint_id, data, session=session, actor=actor, box=box)
            count = catalog.connector_count(kind, endpoint_id, session=session)
            return catalog.to_out(kind, obj, count)

    @router.delete("/{endpoint_id}", status_code=204, summary=f"Delete an unused {kind}")
    def delete(endpoint_id: Id, settings: SettingsDep, actor: CurrentActor) -> Response:
        with unit_of_work(settings) as session:
            catalog.delete(kind, endpoint_id, session=session, actor=actor)
            return Response(status_code=204)

    @router.post(
        "/{endpoint_id}/check",
        summary=f"Try the {kind}'s connection",
        responses=also_answers(502),
    )
    def check(
        endpoint_id: Id,
        settings: SettingsDep,
        actor: CurrentActor,
        box: BoxDep,
    ) -> dict[str, Any]:
        with unit_of_work(settings) as session:
            from conveyor.pipelines.check import check as run_check

            require_role(actor, "editor", f"check {plural}")
            obj = catalog.get(kind, endpoint_id, session=session)
            result = run_check(
                kind, obj.type, catalog.decrypted_config(kind, obj, box), settings=settings
            )
            return {"ok": result.ok, "message": result.message}

    if kind == "source":
        _add_discover(router)
    return router


def _add_discover(router: APIRouter) -> None:
    """Sources only: list what a source holds (tables and columns, or files)."""

    @router.get(
        "/{endpoint_id}/discover",
        summary="List tables and columns, or files",
        responses=also_answers(502),
    )
    def discover(
        endpoint_id: Id,
        settings: SettingsDep,
        actor: CurrentActor,
        box: BoxDep,
    ) -> dict[str, Any]:
        with unit_of_work(settings) as session:
            from conveyor.pipelines.check import discover as run_discover

            require_role(actor, "editor", "discover sources")
            obj = catalog.get("source", endpoint_id, session=session)
            return run_discover(
                obj.type, catalog.decrypted_config("source", obj, box), settings=settings
            )


def _types_router(kind: Kind) -> APIRouter:
    router = APIRouter(tags=[f"{kind}s"])

    @router.get(f"/{kind}-types", summary=f"{kind.title()} types and their config JSON schema")
    def types(actor: CurrentActor) -> list[dict[str, Any]]:
        return [
            {
                "name": t.name,
                "title": t.title,
                "secret_fields": sorted(t.secret_fields),
                "config_schema": t.json_schema(),
            }
            for t in list_types(kind)
        ]

    return router


sources = _router("source")
destinations = _router("destination")
source_types = _types_router("source")
destination_types = _types_router("destination")
