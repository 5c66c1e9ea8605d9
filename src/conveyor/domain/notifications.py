"""API models of notification channels: what admins send and what they get back.

A channel is ``{"name", "type", "config", "events", "connector_ids", "tags"}``; the config
is checked per type by ``services/channel_config.py`` (its secrets are write-only).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, field_validator

from conveyor.domain.models import NAME_PATTERN, Id, InputModel, Name, _check_tags
from conveyor.domain.vocabulary import ChannelType, NotificationEvent

# A database id (BIGINT): anything larger is refused as bad input, never sent to the database.
ChannelId = Id


class _ChannelChecks(InputModel):
    @field_validator("events", check_fields=False)
    @classmethod
    def _unique_events(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else list(dict.fromkeys(v))

    @field_validator("tags", check_fields=False)
    @classmethod
    def _tags(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _check_tags(v)

    @field_validator("connector_ids", check_fields=False)
    @classmethod
    def _ids(cls, v: list[int] | None) -> list[int] | None:
        return None if v is None else list(dict.fromkeys(v))


class ChannelCreate(_ChannelChecks):
    name: str = Name
    type: ChannelType
    config: dict[str, Any] = Field(default_factory=dict)
    # Left out: every event but run.succeeded (vocabulary.DEFAULT_CHANNEL_EVENTS).
    events: list[NotificationEvent] | None = Field(default=None, max_length=20)
    # Both null: every connector; else the connectors listed, or carrying one of the tags.
    connector_ids: list[ChannelId] | None = Field(default=None, max_length=1000)
    tags: list[str] | None = Field(default=None, max_length=50)
    is_active: bool = True


class ChannelPatch(_ChannelChecks):
    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=NAME_PATTERN)
    # Merged over the stored config; secrets left out (or sent back masked) are kept.
    config: dict[str, Any] | None = None
    events: list[NotificationEvent] | None = Field(default=None, max_length=20)
    # Sent (null included) they replace the scope; left out they stay.
    connector_ids: list[ChannelId] | None = Field(default=None, max_length=1000)
    tags: list[str] | None = Field(default=None, max_length=50)
    is_active: bool | None = None


class ChannelOut(BaseModel):
    id: int
    name: str
    type: str
    config: dict[str, Any]  # secrets masked ("********")
    events: list[str]
    connector_ids: list[int] | None
    tags: list[str] | None
    is_active: bool
    last_delivery_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    pending: int = 0  # deliveries waiting to be sent (or retried)
    delivered: int = 0
    expired: int = 0  # given up after CONVEYOR_NOTIFY_MAX_AGE
    created_at: datetime
    updated_at: datetime
    created_by: str | None
    updated_by: str | None


class ChannelTestOut(BaseModel):
    ok: bool
    message: str  # what happened, in words (never a secret)
    id: str  # the test event's id (the receiver sees it as the body's "id")
