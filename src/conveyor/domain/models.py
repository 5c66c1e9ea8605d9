"""API-facing models: what clients send and what they get back.

Field names are snake_case; the camelCase names older clients send (``isActive``,
``sourceConfigOverride``, ...) are accepted too.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

import annotated_types
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from conveyor.domain import connector_fields
from conveyor.domain.schedule import validate_cron, validate_timezone
from conveyor.domain.vocabulary import FailureClass, is_reserved_tag
from conveyor.errors import ValidationFailed

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 _.\-]*$"
TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$"

# Integers as the database stores them (invariant 5): an id past what its column holds is
# refused (422) like any bad input, never sent to the database (an OverflowError on SQLite,
# "bigint out of range" on PostgreSQL). Ids are BIGINT (SQLite's INTEGER is the same 64
# bits); counters and versions are INTEGER. Every id in a path, a query or a body is an `Id`
# (tests/unit/test_bounded_ids.py walks the routes and fails on an unbounded one).
DB_BIGINT_MAX = 2**63 - 1
DB_INT_MAX = 2**31 - 1
Id = Annotated[int, annotated_types.Ge(1), annotated_types.Le(DB_BIGINT_MAX)]
Int32 = Annotated[int, annotated_types.Ge(0), annotated_types.Le(DB_INT_MAX)]

Role = Literal["admin", "editor", "viewer"]
SyncStatus = Literal["pending", "synced", "error"]


class InputModel(BaseModel):
    """Request bodies: unknown fields are errors; camelCase aliases accepted; no text holds
    a NUL character (PostgreSQL cannot store one: it was a 500, found by the fuzz)."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, str_strip_whitespace=True
    )

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        where = _nul_at(data, "")
        if where is not None:
            raise ValidationFailed.field(where or "body", "text may not contain NUL characters")
        return data


def _nul_at(value: Any, where: str) -> str | None:
    """The dotted path of the first string (or key) holding a NUL character, if any."""
    if isinstance(value, str):
        return where if "\x00" in value else None
    if not isinstance(value, (dict, list, tuple)):
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        path = f"{where}.{key}" if where else str(key)
        if isinstance(key, str) and "\x00" in key:
            return path
        found = _nul_at(item, path)
        if found is not None:
            return found
    return None


Name = Field(min_length=1, max_length=200, pattern=NAME_PATTERN)


# Runs writing to a destination at once, across all connectors (None: no cap). Sources
# have none: the catalog service refuses it for them, naming the field.
MaxConcurrentRuns = Field(default=None, ge=1, le=100)


class EndpointCreate(InputModel):
    name: str = Name
    type: str = Field(min_length=1, max_length=50)
    config: dict[str, Any] = Field(default_factory=dict)
    max_concurrent_runs: int | None = MaxConcurrentRuns


class EndpointPatch(InputModel):
    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=NAME_PATTERN)
    # Merged over the stored config; secrets left out (or sent back masked) are kept.
    config: dict[str, Any] | None = None
    max_concurrent_runs: int | None = MaxConcurrentRuns  # sent as null: the cap is removed


class EndpointOut(BaseModel):
    id: int
    name: str
    type: str
    config: dict[str, Any]  # secrets masked
    created_at: datetime
    updated_at: datetime
    created_by: str | None
    updated_by: str | None
    connector_count: int = 0
    max_concurrent_runs: int | None = None  # destinations only


def _check_tags(tags: list[str]) -> list[str]:
    import re

    seen: list[str] = []
    for i, tag in enumerate(tags):
        if not re.match(TAG_PATTERN, tag) or len(tag) > 100:
            raise ValueError(f"tag {i} '{tag}' may hold only letters, digits and _ . : -")
        if is_reserved_tag(tag):
            raise ValueError(f"tag '{tag}' is reserved for Conveyor")
        if tag not in seen:
            seen.append(tag)
    return seen


