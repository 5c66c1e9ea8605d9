"""Sources and destinations: reusable, named connection definitions."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from conveyor.db.models import Connector, Destination, Source
from conveyor.domain.models import EndpointCreate, EndpointOut, EndpointPatch
from conveyor.errors import Conflict, FieldProblem, NotFound, ValidationFailed
from conveyor.pipelines.registry import Kind, TypeInfo, get_type, validate_config
from conveyor.secrets import MASK, SecretBox, keep_unchanged_secrets, mask_config, moved_fields
from conveyor.services import audit, versions
from conveyor.services.authz import Actor, require_role

Endpoint = Source | Destination
MODELS: dict[Kind, type[Source] | type[Destination]] = {
    "source": Source,
    "destination": Destination,
}


def _fk(kind: Kind) -> Any:
    return Connector.source_id if kind == "source" else Connector.destination_id


def get(kind: Kind, endpoint_id: int, *, session: Session) -> Endpoint:
    obj = cast(Endpoint | None, session.get(MODELS[kind], endpoint_id))
    if obj is None:
        raise NotFound(f"{kind} {endpoint_id} does not exist")
    return obj


def get_by_name(kind: Kind, name: str, *, session: Session) -> Endpoint | None:
    model = MODELS[kind]
    return cast(Endpoint | None, session.scalars(select(model).where(model.name == name)).first())


def masked(kind: Kind, obj: Endpoint) -> dict[str, Any]:
    return mask_config(obj.config, get_type(kind, obj.type).secret_fields)


def to_out(kind: Kind, obj: Endpoint, connector_count: int = 0) -> EndpointOut:
    return EndpointOut(
        id=obj.id,
        name=obj.name,
        type=obj.type,
        config=masked(kind, obj),
        created_at=obj.created_at,
        updated_at=obj.updated_at,
        created_by=obj.created_by,
        updated_by=obj.updated_by,
        connector_count=connector_count,
        max_concurrent_runs=_cap(obj),
    )


def _snapshot(kind: Kind, obj: Endpoint) -> dict[str, Any]:
    snap: dict[str, Any] = {"name": obj.name, "type": obj.type, "config": masked(kind, obj)}
    if kind == "destination":
        snap["max_concurrent_runs"] = _cap(obj)
    return snap


def _cap(obj: Endpoint) -> int | None:
    return obj.max_concurrent_runs if isinstance(obj, Destination) else None


def _set_cap(kind: Kind, obj: Endpoint, cap: int | None) -> None:
    """A destination's cap on runs writing to it at once; a source has none."""
    if isinstance(obj, Destination):
        obj.max_concurrent_runs = cap
    elif cap is not None:
        raise ValidationFailed.field(
            "max_concurrent_runs",
            f"only a destination caps its concurrent runs; a {kind} has no such setting",
        )


def list_all(kind: Kind, *, session: Session) -> list[EndpointOut]:
    model = MODELS[kind]
    counts = dict(
        session.execute(select(_fk(kind), func.count()).group_by(_fk(kind))).tuples().all()
    )
    rows = cast(list[Endpoint], list(session.scalars(select(model).order_by(model.name))))
    return [to_out(kind, r, counts.get(r.id, 0)) for r in rows]


def connector_count(kind: Kind, endpoint_id: int, *, session: Session) -> int:
    return int(session.scalar(select(func.count()).where(_fk(kind) == endpoint_id)) or 0)


def create(
    kind: Kind, data: EndpointCreate, *, session: Session, actor: Actor, box: SecretBox
) -> Endpoint:
    """Validate the config against the type, encrypt its secrets, store it."""
    require_role(actor, "editor", f"create {kind}s")
    info = get_type(kind, data.type)
    validate_config(kind, data.type, data.config)
    config = box.encrypt_config(_without_nulls(data.config), info.secret_fields)
    obj = MODELS[kind](
        name=data.name,
        type=data.type,
        config=config,
        created_by=actor.username,
        updated_by=actor.username,
    )
    _set_cap(kind, obj, data.max_concurrent_runs)
    session.add(obj)
    _flush_unique(session, kind, data.name)
    audit.record(
        session=session,
        actor=actor,
        action=f"{kind}.create",
        entity_type=kind,
        entity_id=obj.id,
        after=_snapshot(kind, obj),
    )
    versions.endpoint_changed(session, kind, obj, change="create", actor=actor)
    return obj


def update(
    kind: Kind,
    endpoint_id: int,
    data: EndpointPatch,
    *,
    session: Session,
    actor: Actor,
    box: SecretBox,
    change: str = "update",
    restored_from: int | None = None,
) -> Endpoint:
    """Rename and/or merge config changes; secrets not sent are kept. A change is one new
    version (``change`` names it: update or restore)."""
    require_role(actor, "editor", f"change {kind}s")
    obj = get(kind, endpoint_id, session=session)
    require_may_change(kind, obj, actor)
    before, prior = _snapshot(kind, obj), versions.prior_endpoint(kind, obj)
    info = get_type(kind, obj.type)
    if data.config is not None:
        # JSON merge patch: keys sent replace, keys sent as null are removed, the rest stay.
        patched = {**obj.config, **data.config}
        require_secrets_again(data.config, obj.config, info, box)
        merged = keep_unchanged_secrets(
            patched, obj.config, info.secret_fields, info.connection_fields
        )
        plain = box.decrypt_config(merged, info.secret_fields)
        validate_config(kind, obj.type, plain)
        obj.config = box.encrypt_config(_without_nulls(plain), info.secret_fields)
    if data.name is not None:
        obj.name = data.name
    if "max_concurrent_runs" in data.model_fields_set:
        _set_cap(kind, obj, data.max_concurrent_runs)
    obj.updated_by = actor.username
    _flush_unique(session, kind, obj.name)
    after = _snapshot(kind, obj)
    if after != before:
        audit.record(
            session=session,
            actor=actor,
            action=f"{kind}.{change}",
            entity_type=kind,
            entity_id=obj.id,
            before=before,
            after=after if change != "restore" else {**after, "restored_from": restored_from},
        )
        versions.endpoint_changed(
            session, kind, obj, change=change, actor=actor, prior=prior, restored_from=restored_from
        )
    return obj


