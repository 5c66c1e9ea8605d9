"""The reconciler's reads and writes of the Conveyor database.

Writes to ``connectors`` are guarded by the row's ``version`` and go through bulk
UPDATEs, which neither bump ``version`` (a user's optimistic lock must not break because
the reconciler recorded a sync) nor touch ``updated_at``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, delete, func, or_, select, update
from sqlalchemy.orm import Session

from conveyor.db.models import Connector, Lease, OutboxEntry
from conveyor.sync.spec import DeploymentSpec

LEASE_NAME = "reconciler"
_CONNECTORS = cast(Table, Connector.__table__)
_OUTBOX = cast(Table, OutboxEntry.__table__)


@dataclass(frozen=True)
class ConnectorState:
    """The connector fields the reconciler reads (a snapshot, detached from any session)."""

    id: int
    name: str
    schedule: str | None
    timezone: str
    is_active: bool
    tags: list[str]
    work_pool_name: str | None
    work_queue_name: str | None
    deployment_name: str | None
    job_variables: dict[str, Any] | None
    prefect_deployment_id: str | None
    sync_status: str
    synced_spec_hash: str | None
    synced_spec: dict[str, Any] | None
    sync_failed_spec_hash: str | None
    sync_attempts: int
    sync_next_retry_at: datetime | None
    version: int


_COLUMNS = [getattr(Connector, f) for f in ConnectorState.__dataclass_fields__]


def load_connectors(session: Session, ids: list[int] | None = None) -> dict[int, ConnectorState]:
    """Snapshots of the given connectors (all when ``ids`` is None)."""
    stmt = select(*_COLUMNS)
    if ids is not None:
        if not ids:
            return {}
        stmt = stmt.where(Connector.id.in_(ids))
    out: dict[int, ConnectorState] = {}
    for row in session.execute(stmt):
        state = ConnectorState(*row)
        out[state.id] = state
    return out


@dataclass
class OutboxGroup:
    """All queued changes of one connector, coalesced."""

    connector_id: int
    max_id: int
    deployment_ids: set[str] = field(default_factory=set)
    attempts: int = 0
    due: bool = False
    created_at: datetime | None = None


def outbox_groups(
    session: Session,
    now: datetime,
    *,
    newer_than: int | None = None,
    also: set[int] | frozenset[int] = frozenset(),
) -> dict[int, OutboxGroup]:
    """Queued changes coalesced per connector, oldest first: every connector's, or with
    ``newer_than`` those of the connectors that got an entry after that id (and of the
    connectors in ``also``)."""
    groups: dict[int, OutboxGroup] = {}
    stmt = select(
        OutboxEntry.id,
        OutboxEntry.connector_id,
        OutboxEntry.prefect_deployment_id,
        OutboxEntry.attempts,
        OutboxEntry.next_attempt_at,
        OutboxEntry.created_at,
    ).order_by(OutboxEntry.id)
    if newer_than is not None:
        touched = select(OutboxEntry.connector_id).where(OutboxEntry.id > newer_than)
        stmt = stmt.where(
            or_(OutboxEntry.connector_id.in_(touched), OutboxEntry.connector_id.in_(sorted(also)))
            if also
            else OutboxEntry.connector_id.in_(touched)
        )
    rows = session.execute(stmt)
    for entry_id, cid, dep_id, attempts, next_at, created in rows:
        g = groups.get(cid)
        if g is None:
            g = groups[cid] = OutboxGroup(connector_id=cid, max_id=entry_id, created_at=created)
        g.max_id = max(g.max_id, entry_id)
        g.attempts = max(g.attempts, attempts or 0)
        if dep_id:
            g.deployment_ids.add(dep_id)
        if next_at is None or next_at <= now:
            g.due = True
    return groups


def max_outbox_id(session: Session) -> int:
    return int(session.scalar(select(func.max(OutboxEntry.id))) or 0)


def settle_outbox(session: Session, connector_id: int, max_id: int) -> None:
    """Drop the connector's queued changes up to ``max_id`` (newer ones stay queued)."""
    session.execute(
        delete(OutboxEntry).where(
            OutboxEntry.connector_id == connector_id, OutboxEntry.id <= max_id
        )
    )


_SETTLE_MANY = (
    delete(_OUTBOX)
    .where(
        and_(
            _OUTBOX.c.connector_id == bindparam("cid"),
            _OUTBOX.c.id <= bindparam("max_id"),
        )
    )
    .execution_options(synchronize_session=False)
)


