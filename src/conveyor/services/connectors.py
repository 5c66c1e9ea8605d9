"""Connectors: a source, a destination, what to copy, and a schedule.

Every change commits an outbox entry in the same transaction (invariant 2 of
docs/design.md): the caller's request never waits on Prefect; the reconciler applies the
entry.
"""

from __future__ import annotations

import base64
from typing import Any
from typing import cast as type_cast

from sqlalchemy import String, cast, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from conveyor.db.models import Connector, ConnectorRun, Destination, OutboxEntry, Source
from conveyor.domain import schedule as sched
from conveyor.domain import vocabulary
from conveyor.domain.connector_fields import FIELDS, NAMES, stored_values
from conveyor.domain.models import ConnectorCreate, ConnectorOut, ConnectorPatch, Page, RunSummary
from conveyor.errors import Conflict, NotFound, ValidationFailed
from conveyor.pipelines.registry import Kind, get_type
from conveyor.secrets import SecretBox, mask_config
from conveyor.services import audit, catalog, job_pool, overrides, versions
from conveyor.services.authz import SYSTEM, Actor, require_owner_or_admin, require_role
from conveyor.settings import Settings

MANAGED_BY = ("ui", "api", "file")


def deployment_name(connector: Connector) -> str:
    """The Prefect deployment's name: the one a deployment file gave it, or connector-<id>."""
    return vocabulary.deployment_name(connector.id, connector.deployment_name)


def get(connector_id: int, *, session: Session) -> Connector:
    obj = session.get(Connector, connector_id)
    if obj is None:
        raise NotFound(f"connector {connector_id} does not exist")
    return obj


def get_by_name(name: str, *, session: Session) -> Connector | None:
    return session.scalars(select(Connector).where(Connector.name == name)).first()


# --- reading ----------------------------------------------------------------------


def to_out(c: Connector, settings: Settings, last_run: ConnectorRun | None = None) -> ConnectorOut:
    """The API view: secrets masked, schedule in words, next 5 runs in its timezone."""
    src_secrets = get_type("source", c.source.type).secret_fields
    dst_secrets = get_type("destination", c.destination.type).secret_fields
    return ConnectorOut(
        id=c.id,
        name=c.name,
        source_id=c.source_id,
        source_name=c.source.name,
        source_type=c.source.type,
        destination_id=c.destination_id,
        destination_name=c.destination.name,
        destination_type=c.destination.type,
        source_config_override=mask_config(c.source_config_override, src_secrets),
        destination_config_override=mask_config(c.destination_config_override, dst_secrets),
        schedule_description=sched.describe(c.schedule, c.timezone),
        next_runs=sched.next_runs(c.schedule, c.timezone) if c.schedule else [],
        deployment_name=deployment_name(c),
        prefect_deployment_id=c.prefect_deployment_id,
        sync_status=c.sync_status,
        sync_error=c.sync_error,
        sync_next_retry_at=c.sync_next_retry_at,
        synced_at=c.synced_at,
        managed_by=c.managed_by,
        owner=c.owner.username if c.owner else None,
        paused_reason=c.paused_reason,
        consecutive_failures=c.consecutive_failures or 0,
        stale=c.stale_since is not None,
        stale_since=c.stale_since,
        version=c.version,
        created_at=c.created_at,
        updated_at=c.updated_at,
        last_run=run_summary(last_run) if last_run else None,
        **{f.name: f.shown(getattr(c, f.name), settings) for f in FIELDS},
    )


def run_summary(r: ConnectorRun) -> RunSummary:
    return RunSummary(
        id=r.id,
        status=r.status,
        trigger=r.trigger,
        started_at=r.started_at,
        finished_at=r.finished_at,
        duration_seconds=duration(r),
        rows_loaded=r.rows_loaded,
        error=r.error,
    )


def duration(r: ConnectorRun) -> float | None:
    if r.started_at and r.finished_at:
        return (r.finished_at - r.started_at).total_seconds()
    return None


