"""Going back to a version: a NEW version equal to the old one, through the same update
services as every change (so the reconciler syncs Prefect and the audit log records it).

Secrets stay as they are: a masked value in the old snapshot means "keep the current
secret"; a secret the old version did not have is removed. A source or destination whose
old version connects elsewhere than now needs its secrets entered again (invariant 7).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from conveyor.db.models import Connector, Destination, Source
from conveyor.domain.models import ConnectorPatch, EndpointPatch
from conveyor.errors import Conflict, ValidationFailed
from conveyor.pipelines.registry import Kind, get_type
from conveyor.secrets import SecretBox
from conveyor.services import catalog, connectors
from conveyor.services.authz import Actor, require_owner_or_admin
from conveyor.services.versions import CONNECTOR_KEYS, endpoint_snapshot, get_version
from conveyor.settings import Settings


def restore_connector(
    connector_id: int,
    number: int,
    *,
    session: Session,
    actor: Actor,
    box: SecretBox,
    settings: Settings | None = None,
) -> Connector:
    """A new version equal to version ``number``: name, source, destination, overrides
    (current secrets kept) and every plain field, through ``connectors.update``. The
    deployment name (set only by deployment files) stays as it is. With ``settings``, it is
    checked as a save is: its job variables against the work pool as the pool is now (a
    version saved for another pool type is refused, naming the variable)."""
    c = connectors.get(connector_id, session=session)
    require_owner_or_admin(actor, c.owner_id, "restore this connector")
    old = get_version("connector", connector_id, number, session=session).snapshot
    for kind, model in (("source", Source), ("destination", Destination)):
        if session.get(model, old[f"{kind}_id"]) is None:
            raise Conflict(
                f"version {number} uses {kind} '{old[kind]}' (id {old[f'{kind}_id']}), "
                "which has been deleted",
                hint=f"edit the connector instead and choose another {kind}",
            )
    taken = connectors.get_by_name(old["name"], session=session)
    if taken is not None and taken.id != connector_id:
        raise Conflict(
            f"version {number} is named '{old['name']}', a name connector {taken.id} now has",
            hint="rename that connector first, or edit this one instead",
        )
    patch = ConnectorPatch.model_validate({k: old[k] for k in CONNECTOR_KEYS if k in old})
    was = c.version
    c = connectors.update(
        connector_id,
        patch,
        session=session,
        actor=actor,
        box=box,
        change="restore",
        restored_from=number,
        settings=settings,
    )
    if c.version == was:
        raise Conflict(
            f"version {number} is what connector {connector_id} is now: nothing to restore"
        )
    return c


def restore_endpoint(
    kind: Kind,
    endpoint_id: int,
    number: int,
    *,
    session: Session,
    actor: Actor,
    box: SecretBox,
    secrets: dict[str, Any] | None = None,
) -> Source | Destination:
    """A new version of a source or destination equal to version ``number``. Its secrets
    stay as they are, unless ``secrets`` enters them again — which a version that connects
    elsewhere than the current one needs (a stored secret only goes to its own target)."""
    obj = catalog.get(kind, endpoint_id, session=session)
    catalog.require_may_change(kind, obj, actor)
    old = get_version(kind, endpoint_id, number, session=session).snapshot
    info = get_type(kind, obj.type)
    extra = dict(secrets or {})
    for name in extra:
        if name not in info.secret_fields:
            raise ValidationFailed.field(
                f"secrets.{name}", f"is not a secret field of a {info.title} {kind}"
            )
    taken = catalog.get_by_name(kind, old["name"], session=session)
    if taken is not None and taken.id != endpoint_id:
        raise Conflict(
            f"version {number} is named '{old['name']}', a name {kind} {taken.id} now has",
            hint=f"rename that {kind} first, or edit this one instead",
        )
    # A merge patch: the old keys with their old values, the keys it did not have removed.
    config: dict[str, Any] = {k: None for k in obj.config if k not in old["config"]}
    config.update(old["config"])
    config.update(extra)
    patch = EndpointPatch.model_validate(
        {
            "name": old["name"],
            "config": config,
            **(
                {"max_concurrent_runs": old.get("max_concurrent_runs")}
                if kind == "destination"
                else {}
            ),
        }
    )
    before = endpoint_snapshot(kind, obj)
    obj = catalog.update(
        kind,
        endpoint_id,
        patch,
        session=session,
        actor=actor,
        box=box,
        change="restore",
        restored_from=number,
    )
    if endpoint_snapshot(kind, obj) == before:
        raise Conflict(f"version {number} is what {kind} {endpoint_id} is now: nothing to restore")
    return obj