class _ConnectorChecks(InputModel):
    """Checks on the plain fields (``connector_fields.FIELDS``), shared by create and patch."""

    @field_validator("schedule", check_fields=False)
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        return validate_cron(value, loc="")

    @field_validator("timezone", check_fields=False)
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        # None only reaches here from a PATCH, where the service refuses it by name.
        return None if value is None else validate_timezone(value, loc="")

    @field_validator("tags", check_fields=False)
    @classmethod
    def _tags(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _check_tags(value)


class _CreateBase(_ConnectorChecks):
    name: str = Name
    source_id: Id
    destination_id: Id
    source_config_override: dict[str, Any] = Field(default_factory=dict)
    destination_config_override: dict[str, Any] = Field(default_factory=dict)


def _left_out(**constraints: Any) -> Any:
    """A PATCH field that may be left out (unchanged) but not sent as null."""
    return Field(default=None, json_schema_extra=connector_fields.left_out_unchanged, **constraints)


class _PatchBase(_ConnectorChecks):
    """Partial update; ``version`` (optimistic lock), when given, must match."""

    name: str = _left_out(min_length=1, max_length=200, pattern=NAME_PATTERN)
    source_id: Id = _left_out()
    destination_id: Id = _left_out()
    source_config_override: dict[str, Any] | None = None
    destination_config_override: dict[str, Any] | None = None
    version: Int32 | None = None


if TYPE_CHECKING:
    # The plain fields are added from the field list at import; type checkers see them
    # as Any (pydantic's own __getattr__ is hidden from them).

    class ConnectorCreate(_CreateBase):
        def __init__(self, **data: Any) -> None: ...
        def __getattr__(self, name: str) -> Any: ...

    class ConnectorPatch(_PatchBase):
        def __init__(self, **data: Any) -> None: ...
        def __getattr__(self, name: str) -> Any: ...

else:
    ConnectorCreate = create_model(
        "ConnectorCreate",
        __base__=_CreateBase,
        __module__=__name__,
        **{f.name: f.create_field() for f in connector_fields.FIELDS},
    )
    ConnectorPatch = create_model(
        "ConnectorPatch",
        __base__=_PatchBase,
        __module__=__name__,
        **{f.name: f.patch_field() for f in connector_fields.FIELDS},
    )


class RunSummary(BaseModel):
    id: int
    status: str
    trigger: str
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    rows_loaded: int | None
    error: str | None


class _ConnectorOutBase(BaseModel):
    id: int
    name: str
    source_id: int
    source_name: str
    source_type: str
    destination_id: int
    destination_name: str
    destination_type: str
    source_config_override: dict[str, Any]  # secrets masked
    destination_config_override: dict[str, Any]
    schedule_description: str
    next_runs: list[datetime]
    deployment_name: str
    prefect_deployment_id: str | None
    sync_status: SyncStatus
    sync_error: str | None
    sync_next_retry_at: datetime | None
    synced_at: datetime | None
    managed_by: str
    owner: str | None
    # Why Conveyor itself paused the connector (its schema change policy); null otherwise.
    paused_reason: str | None = None
    # Failed runs since the last success (auto_pause_after_failures counts these).
    consecutive_failures: int = 0
    # The freshness SLA is breached: no success for freshness_sla_minutes (since when the
    # freshness loop noticed); cleared by the next success.
    stale: bool = False
    stale_since: datetime | None = None
    version: int
    created_at: datetime
    updated_at: datetime
    last_run: RunSummary | None = None


if TYPE_CHECKING:

    class ConnectorOut(_ConnectorOutBase):
        def __init__(self, **data: Any) -> None: ...
        def __getattr__(self, name: str) -> Any: ...

else:
    ConnectorOut = create_model(
        "ConnectorOut",
        __base__=_ConnectorOutBase,
        __module__=__name__,
        **{f.name: (f.out_type(), ...) for f in connector_fields.FIELDS},
    )


class ResetIn(BaseModel):
    """POST /connectors/{id}/reset: clear incremental state; optionally drop the tables."""

    model_config = ConfigDict(extra="forbid")

    drop_tables: StrictBool = False


class ResetOut(BaseModel):
    connector_id: int
    dropped_tables: list[str]
    message: str


class RunOut(BaseModel):
    id: int
    connector_id: int
    prefect_flow_run_id: str | None
    status: str
    trigger: str
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    rows_loaded: int | None
    bytes_loaded: int | None
    table_stats: dict[str, Any]
    schema_changes: list[Any]
    log_summary: str | None
    error: str | None
    created_at: datetime
    scheduled_for: datetime | None = None
    retry_of: int | None = None
    failure_class: FailureClass | None = None
    failure_side: Literal["source", "destination"] | None = None
    attempt: int = 1
    max_attempts: int = 1
    # Earlier attempts of this run: attempt, prefect_flow_run_id, started_at, finished_at,
    # status, failure_class, error.
    attempts: list[dict[str, Any]] = Field(default_factory=list)
    waiting_reason: str | None = None
    next_attempt_at: datetime | None = None
    committed_at: datetime | None = None
    log_bytes: int = 0
    log_truncated: bool = False


class Page(BaseModel):
    """A page of results; pass ``next_cursor`` back as ``cursor`` for the next one."""

    items: list[Any]
    next_cursor: str | None


PASSWORD_MIN, PASSWORD_MAX = 8, 200


class UserCreate(InputModel):
    username: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@\-]+$")
    password: str = Field(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)
    role: Role


class UserUpdate(InputModel):
    """A user's role, or whether they may log in (disabling ends their logins and tokens)."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    role: Role = _left_out()
    disabled: StrictBool = _left_out()


class PasswordChange(InputModel):
    current_password: str = Field(max_length=PASSWORD_MAX)
    new_password: str = Field(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)


class PasswordReset(InputModel):
    password: str = Field(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)


class AccessEndedOut(BaseModel):
    """What a password change ended: every browser login and API token of the user."""

    sessions_ended: int
    tokens_revoked: int


class UserOut(BaseModel):
    id: int
    username: str
    role: Role
    is_active: bool
    created_at: datetime


class TokenCreate(InputModel):
    name: str = Field(default="api", min_length=1, max_length=100)
    username: str | None = None  # admins may create tokens for others


class TokenOut(BaseModel):
    id: int
    name: str
    username: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenOut):
    token: str  # shown once


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str | None
    action: str
    entity_type: str
    entity_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
