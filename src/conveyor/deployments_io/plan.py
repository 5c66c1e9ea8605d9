"""What ``apply`` would do: files compared with the database, field by field.

Connectors are matched by name (a file without a ``connector:`` block, by id). A new
connector keeps its file's id when that id is free; otherwise it gets a new one and the
plan says so. A connector changed outside the files since the last apply is *drift*:
kept as it is unless ``force``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.db.models import Connector, Destination, Source
from conveyor.deployments_io.configs import resolve_override
from conveyor.deployments_io.format import secret_fields
from conveyor.deployments_io.loader import EndpointSpec, FileSpec, LoadedDirectory
from conveyor.deployments_io.state import (
    FieldChange,
    State,
    config_state,
    db_state,
    diff,
    endpoint_state,
    hash_keys,
    is_drifted,
    with_defaults,
)
from conveyor.domain.connector_fields import TOP_LEVEL
from conveyor.domain.vocabulary import default_deployment_name, deployment_name
from conveyor.errors import FieldProblem, ValidationFailed
from conveyor.pipelines.registry import Kind
from conveyor.secrets import SecretBox
from conveyor.services import job_pool
from conveyor.settings import Settings

Action = Literal["create", "update", "delete", "unchanged", "adopt", "drift"]


@dataclass
class EndpointChange:
    """A source or destination a file defines inline."""

    kind: Kind
    name: str
    type: str
    action: Action
    config: dict[str, Any]  # desired, secrets in clear (memory only)
    db_id: int | None = None
    changes: list[FieldChange] = field(default_factory=list)
    max_concurrent_runs: int | None = None  # a destination's cap, as the file gives it

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "type": self.type,
            "action": self.action,
            "id": self.db_id,
            "changes": [c.to_dict() for c in self.changes],
        }


@dataclass
class ConnectorChange:
    """One connector: what happens to it, and which fields change."""

    action: Action
    name: str
    file: str | None
    file_id: int | None  # parameters.connector_id in the file
    db_id: int | None  # existing id, or the id a new connector will get (None: next free)
    changes: list[FieldChange] = field(default_factory=list)
    drifted: bool = False  # changed outside the files since the last apply
    managed_by: str | None = None  # current value, for existing connectors
    spec: FileSpec | None = None
    desired: State | None = None
    source: EndpointSpec | None = None
    destination: EndpointSpec | None = None

    @property
    def id_changed(self) -> bool:
        return self.file_id is not None and self.db_id != self.file_id

    def describe_id(self) -> str:
        if self.file_id is None:
            return str(self.db_id)
        if not self.id_changed:
            return str(self.file_id)
        return f"{self.file_id} -> {self.db_id if self.db_id is not None else 'new'}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "name": self.name,
            "file": self.file,
            "file_id": self.file_id,
            "id": self.db_id,
            "id_changed": self.id_changed,
            "drifted": self.drifted,
            "managed_by": self.managed_by,
            "changes": [c.to_dict() for c in self.changes],
        }


@dataclass
class Plan:
    endpoints: list[EndpointChange]
    connectors: list[ConnectorChange]
    prune: bool = False
    force: bool = False

    @property
    def has_changes(self) -> bool:
        return any(e.action != "unchanged" for e in self.endpoints) or any(
            c.action != "unchanged" for c in self.connectors
        )

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.connectors:
            out[c.action] = out.get(c.action, 0) + 1
        return out

    def id_changes(self) -> list[ConnectorChange]:
        return [c for c in self.connectors if c.id_changed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "has_changes": self.has_changes,
            "counts": self.counts(),
            "prune": self.prune,
            "force": self.force,
            "endpoints": [e.to_dict() for e in self.endpoints if e.action != "unchanged"],
            "connectors": [c.to_dict() for c in self.connectors],
        }


class _Planner:
    def __init__(
        self,
        loaded: LoadedDirectory,
        session: Session,
        box: SecretBox,
        settings: Settings,
        prune: bool,
        force: bool,
    ) -> None:
        self.loaded = loaded
        self.box = box
        self.settings = settings
        self.prune = prune
        self.force = force
        self.keys = hash_keys(settings.secret_keys())
        self.problems: list[FieldProblem] = []
        self.connectors = list(session.scalars(select(Connector).order_by(Connector.id)).unique())
        self.by_name = {c.name: c for c in self.connectors}
        self.by_id = {c.id: c for c in self.connectors}
        self.db_endpoints: dict[Kind, dict[str, Source | Destination]] = {
            "source": {e.name: e for e in session.scalars(select(Source))},
            "destination": {e.name: e for e in session.scalars(select(Destination))},
        }
        self.endpoint_changes: dict[tuple[Kind, str], EndpointChange] = {}

    # --- endpoints --------------------------------------------------------------------

    def plan_endpoints(self) -> None:
        for spec in self.loaded.files:
            if spec.connector is None:
                continue
            for ep in (spec.connector.source, spec.connector.destination):
                if ep.type is None or (ep.kind, ep.name) in self.endpoint_changes:
                    continue
                self.endpoint_changes[(ep.kind, ep.name)] = self._endpoint(ep)

    def _endpoint(self, ep: EndpointSpec) -> EndpointChange:
        assert ep.type is not None and ep.config is not None
        db = self.db_endpoints[ep.kind].get(ep.name)
        cap = ep.max_concurrent_runs
        if db is None:
            return EndpointChange(
                ep.kind, ep.name, ep.type, "create", ep.config, max_concurrent_runs=cap
            )
        if db.type != ep.type:
            self.problems.append(
                FieldProblem(
                    ep.where,
                    f"connector.{ep.kind}: {ep.kind} '{ep.name}' exists with type '{db.type}'; "
                    f"a file cannot change its type to '{ep.type}' (use another name)",
                )
            )
        current = self._db_endpoint_state(ep.kind, db)
        changes = diff(current, endpoint_state(ep.kind, ep.name, ep.type, ep.config), "")
        stored_cap = db.max_concurrent_runs if isinstance(db, Destination) else None
        if stored_cap != cap:  # a destination's cap: the file says it, absent is none
            changes.append(FieldChange("max_concurrent_runs", stored_cap, cap))
        action: Action = "update" if changes else "unchanged"
        return EndpointChange(ep.kind, ep.name, ep.type, action, ep.config, db.id, changes, cap)

    def _db_endpoint_state(self, kind: Kind, db: Source | Destination) -> State:
        secrets = secret_fields(kind, db.type)
        return endpoint_state(kind, db.name, db.type, self.box.decrypt_config(db.config, secrets))

    def _endpoint_for(self, ep: EndpointSpec) -> tuple[str, dict[str, Any]] | None:
        """(type, plain config) of the endpoint a connector will use after apply."""
        change = self.endpoint_changes.get((ep.kind, ep.name))
        if change is not None:
            return change.type, change.config
        db = self.db_endpoints[ep.kind].get(ep.name)
        if db is None:
            self.problems.append(
                FieldProblem(
                    ep.where,
                    f"connector.{ep.kind}: {ep.kind} '{ep.name}' does not exist "
                    "(define it inline with type and config, or create it first)",
                )
            )
            return None
        secrets = secret_fields(ep.kind, db.type)
        return db.type, self.box.decrypt_config(db.config, secrets)

    # --- connectors -------------------------------------------------------------------

    def plan_connectors(self) -> list[ConnectorChange]:
        out: list[ConnectorChange] = []
        matched: set[int] = set()
        for spec in self.loaded.files:
            change = self._connector(spec)
            if change is None:
                continue
            if change.db_id is not None and change.action != "create":
                matched.add(change.db_id)
            out.append(change)
        if self.prune:
            for c in self.connectors:
                if c.id in matched or c.managed_by != "file":
                    continue
                drifted = is_drifted(c, self.box, self.keys)
                out.append(
                    ConnectorChange(
                        action="drift" if drifted and not self.force else "delete",
                        name=c.name,
                        file=None,
                        file_id=None,
                        db_id=c.id,
                        drifted=drifted,
                        managed_by=c.managed_by,
                    )
                )
        self._check_deployment_names(out, matched)
        return out

    def _connector(self, spec: FileSpec) -> ConnectorChange | None:
        if spec.connector is None:
            existing = self.by_id.get(spec.connector_id)
            if existing is None:
                self.problems.append(
                    spec.doc.problem(
                        ("parameters", "connector_id"),
                        f"connector {spec.connector_id} does not exist; add a connector: block "
                        "(name, source, destination) to create it",
                    )
                )
                return None
            name = existing.name
        else:
            name = spec.connector.name
            existing = self.by_name.get(name)
        raw = db_state(existing, self.box) if existing is not None else None
        current = self._current(raw) if raw is not None else None
        if existing is not None:
            db_id: int | None = existing.id
        elif spec.connector_id not in self.by_id:
            db_id = spec.connector_id
        else:
            db_id = None  # the file's id belongs to another connector here
        desired = self._desired(spec, current)
        if desired is None:
            return None
        desired_state, source, destination = desired
        change = ConnectorChange(
            action="create",
            name=name,
            file=spec.file,
            file_id=spec.connector_id,
            db_id=db_id,
            spec=spec,
            desired=desired_state,
            source=source,
            destination=destination,
        )
        if existing is None:
            change.changes = diff(None, desired_state)
            return change
        change.managed_by = existing.managed_by
        change.changes = diff(current, desired_state)
        change.drifted = bool(change.changes) and is_drifted(existing, self.box, self.keys, raw)
        if change.drifted and not self.force:
            change.action = "drift"
        elif change.changes:
            change.action = "update"
        elif existing.managed_by != "file":
            change.action = "adopt"
        else:
            change.action = "unchanged"
        return change

    def _check_job_variables(
        self, spec: FileSpec, deployment: State, current: State | None
    ) -> None:
        """Job variables the connector's work pool does not take, at their line."""
        pool = deployment.get("work_pool_name") or (current or {}).get("work_pool_name")
        try:
            job_pool.check(self.settings, deployment.get("job_variables"), pool)
        except ValidationFailed as exc:
            self.problems.extend(
                spec.doc.problem(tuple(p.loc.split(".")), p.reason) for p in exc.problems
            )

    def _current(self, raw: State) -> State:
        return with_defaults(raw, self.settings)

    def _desired(
        self, spec: FileSpec, current: State | None
    ) -> tuple[State, EndpointSpec | None, EndpointSpec | None] | None:
        deployment: State = {
            "description": spec.description,
            "deployment_name": spec.deployment_name,
            "schedule": spec.schedule,
            "timezone": spec.timezone,
            "tags": spec.tags,
            **{f.name: f.stored(spec.top[f.name], self.settings) for f in TOP_LEVEL},
        }
        self._check_job_variables(spec, deployment, current)
        block = spec.connector
        if block is None:
            assert current is not None
            return {**current, **deployment}, None, None
        state: State = {"name": block.name}
        overrides: dict[Kind, dict[str, Any]] = {}
        ok = True
        for ep in (block.source, block.destination):
            resolved = self._endpoint_for(ep)
            if resolved is None:
                ok = False
                continue
            type_name, config = resolved
            override = getattr(block, f"{ep.kind}_config_override")
            if ep.type is None:
                # A reference: the override is resolved now that the type is known.
                override = resolve_override(
                    spec.doc,
                    ep.kind,
                    type_name,
                    config,
                    override,
                    self.loaded.env,
                    self.loaded.check_env,
                    self.problems,
                )
            state[ep.kind] = endpoint_state(ep.kind, ep.name, type_name, config)
            overrides[ep.kind] = config_state(ep.kind, type_name, override)
        if not ok:
            return None
        state.update(
            {
                "description": deployment["description"],
                "deployment_name": deployment["deployment_name"],
                "source_config_override": overrides["source"],
                "destination_config_override": overrides["destination"],
                "schedule": spec.schedule,
                "timezone": spec.timezone,
                "is_active": block.active,
                "tags": spec.tags,
                **{f.name: deployment[f.name] for f in TOP_LEVEL},
            }
        )
        return state, block.source, block.destination

    def _check_deployment_names(self, changes: list[ConnectorChange], matched: set[int]) -> None:
        """Prefect deployment names are unique per flow: two connectors must not share one."""
        deleted = {c.db_id for c in changes if c.action == "delete"}
        taken: dict[str, str] = {}
        for c in self.connectors:
            if c.id not in matched and c.id not in deleted:
                taken[deployment_name(c.id, c.deployment_name)] = f"connector '{c.name}'"
        for change in changes:
            if change.spec is None or change.desired is None:
                continue
            name = change.desired["deployment_name"]
            if name is None:
                if change.db_id is None:
                    continue  # a new id: connector-<new id> is free by construction
                name = default_deployment_name(change.db_id)
            other = taken.setdefault(name, f"{change.file}")
            if other != change.file:
                self.problems.append(
                    change.spec.doc.problem(
                        ("name",), f"deployment name '{name}' is already used by {other}"
                    )
                )


def make_plan(
    loaded: LoadedDirectory,
    *,
    session: Session,
    box: SecretBox,
    settings: Settings,
    prune: bool = False,
    force: bool = False,
) -> Plan:
    """Compare loaded files with the database; raise ValidationFailed on any problem."""
    loaded.raise_for_problems()
    planner = _Planner(loaded, session, box, settings, prune, force)
    planner.plan_endpoints()
    connectors = planner.plan_connectors()
    if planner.problems:
        raise ValidationFailed(
            planner.problems, hint=f"{len(planner.problems)} problem(s); nothing was applied"
        )
    endpoints = sorted(planner.endpoint_changes.values(), key=lambda e: (e.kind, e.name))
    return Plan(endpoints, connectors, prune=prune, force=force)
