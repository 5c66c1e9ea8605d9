"""Version history of connectors, sources and destinations, and going back to a version.

Every change is one numbered ``EntityVersion`` row, written in the change's transaction by
the service that makes it (``connectors.create/update``, ``reset``, ``catalog.create/update``;
deployment-file apply goes through them). A row holds a masked snapshot: secret fields are
"********", never the secret.

Numbers: a connector's version number is its ``version`` column after the change (the
optimistic lock the API and forms already show), so ``GET /connectors/{id}`` and its
history agree; sources and destinations have no such column and count 1..n.

History from before migration 0007: an entity with no rows shows one synthesized
"baseline" version (what it is now, not stored); its first change writes that baseline
row first, so the history starts where the entity was and the change follows it.

Going back to a version: ``services/restore.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from conveyor.db.base import utcnow
from conveyor.db.models import Connector, Destination, EntityVersion, Source
from conveyor.domain.connector_fields import FIELDS, stored_values
from conveyor.domain.versions import VersionDetail, VersionField, VersionOut
from conveyor.errors import Conflict, NotFound
from conveyor.pipelines.registry import Kind, get_type
from conveyor.secrets import mask_config
from conveyor.services.authz import Actor

EntityType = Literal["connector", "source", "destination"]
BASELINE = "baseline"  # what an entity looked like when its history began (before 0007)

# What a restore gives back, in the order the diff shows them.
CONNECTOR_KEYS: tuple[str, ...] = (
    "name",
    "source_id",
    "destination_id",
    "source_config_override",
    "destination_config_override",
    *(f.name for f in FIELDS),
)


# --- snapshots ---------------------------------------------------------------------------


def connector_snapshot(c: Connector) -> dict[str, Any]:
    """The connector as a version shows it: every setting, secrets masked."""
    src_secrets = get_type("source", c.source.type).secret_fields
    dst_secrets = get_type("destination", c.destination.type).secret_fields
    return {
        "name": c.name,
        "source_id": c.source_id if c.source_id is not None else c.source.id,
        "source": c.source.name,
        "destination_id": (c.destination_id if c.destination_id is not None else c.destination.id),
        "destination": c.destination.name,
        "source_config_override": mask_config(c.source_config_override or {}, src_secrets),
        "destination_config_override": mask_config(
            c.destination_config_override or {}, dst_secrets
        ),
        **stored_values(c),
        # Set only by deployment files; shown, not restored (see restore_connector).
        "deployment_name": c.deployment_name,
    }


def endpoint_snapshot(kind: Kind, obj: Source | Destination) -> dict[str, Any]:
    snap: dict[str, Any] = {
        "name": obj.name,
        "type": obj.type,
        "config": mask_config(obj.config or {}, get_type(kind, obj.type).secret_fields),
    }
    if isinstance(obj, Destination):
        snap["max_concurrent_runs"] = obj.max_concurrent_runs
    return snap


@dataclass(frozen=True)
class Prior:
    """An entity as it was before a change: its baseline if it has no history yet."""

    number: int
    snapshot: dict[str, Any]
    actor: str | None
    at: datetime | None


def prior_connector(c: Connector) -> Prior:
    return Prior(c.version, connector_snapshot(c), c.updated_by, c.updated_at)


def prior_endpoint(kind: Kind, obj: Source | Destination) -> Prior:
    return Prior(1, endpoint_snapshot(kind, obj), obj.updated_by, obj.updated_at)


# --- recording ---------------------------------------------------------------------------


def _has_history(session: Session, entity_type: str, entity_id: int) -> bool:
    stmt = select(EntityVersion.id).where(
        EntityVersion.entity_type == entity_type, EntityVersion.entity_id == entity_id
    )
    return session.scalar(stmt.limit(1)) is not None


def _add(
    session: Session,
    entity_type: str,
    entity_id: int,
    number: int,
    change: str,
    snapshot: dict[str, Any],
    actor: str | None,
    at: datetime | None = None,
    restored_from: int | None = None,
) -> EntityVersion:
    row = EntityVersion(
        entity_type=entity_type,
        entity_id=entity_id,
        version=number,
        change=change,
        snapshot=snapshot,
        actor=actor,
        at=at or utcnow(),
        restored_from=restored_from,
    )
    session.add(row)
    return row


def has_version(session: Session, entity_type: str, entity_id: int, number: int) -> bool:
    stmt = select(EntityVersion.id).where(
        EntityVersion.entity_type == entity_type,
        EntityVersion.entity_id == entity_id,
        EntityVersion.version == number,
    )
    return session.scalar(stmt) is not None


def connector_changed(
    session: Session,
    c: Connector,
    *,
    change: str,
    actor: Actor,
    prior: Prior | None = None,
    restored_from: int | None = None,
) -> None:
    """Record the connector's version after a flushed change (``prior``: before it, None
    for a create). The number is ``c.version``: call this after the change's one UPDATE."""
    if prior is None:
        # A deployment file may give a new connector the id of a deleted one: that earlier
        # life's history is not this connector's (its routes were 404 since the delete).
        session.execute(
            delete(EntityVersion).where(
                EntityVersion.entity_type == "connector", EntityVersion.entity_id == c.id
            )
        )
    elif not _has_history(session, "connector", c.id):
        _add(
            session,
            "connector",
            c.id,
            prior.number,
            BASELINE,
            prior.snapshot,
            prior.actor,
            prior.at,
        )
    _add(
        session,
        "connector",
        c.id,
        c.version,
        change,
        connector_snapshot(c),
        actor.username,
        restored_from=restored_from,
    )
    session.flush()


