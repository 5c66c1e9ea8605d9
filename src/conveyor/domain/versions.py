"""API models of version history (services/versions.py, services/restore.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import annotated_types
from pydantic import BaseModel, Field

from conveyor.domain.models import DB_INT_MAX, Id, InputModel

# A version number in a path: an INTEGER column (bounded like every id, invariant 5).
VersionNumber = Annotated[int, annotated_types.Ge(1), annotated_types.Le(DB_INT_MAX)]


class VersionField(BaseModel):
    """One field of two snapshots side by side."""

    field: str
    old: Any = None
    new: Any = None
    changed: bool


class VersionOut(BaseModel):
    """One version: what the entity looked like after a change (secrets "********")."""

    number: int
    change: str = Field(
        description="create, update, pause, resume, system_pause, reset, restore, or "
        "baseline (the entity as it was when its history began)"
    )
    actor: str | None
    at: datetime | None
    restored_from: int | None = None
    changed: list[str] = Field(
        default_factory=list, description="fields changed from the version before"
    )
    snapshot: dict[str, Any]


class VersionDetail(VersionOut):
    current_version: int
    against_current: list[VersionField]  # old: this version, new: the entity now
    against_previous: list[VersionField]  # old: the version before, new: this version


class EndpointRestore(InputModel):
    """Secrets to enter again with a restore (a version that connects elsewhere needs them)."""

    secrets: dict[str, Any] = Field(default_factory=dict)


# An entity's id in a path: a BIGINT column.
EntityId = Id  # a connector's, source's or destination's id
