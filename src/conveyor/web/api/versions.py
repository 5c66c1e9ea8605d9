"""Version history: ``/connectors/{id}/versions``, ``/sources/{id}/versions`` and
``/destinations/{id}/versions`` (list, read one, restore one). Reading is for every
signed-in user (snapshots are masked); restoring is a change (owner or admin)."""

from __future__ import annotations

from fastapi import APIRouter

from conveyor.domain.versions import (
    EndpointRestore,
    EntityId,
    VersionDetail,
    VersionNumber,
    VersionOut,
)
from conveyor.pipelines.registry import Kind
from conveyor.services import restore as restore_svc
from conveyor.services import versions as svc
from conveyor.web.deps import BoxDep, CurrentActor, SettingsDep, unit_of_work

connectors = APIRouter(prefix="/connectors", tags=["connectors"])


@connectors.get(
    "/{connector_id}/versions",
    response_model=list[VersionOut],
    summary="A connector's versions, newest first",
)
def list_connector_versions(
    connector_id: EntityId, settings: SettingsDep, actor: CurrentActor
) -> list[VersionOut]:
    with unit_of_work(settings) as session:
        return svc.list_versions("connector", connector_id, session=session)


@connectors.get(
    "/{connector_id}/versions/{number}",
    response_model=VersionDetail,
    summary="One version of a connector, with its differences from now and from the one before",
)
def read_connector_version(
    connector_id: EntityId, number: VersionNumber, settings: SettingsDep, actor: CurrentActor
) -> VersionDetail:
    with unit_of_work(settings) as session:
        return svc.get_version("connector", connector_id, number, session=session)


@connectors.post(
    "/{connector_id}/versions/{number}/restore",
    response_model=VersionOut,
    summary="Go back to a version: a new version equal to it (secrets kept as they are)",
)
def restore_connector_version(
    connector_id: EntityId,
    number: VersionNumber,
    settings: SettingsDep,
    actor: CurrentActor,
    box: BoxDep,
) -> VersionOut:
    with unit_of_work(settings) as session:
        restore_svc.restore_connector(
            connector_id, number, session=session, actor=actor, box=box, settings=settings
        )
        return svc.list_versions("connector", connector_id, session=session)[0]


def _endpoint_router(kind: Kind) -> APIRouter:
    router = APIRouter(prefix=f"/{kind}s", tags=[f"{kind}s"])

    @router.get(
        "/{endpoint_id}/versions",
        response_model=list[VersionOut],
        summary=f"A {kind}'s versions, newest first",
    )
    def list_versions(
        endpoint_id: EntityId, settings: SettingsDep, actor: CurrentActor
    ) -> list[VersionOut]:
        with unit_of_work(settings) as session:
            return svc.list_versions(kind, endpoint_id, session=session)

    @router.get(
        "/{endpoint_id}/versions/{number}",
        response_model=VersionDetail,
        summary=f"One version of a {kind}, with its differences from now and the one before",
    )
    def read_version(
        endpoint_id: EntityId, number: VersionNumber, settings: SettingsDep, actor: CurrentActor
    ) -> VersionDetail:
        with unit_of_work(settings) as session:
            return svc.get_version(kind, endpoint_id, number, session=session)

    @router.post(
        "/{endpoint_id}/versions/{number}/restore",
        response_model=VersionOut,
        summary=f"Go back to a version of a {kind}: a new version equal to it",
    )
    def restore_version(
        endpoint_id: EntityId,
        number: VersionNumber,
        settings: SettingsDep,
        actor: CurrentActor,
        box: BoxDep,
        data: EndpointRestore | None = None,
    ) -> VersionOut:
        with unit_of_work(settings) as session:
            restore_svc.restore_endpoint(
                kind,
                endpoint_id,
                number,
                session=session,
                actor=actor,
                box=box,
                secrets=data.secrets if data else None,
            )
            return svc.list_versions(kind, endpoint_id, session=session)[0]

    return router


sources = _endpoint_router("source")
destinations = _endpoint_router("destination")