def endpoint_changed(
    session: Session,
    kind: Kind,
    obj: Source | Destination,
    *,
    change: str,
    actor: Actor,
    prior: Prior | None = None,
    restored_from: int | None = None,
) -> None:
    """Record a source's or destination's next version (1..n) after a flushed change."""
    last = session.scalar(
        select(func.max(EntityVersion.version)).where(
            EntityVersion.entity_type == kind, EntityVersion.entity_id == obj.id
        )
    )
    if last is None and prior is not None:
        _add(session, kind, obj.id, 1, BASELINE, prior.snapshot, prior.actor, prior.at)
        last = 1
    number = (last or 0) + 1
    _add(
        session,
        kind,
        obj.id,
        number,
        change,
        endpoint_snapshot(kind, obj),
        actor.username,
        restored_from=restored_from,
    )
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        # Two saves of one endpoint at once both took ``number``: the unique key refused one.
        raise Conflict(f"the {kind} was changed by someone else", hint="reload it") from exc


# --- reading -----------------------------------------------------------------------------


def _entity(session: Session, entity_type: EntityType, entity_id: int) -> Any:
    model = {"connector": Connector, "source": Source, "destination": Destination}[entity_type]
    obj = session.get(model, entity_id)
    if obj is None:
        raise NotFound(f"{entity_type} {entity_id} does not exist")
    return obj


def _current(entity_type: EntityType, obj: Any) -> dict[str, Any]:
    if entity_type == "connector":
        return connector_snapshot(obj)
    return endpoint_snapshot(entity_type, obj)


def _rows(session: Session, entity_type: EntityType, obj: Any) -> list[EntityVersion]:
    """Newest first; an entity without history has its synthesized baseline (not stored)."""
    rows = list(
        session.scalars(
            select(EntityVersion)
            .where(EntityVersion.entity_type == entity_type, EntityVersion.entity_id == obj.id)
            .order_by(EntityVersion.version.desc())
        )
    )
    if rows:
        return rows
    number = obj.version if entity_type == "connector" else 1
    return [
        EntityVersion(
            entity_type=entity_type,
            entity_id=obj.id,
            version=number,
            change=BASELINE,
            snapshot=_current(entity_type, obj),
            actor=obj.updated_by,
            at=obj.updated_at,
        )
    ]


def diff(old: dict[str, Any], new: dict[str, Any]) -> list[VersionField]:
    """Every field of either snapshot, in the snapshots' order, marked when it differs."""
    keys = list(dict.fromkeys([*old, *new]))
    return [
        VersionField(field=k, old=old.get(k), new=new.get(k), changed=old.get(k) != new.get(k))
        for k in keys
    ]


def _out(row: EntityVersion, previous: EntityVersion | None) -> VersionOut:
    base = previous.snapshot if previous is not None else {}
    changed = [f.field for f in diff(base, row.snapshot) if f.changed] if previous else []
    return VersionOut(
        number=row.version,
        change=row.change,
        actor=row.actor,
        at=row.at,
        restored_from=row.restored_from,
        changed=changed,
        snapshot=row.snapshot,
    )


def list_versions(entity_type: EntityType, entity_id: int, *, session: Session) -> list[VersionOut]:
    """Every version, newest first, each with the fields it changed from the one before."""
    rows = _rows(session, entity_type, _entity(session, entity_type, entity_id))
    return [_out(row, rows[i + 1] if i + 1 < len(rows) else None) for i, row in enumerate(rows)]


def get_version(
    entity_type: EntityType, entity_id: int, number: int, *, session: Session
) -> VersionDetail:
    """One version with its differences from the current state and from the version before."""
    obj = _entity(session, entity_type, entity_id)
    rows = _rows(session, entity_type, obj)
    for i, row in enumerate(rows):
        if row.version == number:
            previous = rows[i + 1] if i + 1 < len(rows) else None
            out = _out(row, previous)
            current = _current(entity_type, obj)
            return VersionDetail(
                **out.model_dump(),
                current_version=obj.version if entity_type == "connector" else rows[0].version,
                against_current=diff(row.snapshot, current),
                against_previous=diff(previous.snapshot, row.snapshot) if previous else [],
            )
    raise NotFound(f"{entity_type} {entity_id} has no version {number}")
