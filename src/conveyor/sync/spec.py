"""Connector → Prefect deployment spec, and the content hash the reconciler compares.

Pure functions: no database, no Prefect. The gateway projects a deployment read back from
Prefect onto the same ``DeploymentSpec`` shape, so "in step" is one hash comparison.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Protocol

from conveyor.domain.vocabulary import (
    ENTRYPOINT,
    FLOW_NAME,
    OWNER_TAG,
    SCHEDULED_TAG,
    connector_id_from_tags,
    connector_tag,
    deployment_name,
)

# Bump when the mapping below changes: every deployment is then re-applied once.
SPEC_FORMAT = "conveyor/1"
COLLISION_STRATEGY = "ENQUEUE"
# What the Prefect UI shows for "Run" and validates flow-run parameters against.
PARAMETER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Parameters",
    "properties": {"connector_id": {"type": "integer", "title": "connector_id", "position": 0}},
    "required": ["connector_id"],
}


class ConnectorLike(Protocol):
    """The connector fields a deployment depends on (an ORM row or a snapshot)."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def schedule(self) -> str | None: ...
    @property
    def timezone(self) -> str: ...
    @property
    def is_active(self) -> bool: ...
    @property
    def tags(self) -> list[str]: ...
    @property
    def work_pool_name(self) -> str | None: ...
    @property
    def work_queue_name(self) -> str | None: ...
    @property
    def deployment_name(self) -> str | None: ...
    @property
    def job_variables(self) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class CronSpec:
    """One schedule of a deployment."""

    cron: str
    timezone: str
    active: bool
    day_or: bool = True
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DeploymentSpec:
    """Everything Conveyor decides about a connector's deployment."""

    name: str
    flow_name: str
    entrypoint: str | None
    version: str | None
    description: str | None
    work_pool_name: str | None
    work_queue_name: str | None
    parameters: dict[str, Any]
    tags: tuple[str, ...]
    schedules: tuple[CronSpec, ...]
    paused: bool
    concurrency_limit: int | None
    collision_strategy: str | None
    # The connector's job variables (domain/job_variables.py): Prefect applies them over the
    # work pool's base job template; a Prefect-UI edit of them is drift, repaired.
    job_variables: dict[str, Any] = field(default_factory=dict)

    @property
    def connector_id(self) -> int | None:
        return connector_id_from_tags(self.tags)

    def content(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (what the hash covers): ``asdict(self)``,
        written out because a full pass hashes thousands of specs and ``asdict``'s deep
        copies were most of its own time. Job variables only when there are any: a
        deployment without them hashes as it did before they existed (no re-apply)."""
        content = {
            "name": self.name,
            "flow_name": self.flow_name,
            "entrypoint": self.entrypoint,
            "version": self.version,
            "description": self.description,
            "work_pool_name": self.work_pool_name,
            "work_queue_name": self.work_queue_name,
            "parameters": copy.deepcopy(self.parameters),
            "tags": self.tags,
            "schedules": tuple(
                {
                    "cron": s.cron,
                    "timezone": s.timezone,
                    "active": s.active,
                    "day_or": s.day_or,
                    "parameters": copy.deepcopy(s.parameters),
                }
                for s in self.schedules
            ),
            "paused": self.paused,
            "concurrency_limit": self.concurrency_limit,
            "collision_strategy": self.collision_strategy,
        }
        if self.job_variables:
            content["job_variables"] = copy.deepcopy(self.job_variables)
        return content

    @classmethod
    def from_content(cls, content: Mapping[str, Any]) -> DeploymentSpec | None:
        """The spec ``content()`` was made from; None if it is not one (another format)."""
        try:
            data = dict(content)
            data["tags"] = tuple(data["tags"])
            data["schedules"] = tuple(CronSpec(**s) for s in data["schedules"])
            return cls(**data)
        except (KeyError, TypeError, ValueError):
            return None

    @cached_property
    def hash(self) -> str:
        return spec_hash(self)

    def differences(self, other: DeploymentSpec) -> list[str]:
        """Names of the fields that differ from ``other`` (for reports)."""
        mine, theirs = self.content(), other.content()
        keys = [*mine, *(k for k in theirs if k not in mine)]
        return [k for k in keys if mine.get(k) != theirs.get(k)]

    def with_paused(self, paused: bool) -> DeploymentSpec:
        return replace(self, paused=paused)


def spec_hash(spec: DeploymentSpec) -> str:
    """sha256 of the spec's canonical JSON."""
    text = json.dumps(spec.content(), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def build(
    connector: ConnectorLike, *, default_work_pool: str, default_work_queue: str
) -> DeploymentSpec:
    """The deployment a connector should have."""
    tags = {OWNER_TAG, connector_tag(connector.id), *(connector.tags or [])}
    schedules: tuple[CronSpec, ...] = ()
    if connector.schedule:
        tags.add(SCHEDULED_TAG)
        schedules = (
            CronSpec(
                cron=connector.schedule,
                timezone=connector.timezone or "UTC",
                active=bool(connector.is_active),
            ),
        )
    return DeploymentSpec(
        name=deployment_name(connector.id, connector.deployment_name),
        flow_name=FLOW_NAME,
        entrypoint=ENTRYPOINT,
        version=SPEC_FORMAT,
        description=f"Conveyor connector '{connector.name}'",
        work_pool_name=connector.work_pool_name or default_work_pool,
        work_queue_name=connector.work_queue_name or default_work_queue,
        parameters={"connector_id": connector.id},
        tags=tuple(sorted(tags)),
        schedules=schedules,
        paused=not connector.is_active,
        concurrency_limit=1,
        collision_strategy=COLLISION_STRATEGY,
        job_variables=dict(connector.job_variables or {}),
    )
