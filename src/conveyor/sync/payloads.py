"""What goes to Prefect and what comes back: request bodies built from a ``DeploymentSpec``,
and Prefect's deployments projected onto the same ``DeploymentSpec`` the reconciler builds,
so comparing them is comparing hashes."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from conveyor.domain.vocabulary import FLOW_NAME
from conveyor.sync.spec import PARAMETER_SCHEMA, CronSpec, DeploymentSpec

FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})


@dataclass(frozen=True)
class ObservedDeployment:
    """A Conveyor-tagged deployment as Prefect has it."""

    id: str
    name: str
    spec: DeploymentSpec

    @property
    def connector_id(self) -> int | None:
        return self.spec.connector_id

    @property
    def hash(self) -> str:
        return self.spec.hash


@dataclass(frozen=True)
class FlowRunState:
    type: str  # Prefect StateType: SCHEDULED, PENDING, RUNNING, COMPLETED, FAILED, ...
    name: str | None
    message: str | None

    @property
    def is_final(self) -> bool:
        return self.type in FINAL_STATES


def observe(data: dict[str, Any], flow_id: str | None) -> ObservedDeployment:
    """Project a deployment as the Prefect API returns it (JSON) onto a DeploymentSpec."""
    schedules = []
    for s in data.get("schedules") or []:
        sched = s.get("schedule") or {}
        if "cron" in sched:
            schedules.append(
                CronSpec(
                    cron=sched["cron"],
                    timezone=sched.get("timezone") or "UTC",
                    active=bool(s.get("active")),
                    day_or=bool(sched.get("day_or", True)),
                    parameters=dict(s.get("parameters") or {}),
                )
            )
        else:  # an interval or rrule schedule added in Prefect's UI: never ours
            schedules.append(CronSpec(cron=f"<{sorted(sched)}>", timezone="", active=False))
    limit = data.get("global_concurrency_limit") or {}
    options = data.get("concurrency_options") or {}
    spec = DeploymentSpec(
        name=data["name"],
        flow_name=FLOW_NAME if str(data.get("flow_id")) == flow_id else f"flow:{data['flow_id']}",
        entrypoint=data.get("entrypoint"),
        version=data.get("version"),
        description=data.get("description"),
        work_pool_name=data.get("work_pool_name"),
        work_queue_name=data.get("work_queue_name"),
        parameters=dict(data.get("parameters") or {}),
        tags=tuple(sorted(set(data.get("tags") or []))),
        schedules=tuple(schedules),
        paused=bool(data.get("paused")),
        concurrency_limit=limit.get("limit") if limit else data.get("concurrency_limit"),
        collision_strategy=options.get("collision_strategy"),
        job_variables=dict(data.get("job_variables") or {}),
    )
    return ObservedDeployment(id=str(data["id"]), name=data["name"], spec=spec)


# --- requests -------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _schedule(cron: str, timezone: str, day_or: bool) -> dict[str, Any]:
    """A cron schedule as the client sends it, validated by the client's own model (it
    rejects some cron strings and timezones); cached, since most connectors share a few."""
    from prefect.client.schemas.schedules import CronSchedule

    return CronSchedule(cron=cron, timezone=timezone, day_or=day_or).model_dump(mode="json")


def _schedules(spec: DeploymentSpec) -> list[dict[str, Any]]:
    return [
        {
            "schedule": dict(_schedule(s.cron, s.timezone, s.day_or)),
            "active": s.active,
            "max_scheduled_runs": None,
            "parameters": dict(s.parameters),
            "slug": None,
            "replaces": None,
        }
        for s in spec.schedules
    ]


def _concurrency_options(spec: DeploymentSpec) -> dict[str, Any] | None:
    if not spec.collision_strategy:
        return None
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy

    ConcurrencyLimitStrategy(spec.collision_strategy)  # the client's check
    return {"collision_strategy": spec.collision_strategy}


def create_payload(flow_id: str, spec: DeploymentSpec) -> dict[str, Any]:
    """The JSON body of ``PrefectClient.create_deployment`` for ``spec``: an upsert on
    (flow, name). Raises the client's ``ValidationError`` for a schedule it rejects."""
    payload: dict[str, Any] = {
        "name": spec.name,
        "flow_id": flow_id,
        "paused": spec.paused,
        "schedules": _schedules(spec),
        "concurrency_limit": spec.concurrency_limit,
        "concurrency_options": _concurrency_options(spec),
        "enforce_parameter_schema": True,
        "parameter_openapi_schema": PARAMETER_SCHEMA,
        "parameters": dict(spec.parameters),
        "tags": list(spec.tags),
        "labels": {},
        "work_queue_name": spec.work_queue_name,
        "storage_document_id": None,
        "infrastructure_document_id": None,
        "description": spec.description,
        "path": None,
        "entrypoint": spec.entrypoint,
        "job_variables": dict(spec.job_variables),
        "version": spec.version,
    }
    if spec.work_pool_name is not None:
        payload["work_pool_name"] = spec.work_pool_name
    return payload


def update_payload(old: DeploymentSpec, new: DeploymentSpec) -> dict[str, Any] | None:
    """The body of ``PATCH /deployments/{id}`` that turns a deployment matching ``old``
    into one matching ``new``: only the fields that differ, so Prefect does only the work
    they need (a schedule change costs the server about half an upsert). None when a
    PATCH cannot do it: another name or flow is another deployment.

    Schedules go without slugs, which makes Prefect replace all of the deployment's
    schedules with these (Prefect answers 422 if every schedule there has a slug: then
    the caller upserts). Raises the client's ``ValidationError`` for a schedule it rejects.
    """
    if old.name != new.name or old.flow_name != new.flow_name:
        return None
    body: dict[str, Any] = {}
    if old.schedules != new.schedules:
        body["schedules"] = _schedules(new)
    for name in ("paused", "version", "description", "entrypoint"):
        if getattr(old, name) != getattr(new, name):
            body[name] = getattr(new, name)
    if old.tags != new.tags:
        body["tags"] = list(new.tags)
    if old.parameters != new.parameters:
        body["parameters"] = dict(new.parameters)
    if (old.work_pool_name, old.work_queue_name) != (new.work_pool_name, new.work_queue_name):
        body["work_pool_name"] = new.work_pool_name
        body["work_queue_name"] = new.work_queue_name
    if (old.concurrency_limit, old.collision_strategy) != (
        new.concurrency_limit,
        new.collision_strategy,
    ):
        body["concurrency_limit"] = new.concurrency_limit
        body["concurrency_options"] = _concurrency_options(new)
    if old.job_variables != new.job_variables:
        body["job_variables"] = dict(new.job_variables)
    return body
