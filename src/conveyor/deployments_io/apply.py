"""Carry out a plan through the same services as the API (validation, outbox, audit).

The caller owns the transaction: everything here only flushes, so a failure anywhere
leaves the database as it was (all-or-nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from conveyor.db.models import Connector, Destination, Source
from conveyor.deployments_io.format import secret_fields
from conveyor.deployments_io.plan import ConnectorChange, EndpointChange, Plan
from conveyor.deployments_io.state import Secret, State, connector_hash, hash_keys, plain_config
from conveyor.domain.connector_fields import NAMES
from conveyor.domain.models import ConnectorCreate, ConnectorPatch, EndpointCreate, EndpointPatch
from conveyor.pipelines.registry import Kind, get_type
from conveyor.secrets import MASK, SecretBox
from conveyor.services import audit, catalog, versions
from conveyor.services import connectors as svc
from conveyor.services.authz import Actor
from conveyor.settings import Settings

Progress = Callable[[str, int, int], None]


@dataclass
class ApplyResult:
    """What apply did; ``ids`` maps every connector named in the files to its id."""

    plan: Plan
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    kept_drift: list[str] = field(default_factory=list)
    endpoints_created: list[str] = field(default_factory=list)
    endpoints_updated: list[str] = field(default_factory=list)
    ids: dict[str, int] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(
            self.created
            or self.updated
            or self.deleted
            or self.adopted
            or self.endpoints_created
            or self.endpoints_updated
        )

    def counts(self) -> dict[str, int]:
        return {
            "created": len(self.created),
            "updated": len(self.updated),
            "deleted": len(self.deleted),
            "adopted": len(self.adopted),
            "unchanged": len(self.unchanged),
            "kept_drift": len(self.kept_drift),
            "endpoints_created": len(self.endpoints_created),
            "endpoints_updated": len(self.endpoints_updated),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "changed": self.changed,
            "counts": self.counts(),
            "ids": self.ids,
            "id_changes": [
                {"name": c.name, "file_id": c.file_id, "id": self.ids.get(c.name, c.db_id)}
                for c in self.plan.connectors
                if c.file_id is not None and self.ids.get(c.name, c.db_id) != c.file_id
            ],
            "kept_drift": self.kept_drift,
            "plan": self.plan.to_dict(),
        }


def execute(
    plan: Plan,
    *,
    session: Session,
    box: SecretBox,
    actor: Actor,
    settings: Settings,
    progress: Progress | None = None,
) -> ApplyResult:
    """Apply ``plan``; flushes, never commits."""
    result = ApplyResult(plan)
    key = hash_keys(settings.secret_keys())[0]
    step = _Stepper(progress, len(plan.endpoints) + len(plan.connectors))

    # Held for the whole apply: the session's identity map is weak, and the services
    # look endpoints up by id for every connector.
    held: list[Any] = [*session.scalars(select(Source)), *session.scalars(select(Destination))]
    endpoint_ids: dict[tuple[Kind, str], int] = {}
    for ep_change in plan.endpoints:
        obj = _endpoint(ep_change, session, box, actor, result)
        held.append(obj)
        endpoint_ids[(ep_change.kind, ep_change.name)] = obj.id
        step(f"{ep_change.kind} {ep_change.name}")

    def endpoint_id(kind: Kind, name: str) -> int:
        if (kind, name) not in endpoint_ids:
            obj = catalog.get_by_name(kind, name, session=session)
            assert obj is not None  # the plan checked it exists
            endpoint_ids[(kind, name)] = obj.id
        return endpoint_ids[(kind, name)]

    by_action: dict[str, list[ConnectorChange]] = {}
    for change in plan.connectors:
        by_action.setdefault(change.action, []).append(change)

    # Deletes first: a pruned connector frees its name and deployment name for others.
    for change in by_action.get("delete", []):
        assert change.db_id is not None
        svc.delete(change.db_id, session=session, actor=actor)
        result.deleted.append(change.name)
        step(change.name)

    creates = by_action.get("create", [])
    # Explicit ids first, then (PostgreSQL) move the id sequence past them, then the rest.
    explicit = [c for c in creates if c.db_id is not None]
    for change in explicit:
        _create(change, change.db_id, session, box, actor, endpoint_id, key, result)
        step(change.name)
    if explicit:
        _advance_id_sequence(session)
    for change in creates:
        if change.db_id is None:
            _create(change, None, session, box, actor, endpoint_id, key, result)
            step(change.name)

    _apply_existing(by_action, session, box, actor, endpoint_id, key, result, step)

    for change in by_action.get("drift", []):
        result.kept_drift.append(change.name)
        if change.db_id is not None and change.file is not None:
            result.ids[change.name] = change.db_id
        step(change.name)
    session.flush()
    return result


def _apply_existing(
    by_action: dict[str, list[ConnectorChange]],
    session: Session,
    box: SecretBox,
    actor: Actor,
    endpoint_id: Callable[[Kind, str], int],
    key: bytes,
    result: ApplyResult,
    step: _Stepper,
) -> None:
    """Update, adopt or confirm the connectors that already exist; all become file-managed."""
    # One query for every existing connector (the session's identity map is weak, so
    # the plan's rows may be gone by now).
    existing = {c.id: c for c in session.scalars(select(Connector)).unique()}
    for action in ("update", "adopt", "unchanged"):
        for change in by_action.get(action, []):
            assert change.db_id is not None
            c = existing[change.db_id]
            if action == "update":
                _update(c, change, session, box, actor, endpoint_id)
                result.updated.append(change.name)
            elif action == "adopt":
                result.adopted.append(change.name)
            else:
                result.unchanged.append(change.name)
            _bookkeeping(
                session, c, managed_by="file", applied_file_hash=connector_hash(c, box, key)
            )
            result.ids[c.name] = c.id
            step(change.name)


class _Stepper:
    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress = progress
        self.total = total
        self.done = 0

    def __call__(self, what: str) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(what, self.done, self.total)


def _endpoint(
    change: EndpointChange, session: Session, box: SecretBox, actor: Actor, result: ApplyResult
) -> Source | Destination:
    if change.action == "create":
        obj = catalog.create(
            change.kind,
            EndpointCreate(
                name=change.name,
                type=change.type,
                config=change.config,
                max_concurrent_runs=change.max_concurrent_runs,
            ),
            session=session,
            actor=actor,
            box=box,
        )
        result.endpoints_created.append(f"{change.kind} {change.name}")
        return obj
    assert change.db_id is not None
    if change.action == "update":
        secrets = secret_fields(change.kind, change.type)
        changed = {c.field.removeprefix("config.") for c in change.changes}
        if changed & get_type(change.kind, change.type).connection_fields:
            # The file moves where it connects: its secrets go with it, entered again.
            changed |= secrets
        config = _with_secret_markers(change.config, secrets, changed)
        catalog.update(
            change.kind,
            change.db_id,
            EndpointPatch(config=config, max_concurrent_runs=change.max_concurrent_runs),
            session=session,
            actor=actor,
            box=box,
        )
        result.endpoints_updated.append(f"{change.kind} {change.name}")
    return catalog.get(change.kind, change.db_id, session=session)


def _with_secret_markers(
    config: dict[str, Any], secrets: frozenset[str], changed: set[str]
) -> dict[str, Any]:
    """Secrets for a write-only update: unchanged ones as the mask (kept as stored, no
    re-encryption), removed ones as None, changed ones in clear."""
    out = dict(config)
    for name in secrets:
        if name not in changed:
            out[name] = MASK if out.get(name) is not None else None
        elif name not in out:
            out[name] = None
    return out


def _create(
    change: ConnectorChange,
    connector_id: int | None,
    session: Session,
    box: SecretBox,
    actor: Actor,
    endpoint_id: Callable[[Kind, str], int],
    key: bytes,
    result: ApplyResult,
) -> None:
    desired = change.desired
    assert desired is not None and change.source and change.destination
    data = ConnectorCreate(
        name=desired["name"],
        source_id=endpoint_id("source", change.source.name),
        destination_id=endpoint_id("destination", change.destination.name),
        source_config_override=plain_config(desired["source_config_override"]),
        destination_config_override=plain_config(desired["destination_config_override"]),
        **{name: desired[name] for name in NAMES},
    )
    c = svc.create(
        data,
        session=session,
        actor=actor,
        box=box,
        managed_by="file",
        connector_id=connector_id,
        deployment_name=desired["deployment_name"],
    )
    _bookkeeping(session, c, applied_file_hash=connector_hash(c, box, key))
    result.created.append(c.name)
    result.ids[c.name] = c.id


_KINDS: tuple[Kind, Kind] = ("source", "destination")


def _update(
    c: Connector,
    change: ConnectorChange,
    session: Session,
    box: SecretBox,
    actor: Actor,
    endpoint_id: Callable[[Kind, str], int],
) -> None:
    desired = change.desired
    assert desired is not None
    changed = {f.field.split(".", 1)[0] for f in change.changes}
    patch: dict[str, Any] = {k: desired[k] for k in NAMES if k in changed}
    for kind in _KINDS:
        if kind in changed and desired[kind]["name"] != getattr(c, kind).name:
            patch[f"{kind}_id"] = endpoint_id(kind, desired[kind]["name"])
        key = f"{kind}_config_override"
        if key in changed or f"{kind}_id" in patch:
            patch[key] = _override_patch(desired[key], change, key)
    prior = versions.prior_connector(c)
    if "deployment_name" in changed:
        _set_deployment_name(c, desired["deployment_name"], session, actor)
    if patch:
        svc.update(c.id, ConnectorPatch(**patch), session=session, actor=actor, box=box)
    session.flush()
    if c.version != prior.number and not versions.has_version(
        session, "connector", c.id, c.version
    ):
        # Only the deployment name changed (the service records every other change).
        versions.connector_changed(session, c, change="update", actor=actor, prior=prior)


def _bookkeeping(session: Session, c: Connector, **values: Any) -> None:
    """Who manages the connector and the hash of the file applied are bookkeeping, not a
    change of the connector: a bulk UPDATE leaves ``version`` as it is (one change, one
    version; the in-memory row is updated too)."""
    values = {k: v for k, v in values.items() if getattr(c, k) != v}
    if values:
        session.execute(update(Connector).where(Connector.id == c.id).values(**values))


def _override_patch(desired: State, change: ConnectorChange, key: str) -> dict[str, Any]:
    changed = {f.field.removeprefix(key + ".") for f in change.changes if f.secret}
    out: dict[str, Any] = {}
    for name, value in desired.items():
        if isinstance(value, Secret):
            out[name] = value.value if name in changed else MASK
        else:
            out[name] = value
    for f in change.changes:
        # A secret the file no longer has: None removes it (a missing key would keep it).
        if f.secret and f.field.startswith(key + ".") and f.new is None:
            out[f.field.removeprefix(key + ".")] = None
    return out


def _set_deployment_name(c: Connector, name: str | None, session: Session, actor: Actor) -> None:
    # ConnectorPatch has no deployment_name (only files set one), so this change gets its
    # outbox entry and audit entry here, exactly as the service would write them.
    before = svc.snapshot(c)
    c.deployment_name = name
    svc.enqueue(c, "upsert", session=session)
    audit.record(
        session=session,
        actor=actor,
        action="connector.update",
        entity_type="connector",
        entity_id=c.id,
        before=before,
        after=svc.snapshot(c),
    )


def _advance_id_sequence(session: Session) -> None:
    """PostgreSQL: rows inserted with explicit ids leave the id sequence behind; move it
    past the highest id (never backwards) so later inserts do not collide."""
    if session.get_bind().dialect.name != "postgresql":
        return
    seq = session.execute(text("SELECT pg_get_serial_sequence('connectors', 'id')")).scalar()
    if not seq:
        return
    session.execute(
        text(
            "SELECT setval(CAST(:seq AS regclass), GREATEST("
            "(SELECT COALESCE(MAX(id), 1) FROM connectors), "
            f"(SELECT last_value FROM {seq})))"
        ),
        {"seq": seq},
    )