def require_may_change(kind: Kind, obj: Endpoint, actor: Actor) -> None:
    """Editors change what they created; admins change everything."""
    require_role(actor, "editor", f"change {kind}s")
    if not actor.is_admin and obj.created_by != actor.username:
        require_role(actor, "admin", f"change a {kind} another user created")


def require_secrets_again(
    sent: dict[str, Any], stored: dict[str, Any], info: TypeInfo, box: SecretBox
) -> None:
    """A change of where the endpoint connects must carry its stored secrets again.

    A stored secret is only ever sent to the target it was stored with: moving the host,
    URL, path, bucket, endpoint or database without entering the secrets again would hand
    them to the new target. Sending a secret as null removes it instead. A secret sent back
    masked, or as the stored (encrypted) value a form echoes, is not entered again.
    """
    plain = box.decrypt_config(stored, info.secret_fields)
    echoed = {k: v for k, v in sent.items() if not (k in stored and v == stored[k])}
    moved = moved_fields(echoed, plain, info.connection_fields, info.secret_fields)
    if not moved:
        return
    missing = [
        name
        for name in sorted(info.secret_fields)
        if stored.get(name) not in (None, "", {}) and not _entered(echoed.get(name, MASK))
    ]
    if missing:
        raise ValidationFailed(
            [
                FieldProblem(
                    f"config.{name}",
                    f"enter it again (or send null to remove it): {', '.join(moved)} changed, "
                    "and a stored secret is only sent to the target it was stored with",
                )
                for name in missing
            ]
        )


def _entered(value: Any) -> bool:
    if isinstance(value, dict):
        return MASK not in value.values()
    return bool(value != MASK)


def with_stored_secrets(
    kind: Kind,
    type_name: str,
    stored_plain: dict[str, Any],
    values: dict[str, Any],
    cleared: set[str] | frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """What "Test connection" tries on an edit form: the stored config with the form's
    ``values`` on top (``cleared`` keys removed), the stored secrets filled in only where
    the form left them empty and the target did not move."""
    info = get_type(kind, type_name)
    candidate = {
        k: v for k, v in stored_plain.items() if k not in info.secret_fields and k not in cleared
    }
    candidate.update(values)
    return keep_unchanged_secrets(
        candidate, stored_plain, info.secret_fields, info.connection_fields
    )


def delete(kind: Kind, endpoint_id: int, *, session: Session, actor: Actor) -> None:
    """Delete unless connectors still use it (409 naming them)."""
    require_role(actor, "editor", f"delete {kind}s")
    obj = get(kind, endpoint_id, session=session)
    if not actor.is_admin and obj.created_by != actor.username:
        require_role(actor, "admin", f"delete a {kind} another user created")
    users = list(session.scalars(select(Connector.name).where(_fk(kind) == endpoint_id).limit(6)))
    if users:
        names = ", ".join(users[:5]) + (", ..." if len(users) > 5 else "")
        raise Conflict(
            f"{kind} '{obj.name}' is still used by connectors: {names}",
            hint="delete those connectors or point them elsewhere first",
        )
    audit.record(
        session=session,
        actor=actor,
        action=f"{kind}.delete",
        entity_type=kind,
        entity_id=obj.id,
        before=_snapshot(kind, obj),
    )
    session.delete(obj)
    session.flush()


def decrypted_config(kind: Kind, obj: Endpoint, box: SecretBox) -> dict[str, Any]:
    """The config with secrets in clear: for the flow and checks only, in memory."""
    return box.decrypt_config(obj.config, get_type(kind, obj.type).secret_fields)


def _without_nulls(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if v is not None}


def _flush_unique(session: Session, kind: Kind, name: str) -> None:
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        raise Conflict(f"a {kind} named '{name}' already exists") from exc


def connectors_using(kind: Kind, endpoint_id: int, *, session: Session) -> list[dict[str, Any]]:
    """Connectors whose source (or destination) is ``endpoint_id``, by name (columns only)."""
    stmt = (
        select(Connector.id, Connector.name, Connector.is_active, Connector.sync_status)
        .where(_fk(kind) == endpoint_id)
        .order_by(Connector.name)
    )
    return [dict(row._mapping) for row in session.execute(stmt)]


def one_stored_secret(*, session: Session) -> str | None:
    """Any encrypted secret value stored in a source or destination (for key checks)."""
    from conveyor.secrets import is_encrypted

    for model in MODELS.values():
        for config in session.scalars(select(model.config).limit(200)):
            for value in (config or {}).values():
                if is_encrypted(value):
                    return str(value)
    return None
