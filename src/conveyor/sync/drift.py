"""Drift in the audit: what Prefect had and what a full pass restored.

A repair is drift when Prefect no longer has what Conveyor last synced there (edited,
paused, deleted or duplicated in Prefect, or a Conveyor-tagged deployment with no
connector); a connector changed in the database is not. Each repaired one becomes an
audit entry by the reconciler, written with its sync record (``record``, called by
``work.record_synced``).
Values are plain JSON: a schedule reads ``"0 * * * * UTC"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session

from conveyor.db.base import utcnow
from conveyor.db.models import AuditEntry
from conveyor.domain.vocabulary import ACTOR_RECONCILER
from conveyor.sync.payloads import ObservedDeployment
from conveyor.sync.spec import DeploymentSpec
from conveyor.sync.store import ConnectorState

ACTION = "connector.drift_repaired"
MISSING = "missing"  # before: Prefect had no deployment
REMOVED = "removed"  # after: the deployment was deleted
# Spec fields as the audit entry names them.
_NAMES = {"schedules": "schedule", "work_pool_name": "work_pool", "work_queue_name": "work_queue"}
# What a restored deployment is summed up by when Prefect had none.
_SUMMARY = ("schedules", "paused", "tags", "parameters", "work_pool_name", "work_queue_name")


@dataclass(frozen=True)
class Drift:
    """One repair for the audit log: the entity it concerns, before and after."""

    entity_type: str
    entity_id: str
    before: dict[str, Any]
    after: dict[str, Any]


def _value(spec: DeploymentSpec, field: str) -> Any:
    if field == "schedules":
        return [
            f"{s.cron} {s.timezone}".strip() + ("" if s.active else " (inactive)")
            for s in spec.schedules
        ]
    if field == "tags":
        return list(spec.tags)
    if field == "parameters":
        return dict(spec.parameters)
    return getattr(spec, field)


def _fields(spec: DeploymentSpec, fields: list[str] | tuple[str, ...]) -> dict[str, Any]:
    return {_NAMES.get(f, f): _value(spec, f) for f in fields}


def of_connector(
    state: ConnectorState, found: list[ObservedDeployment], spec: DeploymentSpec
) -> Drift | None:
    """The drift a repair of this connector undoes, or None when Prefect had what Conveyor
    last synced (the repair applies a change made in the database, or a first sync)."""
    cid = str(state.id)
    if not found:
        if not state.prefect_deployment_id:
            return None  # never applied
        after = {"deployment": spec.name, **_fields(spec, _SUMMARY)}
        return Drift("connector", cid, {"deployment": MISSING}, after)
    if len(found) > 1:
        names = sorted(f"{o.name} ({o.id})" for o in found)
        return Drift("connector", cid, {"deployment": names}, {"deployment": [spec.name]})
    had = found[0]
    if state.synced_spec_hash is None or had.hash == state.synced_spec_hash:
        return None
    fields = spec.differences(had.spec)
    return Drift("connector", cid, _fields(had.spec, fields), _fields(spec, fields))


def orphan(obs: ObservedDeployment) -> Drift:
    """A Conveyor-tagged deployment with no connector, deleted."""
    cid = obs.connector_id
    return Drift(
        "connector" if cid is not None else "deployment",
        str(cid) if cid is not None else obs.id,
        {"deployment": obs.name},
        {"deployment": REMOVED},
    )


def record(session: Session, drifts: list[Drift]) -> None:
    """The audit entries of these repairs, in one executemany (only repaired connectors
    have one, so a full pass with nothing to repair writes nothing)."""
    if drifts:
        now = utcnow()
        session.execute(
            insert(cast(Table, AuditEntry.__table__)),
            [
                {
                    "at": now,
                    "actor": ACTOR_RECONCILER,
                    "action": ACTION,
                    "entity_type": d.entity_type,
                    "entity_id": d.entity_id,
                    "before": d.before,
                    "after": d.after,
                }
                for d in drifts
            ],
        )