def last_runs(connector_ids: list[int], *, session: Session) -> dict[int, ConnectorRun]:
    """The newest run of each connector, in one query."""
    if not connector_ids:
        return {}
    newest = (
        select(func.max(ConnectorRun.id))
        .where(ConnectorRun.connector_id.in_(connector_ids))
        .group_by(ConnectorRun.connector_id)
    )
    runs = session.scalars(select(ConnectorRun).where(ConnectorRun.id.in_(newest)))
    return {r.connector_id: r for r in runs}


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(str(last_id).encode()).decode()


def decode_cursor(cursor: str) -> int:
    try:
        return int(base64.urlsafe_b64decode(cursor.encode()).decode())
    except (ValueError, UnicodeDecodeError):
        raise ValidationFailed.field("cursor", "is not a cursor this API returned") from None


def list_page(
    *,
    session: Session,
    settings: Settings,
    q: str | None = None,
    sync_status: str | None = None,
    tag: str | None = None,
    is_active: bool | None = None,
    source_id: int | None = None,
    destination_id: int | None = None,
    last_run_status: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page:
    """Connectors by id, filtered, one page at a time (keyset pagination)."""
    stmt = select(Connector).order_by(Connector.id).limit(limit + 1)
    if q:
        stmt = stmt.where(func.lower(Connector.name).contains(q.lower(), autoescape=True))
    if sync_status:
        stmt = stmt.where(Connector.sync_status == sync_status)
    if tag:
        # Portable JSON-array membership: the array's text holds the quoted tag.
        stmt = stmt.where(cast(Connector.tags, String).contains(f'"{tag}"', autoescape=True))
    if is_active is not None:
        stmt = stmt.where(Connector.is_active == is_active)
    if source_id is not None:
        stmt = stmt.where(Connector.source_id == source_id)
    if destination_id is not None:
        stmt = stmt.where(Connector.destination_id == destination_id)
    if last_run_status:
        # Each connector's newest run via the (connector_id, id) index, one short backward
        # scan per connector: grouping every run to find the newest took ~66 ms at 100k runs.
        newest_status = (
            select(ConnectorRun.status)
            .where(ConnectorRun.connector_id == Connector.id)
            .order_by(ConnectorRun.id.desc())
            .limit(1)
            .correlate(Connector)
            .scalar_subquery()
        )
        stmt = stmt.where(newest_status == last_run_status)
    if cursor:
        stmt = stmt.where(Connector.id > decode_cursor(cursor))
    rows = list(session.scalars(stmt).unique())
    more = len(rows) > limit
    rows = rows[:limit]
    runs = last_runs([r.id for r in rows], session=session)
    items = [to_out(r, settings, runs.get(r.id)) for r in rows]
    return Page(items=items, next_cursor=encode_cursor(rows[-1].id) if more and rows else None)


_DISTINCT_TAGS = {
    # The database unnests the JSON arrays itself: no row per connector reaches Python.
    "postgresql": "SELECT DISTINCT jsonb_array_elements_text(tags) FROM connectors",
    "sqlite": "SELECT DISTINCT j.value FROM connectors, json_each(connectors.tags) AS j",
}


def count_sync_errors(*, session: Session) -> int:
    """How many connectors failed to sync to Prefect."""
    return int(session.scalar(select(func.count()).where(Connector.sync_status == "error")) or 0)


def tags_in_use(*, session: Session) -> list[str]:
    """Every user tag in use, sorted (for the list's tag filter)."""
    sql = _DISTINCT_TAGS.get(session.get_bind().dialect.name)
    if sql is not None:
        return sorted(str(t) for t in session.scalars(text(sql)))
    seen: set[str] = set()
    for tags in session.scalars(select(Connector.tags)):
        seen.update(tags or [])
    return sorted(seen)


# --- writing ----------------------------------------------------------------------


def snapshot(c: Connector) -> dict[str, Any]:
    """A masked copy for the audit log."""
    src_secrets = get_type("source", c.source.type).secret_fields
    dst_secrets = get_type("destination", c.destination.type).secret_fields
    return {
        "name": c.name,
        "source": c.source.name,
        "destination": c.destination.name,
        "source_config_override": mask_config(c.source_config_override, src_secrets),
        "destination_config_override": mask_config(c.destination_config_override, dst_secrets),
        **stored_values(c),
        "deployment_name": c.deployment_name,
        # Only while the system holds it paused (a schema change under "pause").
        **({"paused_reason": c.paused_reason} if c.paused_reason else {}),
    }


PENDING: dict[str, Any] = {"sync_status": "pending", "sync_attempts": 0, "sync_next_retry_at": None}


def enqueue(c: Connector, action: str, *, session: Session) -> None:
    """Record that the reconciler must bring Prefect in line with this connector."""
    session.add(
        OutboxEntry(connector_id=c.id, action=action, prefect_deployment_id=c.prefect_deployment_id)
    )
    if action == "upsert":
        # Assigned only when different: an assignment after the caller's flush would make
        # the row dirty again and a second UPDATE bump ``version`` once more (one save must
        # be one version).
        for key, value in PENDING.items():
            if getattr(c, key) != value:
                setattr(c, key, value)


def create(
    data: ConnectorCreate,
    *,
    session: Session,
    actor: Actor,
    box: SecretBox,
    managed_by: str = "api",
    connector_id: int | None = None,
    deployment_name: str | None = None,
    settings: Settings | None = None,
) -> Connector:
    """Store a new connector and enqueue its deployment; with ``settings``, its job
    variables are checked against its work pool (``services/job_pool.py``)."""
    require_role(actor, "editor", "create connectors")
    source = _endpoint("source", data.source_id, "source_id", session)
    destination = _endpoint("destination", data.destination_id, "destination_id", session)
    overrides.validate("source", source, data.source_config_override, "source_config_override")
    overrides.validate(
        "destination", destination, data.destination_config_override, "destination_config_override"
    )
    c = Connector(
        name=data.name,
        source=source,
        destination=destination,
        source_config_override=overrides.encrypt(
            "source", source, data.source_config_override, box
        ),
        destination_config_override=overrides.encrypt(
            "destination", destination, data.destination_config_override, box
        ),
        **{name: getattr(data, name) for name in NAMES},
        deployment_name=deployment_name,
        managed_by=managed_by,
        owner_id=actor.user_id,
        **PENDING,
        created_by=actor.username,
        updated_by=actor.username,
    )
    job_pool.check_image(actor, None, c.job_variables)
    if settings is not None:
        job_pool.check(settings, c.job_variables, c.work_pool_name)
    overrides.check_placement(settings, c, box)
    if connector_id is not None:
        c.id = connector_id
    session.add(c)
    _flush_unique(session, data.name)
    enqueue(c, "upsert", session=session)
    audit.record(
        session=session,
        actor=actor,
        action="connector.create",
        entity_type="connector",
        entity_id=c.id,
        after=snapshot(c),
    )
    versions.connector_changed(session, c, change="create", actor=actor)
    return c


def update(
    connector_id: int,
    data: ConnectorPatch,
    *,
    session: Session,
    actor: Actor,
    box: SecretBox,
    managed_by: str | None = None,
    change: str | None = None,
    restored_from: int | None = None,
    settings: Settings | None = None,
) -> Connector:
    """Apply a partial update (optimistic lock on ``version``) and enqueue the sync; the
    change is one new version (``change`` names it when it is more than an update)."""
    c = get(connector_id, session=session)
    require_owner_or_admin(actor, c.owner_id, "change this connector")
    if data.version is not None and data.version != c.version:
        raise Conflict(
            f"connector {connector_id} was changed by someone else "
            f"(your version {data.version}, current {c.version})",
            hint="reload it and apply your change again",
        )
    before, prior = snapshot(c), versions.prior_connector(c)
    was_active = c.is_active
    fields = data.model_dump(exclude_unset=True, exclude={"version"})
    if "name" in fields and fields["name"] is None:
        raise ValidationFailed.field("name", "cannot be empty")
    for key in ("source_id", "destination_id", *(f.name for f in FIELDS if not f.nullable)):
        if key in fields and fields[key] is None:
            raise ValidationFailed.field(key, "cannot be null")
    if "source_id" in fields:
        c.source = type_cast(Source, _endpoint("source", fields["source_id"], "source_id", session))
    if "destination_id" in fields:
        c.destination = type_cast(
            Destination,
            _endpoint("destination", fields["destination_id"], "destination_id", session),
        )
    overrides.apply_changed(c, fields, box)
    for key in ("name", *NAMES):
        if key in fields:
            setattr(c, key, fields[key])
    job_pool.check_image(actor, before.get("job_variables"), c.job_variables)
    if settings is not None and {"job_variables", "work_pool_name"} & set(fields):
        job_pool.check(settings, c.job_variables, c.work_pool_name)
    if {"destination_id", "destination_config_override", "work_pool_name"} & set(fields):
        loc = "work_pool_name" if "destination_id" not in fields else "destination_id"
        overrides.check_placement(settings, c, box, loc=loc)
    if c.is_active:
        c.paused_reason = None  # resumed: the system's reason for the pause no longer holds
        if not was_active and c.consecutive_failures:
            c.consecutive_failures = 0  # resumed: auto-pause counts failed runs from here
    if managed_by:
        c.managed_by = managed_by
    after = snapshot(c)
    if after == before:
        return c
    c.updated_by = actor.username
    enqueue(c, "upsert", session=session)  # before the flush: one UPDATE, one version
    _flush_unique(session, c.name)
    kind = _change_kind(set(fields), c.is_active, actor, change)
    audit.record(
        session=session,
        actor=actor,
        action=f"connector.{kind.removeprefix('system_')}",
        entity_type="connector",
        entity_id=c.id,
        before=before,
        after=after if restored_from is None else {**after, "restored_from": restored_from},
    )
    versions.connector_changed(
        session, c, change=kind, actor=actor, prior=prior, restored_from=restored_from
    )
    return c


def _change_kind(fields: set[str], active: bool, actor: Actor, change: str | None) -> str:
    """What a version calls the change (its audit action is connector.<kind>, without
    system_): update, pause, resume, system_pause (Conveyor paused it) or ``change``."""
    if change is not None:
        return change
    if fields != {"is_active"}:
        return "update"
    if active:
        return "resume"
    return "system_pause" if actor.username == vocabulary.ACTOR_SYSTEM else "pause"


def set_active(
    connector_id: int, active: bool, *, session: Session, actor: Actor, box: SecretBox
) -> Connector:
    """Pause (deactivate) or resume a connector."""
    return update(
        connector_id, ConnectorPatch(is_active=active), session=session, actor=actor, box=box
    )


def pause_for(connector_id: int, reason: str, *, session: Session, box: SecretBox) -> Connector:
    """The system pauses a connector and says why (a run met a schema change under the
    "pause" policy): through ``update``, so the reconciler pauses its deployment and the
    audit log has the pause with its reason; the pages show the reason until a resume."""
    c = get(connector_id, session=session)
    c.paused_reason = reason
    return update(
        connector_id, ConnectorPatch(is_active=False), session=session, actor=SYSTEM, box=box
    )


def delete(connector_id: int, *, session: Session, actor: Actor) -> None:
    """Delete the connector and its run history; the reconciler removes its deployment."""
    c = get(connector_id, session=session)
    require_owner_or_admin(actor, c.owner_id, "delete this connector")
    audit.record(
        session=session,
        actor=actor,
        action="connector.delete",
        entity_type="connector",
        entity_id=c.id,
        before=snapshot(c),
    )
    enqueue(c, "delete", session=session)
    session.delete(c)
    session.flush()


def _endpoint(kind: Kind, endpoint_id: int, loc: str, session: Session) -> catalog.Endpoint:
    obj = type_cast(catalog.Endpoint | None, session.get(catalog.MODELS[kind], endpoint_id))
    if obj is None:
        raise ValidationFailed.field(loc, f"{kind} {endpoint_id} does not exist")
    return obj


def _flush_unique(session: Session, name: str) -> None:
    """Flush, turning a taken name or a concurrent change into ``Conflict``. No savepoint:
    the conflict ends the caller's transaction anyway (every caller lets it propagate)."""
    try:
        session.flush()
    except StaleDataError as exc:
        raise Conflict("the connector was changed by someone else", hint="reload it") from exc
    except IntegrityError as exc:
        raise Conflict(f"a connector named '{name}' already exists") from exc
