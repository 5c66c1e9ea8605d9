"""/notification-channels: where events go (admins only: channels hold secrets)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from conveyor.domain.notifications import (
    ChannelCreate,
    ChannelId,
    ChannelOut,
    ChannelPatch,
    ChannelTestOut,
)
from conveyor.services import channels
from conveyor.web.deps import BoxDep, CurrentActor, SettingsDep, unit_of_work

router = APIRouter(prefix="/notification-channels", tags=["notifications"])


@router.get("", response_model=list[ChannelOut], summary="List notification channels")
def list_(settings: SettingsDep, actor: CurrentActor) -> list[ChannelOut]:
    with unit_of_work(settings) as session:
        return channels.list_all(session=session, actor=actor)


@router.post(
    "", response_model=ChannelOut, status_code=201, summary="Create a notification channel"
)
def create(
    data: ChannelCreate, settings: SettingsDep, actor: CurrentActor, box: BoxDep
) -> ChannelOut:
    with unit_of_work(settings) as session:
        channel = channels.create(data, session=session, actor=actor, box=box, settings=settings)
        return channels.out_of(channel, session=session)


@router.get("/{channel_id}", response_model=ChannelOut, summary="Read a notification channel")
def read(channel_id: ChannelId, settings: SettingsDep, actor: CurrentActor) -> ChannelOut:
    with unit_of_work(settings) as session:
        return channels.read(channel_id, session=session, actor=actor)


@router.patch("/{channel_id}", response_model=ChannelOut, summary="Change a notification channel")
def patch(
    channel_id: ChannelId,
    data: ChannelPatch,
    settings: SettingsDep,
    actor: CurrentActor,
    box: BoxDep,
) -> ChannelOut:
    with unit_of_work(settings) as session:
        channel = channels.update(
            channel_id, data, session=session, actor=actor, box=box, settings=settings
        )
        return channels.out_of(channel, session=session)


@router.delete(
    "/{channel_id}",
    status_code=204,
    summary="Delete a notification channel (its undelivered notifications too)",
)
def delete(channel_id: ChannelId, settings: SettingsDep, actor: CurrentActor) -> Response:
    with unit_of_work(settings) as session:
        channels.delete(channel_id, session=session, actor=actor)
    return Response(status_code=204)


@router.post(
    "/{channel_id}/test",
    response_model=ChannelTestOut,
    summary="Send a test notification now and say whether it arrived",
)
def test(
    channel_id: ChannelId, settings: SettingsDep, actor: CurrentActor, box: BoxDep
) -> ChannelTestOut:
    # Read in a transaction, send outside it: never hold the database across a network call.
    with unit_of_work(settings) as session:
        type_name, config, name = channels.test_target(
            channel_id, session=session, actor=actor, box=box
        )
    return channels.send_test(type_name, config, name, settings=settings)
