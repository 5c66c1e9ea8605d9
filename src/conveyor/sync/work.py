"""A pass's units of work and how their results reach the database: ``Item`` is one
connector's work, ``Writer`` commits results in batches off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from conveyor.db.session import session_scope
from conveyor.sync import drift, store
from conveyor.sync.drift import Drift
from conveyor.sync.spec import DeploymentSpec
from conveyor.sync.store import ConnectorState


@dataclass
class Item:
    """One connector's work in a pass."""

    connector_id: int
    action: str  # upsert | update | pause | resume | delete | record
    why: str
    state: ConnectorState | None = None
    spec: DeploymentSpec | None = None
    deployment_id: str | None = None  # update/pause/resume/record: the deployment concerned
    old_spec: DeploymentSpec | None = None  # update: what that deployment matches now
    stale_ids: set[str] = field(default_factory=set)  # to delete once the spec is applied
    outbox_max_id: int | None = None
    attempts: int = 0  # outbox attempts so far (deleted connectors have no row)
    drift: Drift | None = None  # full pass: what Prefect had, audited once repaired


Write = Callable[[Session], None]


@dataclass(frozen=True)
class Synced:
    """A success to record: the connector's deployment (if any) and its settled outbox."""

    connector_id: int
    state: ConnectorState | None
    deployment_id: str | None
    spec: DeploymentSpec | None
    outbox_max_id: int | None
    now: datetime
    drift: Drift | None = None

    def __call__(self, session: Session) -> None:
        record_synced(session, [self])


def record_synced(session: Session, done: list[Synced]) -> None:
    """Many successes in two executemany statements (per-row statements cost more CPU
    than the Prefect calls they record), and the audit entries of drift repaired."""
    store.record_synced_many(
        session,
        [
            (d.state, d.deployment_id, d.spec, d.now)
            for d in done
            if d.state is not None and d.spec is not None and d.deployment_id
        ],
    )
    store.settle_outbox_many(
        session, [(d.connector_id, d.outbox_max_id) for d in done if d.outbox_max_id is not None]
    )
    drift.record(session, [d.drift for d in done if d.drift is not None])


class Writer:
    """Commits results in batches in a worker thread, in the order they came."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._pending: list[Write] = []
        self._task: asyncio.Task[None] | None = None
        self._abandoned = False

    def add(self, write: Write) -> None:
        if self._abandoned:
            return
        self._pending.append(write)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            await asyncio.to_thread(self._commit, batch)

    def _commit(self, batch: list[Write]) -> None:
        with session_scope(self.url) as session:
            run: list[Synced] = []  # consecutive successes, written together
            for write in batch:
                if isinstance(write, Synced):
                    run.append(write)
                    continue
                if run:
                    record_synced(session, run)
                    run = []
                write(session)
            if run:
                record_synced(session, run)

    def abandon(self) -> None:
        """The pass is dying (cancelled, interrupted): write nothing more. A batch already
        in its thread commits; nothing queued after it ever does, so no stale result can
        land over what a later pass records."""
        self._abandoned = True
        self._pending.clear()

    async def flush(self) -> None:
        while self._task is not None and not self._task.done():
            await self._task
        if self._task is not None:
            self._task.result()  # a write that failed fails the pass
        if self._pending:
            await self._drain()


def synced_spec(state: ConnectorState) -> DeploymentSpec | None:
    """The spec the connector's deployment was last synced to, if it is on record."""
    if state.synced_spec is None or state.prefect_deployment_id is None:
        return None
    spec = DeploymentSpec.from_content(state.synced_spec)
    return spec if spec is not None and spec.hash == state.synced_spec_hash else None