def settle_outbox_many(session: Session, settled: list[tuple[int, int]]) -> None:
    """``settle_outbox`` for many (connector id, max id) pairs in one executemany."""
    if settled:
        session.execute(_SETTLE_MANY, [{"cid": cid, "max_id": m} for cid, m in settled])


def defer_outbox(
    session: Session,
    connector_id: int,
    max_id: int | None,
    *,
    next_at: datetime,
    error: str,
    action: str,
    deployment_ids: set[str],
) -> None:
    """Push the connector's queued changes to ``next_at``; queue one if there is none."""
    stmt = update(OutboxEntry).where(OutboxEntry.connector_id == connector_id)
    if max_id is not None:
        stmt = stmt.where(OutboxEntry.id <= max_id)
    changed = rowcount(
        session.execute(
            stmt.values(
                attempts=OutboxEntry.attempts + 1, next_attempt_at=next_at, last_error=error
            ).execution_options(synchronize_session=False)
        )
    )
    if changed == 0:
        # A full pass found the work: queue it so the retry happens on time, not at
        # the next full pass.
        ids: list[str | None] = [*sorted(deployment_ids)] or [None]
        for dep_id in ids:
            session.add(
                OutboxEntry(
                    connector_id=connector_id,
                    action=action,
                    prefect_deployment_id=dep_id,
                    attempts=1,
                    next_attempt_at=next_at,
                    last_error=error,
                )
            )


def rowcount(result: Any) -> int:
    """Rows an UPDATE or DELETE touched."""
    return int(getattr(result, "rowcount", 0) or 0)


def _update_connector(session: Session, state: ConnectorState, **values: Any) -> bool:
    result = session.execute(
        update(Connector)
        .where(Connector.id == state.id, Connector.version == state.version)
        .values(updated_at=Connector.updated_at, **values)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result) > 0


_C = _CONNECTORS.c
_SYNCED_MANY = (
    update(_CONNECTORS)
    .where(
        and_(
            _C.id == bindparam("cid"),
            _C.version == bindparam("ver"),
        )
    )
    .values(
        updated_at=_C.updated_at,
        prefect_deployment_id=bindparam("dep_id", type_=_C.prefect_deployment_id.type),
        sync_status="synced",
        sync_error=None,
        synced_spec_hash=bindparam("spec_hash", type_=_C.synced_spec_hash.type),
        synced_spec=bindparam("spec", type_=_C.synced_spec.type),
        synced_at=bindparam("now", type_=_C.synced_at.type),
        sync_attempts=0,
        sync_next_retry_at=None,
        sync_failed_spec_hash=None,
        sync_alerted_at=None,  # a new spell of not being synced may fire sync.error again
    )
)


def record_synced_many(
    session: Session, synced: list[tuple[ConnectorState, str, DeploymentSpec, datetime]]
) -> None:
    """Each (state, deployment id, spec, now): the connector's deployment matches the spec.
    One executemany of an UPDATE guarded by the row's version (a row changed meanwhile is
    left alone); it leaves ``version`` and ``updated_at``."""
    if synced:
        session.execute(
            _SYNCED_MANY,
            [
                {
                    "cid": st.id,
                    "ver": st.version,
                    "dep_id": dep,
                    "spec_hash": spec.hash,
                    "spec": spec.content(),
                    "now": now,
                }
                for st, dep, spec, now in synced
            ],
        )


def record_failed(
    session: Session,
    state: ConnectorState,
    *,
    error: str,
    transient: bool,
    attempts: int,
    next_at: datetime,
    spec_hash: str | None,
) -> bool:
    """Pending with the error and the next retry (transient), or error (terminal)."""
    return _update_connector(
        session,
        state,
        sync_status="pending" if transient else "error",
        sync_error=error,
        sync_attempts=attempts,
        sync_next_retry_at=next_at,
        sync_failed_spec_hash=None if transient else spec_hash,
    )


def save_report(session: Session, key: str, report: dict[str, Any]) -> None:
    """Store a pass report in the reconciler's lease row (read by ``sync status``)."""
    lease = session.get(Lease, LEASE_NAME, with_for_update=True)
    if lease is None:
        lease = Lease(name=LEASE_NAME, info={})
        session.add(lease)
    lease.info = {**(lease.info or {}), key: report}
