"""Brings Prefect in line with the Conveyor database.

Two kinds of pass, both idempotent:
- an *outbox pass* applies queued connector changes, coalesced per connector: one
  Prefect write per changed connector, no reads. A connector whose deployment exists gets
  a PATCH of the fields that differ from the spec it last synced; others an upsert.
  Changes queued while it runs join it;
- a *full pass* lists every Conveyor-tagged deployment once, compares each with its
  connector by spec hash and repairs what differs (deleted, edited or paused in Prefect,
  changed directly in the database, orphaned). Nothing to change means no write calls.

Applying is an upsert on the deployment's (flow, name), so repeating work that was done
but not recorded (a crash between Prefect's answer and our commit) creates nothing new.
Results are written in small batches off the event loop, so database writes never hold
up the requests in flight.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from time import monotonic

from sqlalchemy.orm import Session

from conveyor.db.base import utcnow
from conveyor.db.session import session_scope
from conveyor.errors import ExternalError
from conveyor.settings import Settings
from conveyor.sync import drift, store
from conveyor.sync.backoff import Backoff
from conveyor.sync.gateway import Gateway
from conveyor.sync.payloads import ObservedDeployment
from conveyor.sync.prefect_errors import PrefectUnavailable
from conveyor.sync.report import PassReport
from conveyor.sync.spec import DeploymentSpec, build
from conveyor.sync.store import ConnectorState, OutboxGroup
from conveyor.sync.work import Item, Synced, Write, Writer, synced_spec

log = logging.getLogger("conveyor.sync.reconciler")

__all__ = ["Backoff", "LeadershipLost", "PassReport", "Reconciler"]


class LeadershipLost(Exception):
    """Another reconciler holds the lock now: stop acting."""


class Reconciler:
    """One reconciler; ``outbox_pass`` and ``full_pass`` are each safe to call at any time."""

    def __init__(
        self,
        settings: Settings,
        gateway: Gateway,
        *,
        clock: Callable[[], datetime] = utcnow,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        is_leader: Callable[[], bool] = lambda: True,
        poll_interval: float = 0.5,
        batch_size: int = 5000,
    ) -> None:
        self.settings = settings
        self.url = settings.effective_database_url
        self.gateway = gateway
        self.clock = clock
        self.backoff = backoff or Backoff()
        self.rng = rng or random.Random()
        self.is_leader = is_leader
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self._sem = asyncio.Semaphore(settings.reconcile_concurrency)
        self._unavailable: ExternalError | None = None

    def _spec(self, state: ConnectorState) -> DeploymentSpec:
        return build(
            state,
            default_work_pool=self.settings.default_work_pool,
            default_work_queue=self.settings.default_work_queue,
        )

    # --- outbox ---------------------------------------------------------------

    async def outbox_pass(self) -> PassReport:
        """Apply the queued changes that are due, and those queued while it runs."""
        report = PassReport(kind="outbox", started_at=self.clock())
        t0 = monotonic()
        self._unavailable = None
        writer = Writer(self.url)
        running: dict[int, asyncio.Task[None]] = {}
        taken: dict[int, int] = {}  # connector → newest outbox id taken in this pass
        # After the first look, only at what is new, and at connectors that changed again
        # while in flight.
        newest: int | None = None
        recheck: set[int] = set()
        try:
            while True:
                look_again = recheck - running.keys()
                recheck -= look_again
                groups, states = await asyncio.to_thread(
                    self._due, self.clock(), newest, look_again
                )
                for g in groups:
                    newest = max(newest or 0, g.max_id)
                    cid = g.connector_id
                    if cid in running:
                        if g.max_id > taken.get(cid, 0):
                            recheck.add(cid)
                        continue
                    if taken.get(cid, 0) >= g.max_id:
                        continue  # done; its result is not written yet
                    taken[cid] = g.max_id
                    item = self._outbox_item(g, states.get(cid))
                    running[cid] = asyncio.create_task(self._run(item, report, writer))
                if not running and not recheck:
                    break
                if running:
                    await asyncio.wait(running.values(), timeout=self.poll_interval)
                for cid, task in list(running.items()):
                    if task.done():
                        del running[cid]
                        task.result()  # LeadershipLost and kills propagate
        except BaseException as exc:
            for task in running.values():
                task.cancel()
            if isinstance(exc, Exception):  # record what Prefect already has, then stop
                await writer.flush()
            else:
                writer.abandon()
            raise
        await writer.flush()
        report.connectors = len(taken)
        return self._finish(report, t0)

    def _due(
        self, now: datetime, newer_than: int | None, also: set[int]
    ) -> tuple[list[OutboxGroup], dict[int, ConnectorState]]:
        with session_scope(self.url) as session:
            found = store.outbox_groups(session, now, newer_than=newer_than, also=also)
            groups = [g for g in found.values() if g.due]
            groups = groups[: self.batch_size]
            states = store.load_connectors(session, [g.connector_id for g in groups])
        return groups, states

    def _outbox_item(self, g: OutboxGroup, state: ConnectorState | None) -> Item:
        if state is None:
            return Item(
                g.connector_id,
                "delete",
                "connector deleted",
                stale_ids=set(g.deployment_ids),
                outbox_max_id=g.max_id,
                attempts=g.attempts,
            )
        spec = self._spec(state)
        stale = set(g.deployment_ids)
        if state.prefect_deployment_id:
            stale.add(state.prefect_deployment_id)
        only_ours = state.prefect_deployment_id is not None and stale == {
            state.prefect_deployment_id
        }
        # Prefect already has this spec (e.g. only the source config changed).
        in_step = only_ours and state.synced_spec_hash == spec.hash
        old = None if in_step or not only_ours else synced_spec(state)
        return Item(
            g.connector_id,
            "record" if in_step else "update" if old else "upsert",
            "no change for Prefect" if in_step else "connector changed",
            state=state,
            spec=spec,
            deployment_id=state.prefect_deployment_id if in_step or old else None,
            old_spec=old,
            stale_ids=stale,
            outbox_max_id=g.max_id,
            attempts=g.attempts,
        )

    # --- full pass ------------------------------------------------------------

    async def full_pass(self) -> PassReport:
        """Queued changes first, then compare everything with Prefect and repair drift."""
        t0 = monotonic()
        report = PassReport(kind="full", started_at=self.clock())
        report.merge(await self.outbox_pass())
        now = self.clock()
        # The database is read while Prefect lists (the outbox is applied: every
        # deployment listed belongs to a connector that existed before the read began).
        snapshot = asyncio.create_task(asyncio.to_thread(self._snapshot, now))
        try:
            await self.gateway.ensure_work_pool(self.settings.default_work_pool)
            observed = await self.gateway.list_deployments()
        except ExternalError as exc:
            await snapshot
            report.error = str(exc)
            log.warning("full pass stopped: %s", exc)
            return self._save(self._finish(report, t0), "last_full_pass")
        except BaseException:
            await asyncio.gather(snapshot, return_exceptions=True)
            raise
        states, groups = await snapshot
        report.connectors = len(states)
        report.deployments = len(observed)
        items = self._repairs(states, groups, observed, now, report)
        self._unavailable = None
        writer = Writer(self.url)
        try:
            # A TaskGroup, not gather: losing the lock must stop the whole batch.
            async with asyncio.TaskGroup() as tg:
                for item in items:
                    tg.create_task(self._run(item, report, writer, repairs=True))
        except BaseExceptionGroup as group:
            await writer.flush()
            raise group.exceptions[0] from None
        await writer.flush()
        return self._save(self._finish(report, t0), "last_full_pass")

    def _snapshot(self, now: datetime) -> tuple[dict[int, ConnectorState], dict[int, OutboxGroup]]:
        with session_scope(self.url) as session:
            return store.load_connectors(session), store.outbox_groups(session, now)

    def _repairs(
        self,
        states: dict[int, ConnectorState],
        groups: dict[int, OutboxGroup],
        observed: list[ObservedDeployment],
        now: datetime,
        report: PassReport,
    ) -> list[Item]:
        waiting = {cid for cid, g in groups.items() if not g.due}  # in backoff
        by_connector: dict[int | None, list[ObservedDeployment]] = {}
        for obs in observed:
            by_connector.setdefault(obs.connector_id, []).append(obs)
        items: list[Item] = []
        for cid, state in states.items():
            found = by_connector.pop(cid, [])
            if cid in waiting or self._resting(state, now):
                continue
            item = self._compare(state, found)
            if item is None:
                report.unchanged += 1
            else:
                g = groups.get(cid)
                item.outbox_max_id = g.max_id if g else None
                if item.spec is not None and item.action != "record":
                    item.drift = drift.of_connector(state, found, item.spec)
                items.append(item)
        wanted = {self._spec(s).name for s in states.values()}
        for maybe_cid, found in by_connector.items():
            if maybe_cid is not None and maybe_cid in waiting:
                continue
            g = groups.get(maybe_cid) if maybe_cid is not None else None
            for obs in found:
                if maybe_cid is None and obs.name in wanted:
                    continue  # its connector tag was removed: the upsert by name reclaims it
                items.append(
                    Item(
                        maybe_cid if maybe_cid is not None else -1,
                        "delete",
                        "Conveyor-tagged deployment with no connector",
                        stale_ids={obs.id},
                        outbox_max_id=g.max_id if g else None,
                        drift=drift.orphan(obs),
                    )
                )
        return items

    def _resting(self, state: ConnectorState, now: datetime) -> bool:
        """In backoff after a failure: left alone until its retry time."""
        if state.sync_next_retry_at is None or state.sync_next_retry_at <= now:
            return False
        if state.sync_status == "error":
            # A rejected spec rests until its retry time, unless it changed since.
            return state.sync_failed_spec_hash == self._spec(state).hash
        return state.sync_status == "pending" and state.sync_attempts > 0

    def _compare(self, state: ConnectorState, found: list[ObservedDeployment]) -> Item | None:
        """The repair one connector needs, or None when Prefect and the database agree."""
        spec = self._spec(state)
        same_name = [o for o in found if o.name == spec.name]
        if len(found) == 1 and same_name and same_name[0].hash == spec.hash:
            obs = same_name[0]
            db_current = (
                state.sync_status == "synced"
                and state.synced_spec_hash == spec.hash
                and state.prefect_deployment_id == obs.id
            )
            if db_current:
                return None
            return Item(
                state.id, "record", "Prefect already matches", state, spec, deployment_id=obs.id
            )
        if len(found) == 1 and same_name:
            obs = same_name[0]
            if obs.spec.with_paused(spec.paused).hash == spec.hash:
                action = "pause" if spec.paused else "resume"
                why = f"{'resumed' if spec.paused else 'paused'} in Prefect"
                return Item(state.id, action, why, state, spec, deployment_id=obs.id)
        stale = {o.id for o in found}
        if state.prefect_deployment_id:
            stale.add(state.prefect_deployment_id)
        if not found:
            why = "deleted in Prefect" if state.prefect_deployment_id else "never applied"
        elif len(found) > 1:
            why = f"{len(found)} deployments for one connector"
        elif state.synced_spec_hash != spec.hash:
            why = "changed in the database"
        else:
            diff = ", ".join(spec.differences(found[0].spec))
            why = f"edited in Prefect ({diff})"
        if len(found) == 1 and same_name:
            # What Prefect has now is known: a PATCH of what differs sets it right.
            obs = same_name[0]
            return Item(
                state.id,
                "update",
                why,
                state,
                spec,
                deployment_id=obs.id,
                old_spec=obs.spec,
                stale_ids=stale,
            )
        return Item(state.id, "upsert", why, state, spec, stale_ids=stale)

    # --- applying -------------------------------------------------------------

    async def _run(
        self, item: Item, report: PassReport, writer: Writer, *, repairs: bool = False
    ) -> None:
        try:
            deployment_id = await self._apply(item)
        except LeadershipLost:
            raise
        except Exception as exc:
            if isinstance(exc, ExternalError):
                err = exc
            else:
                log.exception("unexpected error syncing connector %s", item.connector_id)
                err = ExternalError(f"unexpected error: {exc!r}", transient=True)
            if isinstance(err, PrefectUnavailable) and self._unavailable is None:
                # Don't send the rest of the batch to a server that is not there.
                self._unavailable = PrefectUnavailable(f"not sent: {err.reason}")
            writer.add(self._failure(item, err))
            report.failed += 1
            report.note(
                report.errors,
                connector_id=item.connector_id,
                error=str(err),
                transient=err.transient,
            )
            return
        writer.add(self._success(item, deployment_id))
        counter = {
            "upsert": "updated" if (item.state and item.state.prefect_deployment_id) else "created",
            "update": "updated",
            "pause": "paused",
            "resume": "resumed",
            "delete": "deleted",
            "record": "recorded",
        }[item.action]
        if item.action == "upsert" and item.why == "deleted in Prefect":
            counter = "created"
        report.count(counter)
        if repairs and item.action != "record":
            report.note(
                report.repairs,
                connector_id=item.connector_id if item.connector_id >= 0 else None,
                deployment_id=deployment_id or next(iter(item.stale_ids), None),
                action=counter,
                reason=item.why,
            )

    def _check_leader(self) -> None:
        if not self.is_leader():
            raise LeadershipLost("another reconciler holds the lock")

    async def _apply(self, item: Item) -> str | None:
        if item.action == "record":
            return item.deployment_id
        async with self._sem:
            if self._unavailable is not None:
                raise self._unavailable
            self._check_leader()
            gw = self.gateway
            if item.action == "delete":
                ids = item.stale_ids
                if not ids and item.connector_id >= 0:
                    ids = {o.id for o in await gw.find_deployments(item.connector_id)}
                for dep_id in sorted(ids):
                    self._check_leader()
                    await gw.delete(dep_id)
                return None
            if item.action in ("pause", "resume"):
                assert item.deployment_id is not None
                await gw.set_paused(item.deployment_id, item.action == "pause")
                return item.deployment_id
            assert item.spec is not None
            if item.action == "update":
                assert item.deployment_id is not None and item.old_spec is not None
                new_id = await gw.update(item.deployment_id, item.old_spec, item.spec)
            else:
                new_id = await gw.upsert(item.spec)
            for old in sorted(item.stale_ids - {new_id}):
                self._check_leader()
                await gw.delete(old)
            return new_id

    def _success(self, item: Item, deployment_id: str | None) -> Write:
        return Synced(
            connector_id=item.connector_id,
            state=item.state if item.spec is not None else None,
            deployment_id=deployment_id,
            spec=item.spec,
            outbox_max_id=item.outbox_max_id,
            now=self.clock(),
            drift=item.drift,
        )

    def _failure(self, item: Item, err: ExternalError) -> Write:
        now = self.clock()
        prior = item.state.sync_attempts if item.state else item.attempts
        attempts = prior + 1
        delay = self.backoff.delay(
            attempts,
            self.rng,
            transient=err.transient,
            unavailable=isinstance(err, PrefectUnavailable),
        )
        next_at = now + timedelta(seconds=delay)
        reason = str(err)
        log.warning(
            "connector %s: %s (%s, retry in %.0fs)",
            item.connector_id,
            reason,
            "transient" if err.transient else "rejected",
            delay,
        )

        def write(session: Session) -> None:
            if item.state is not None:
                store.record_failed(
                    session,
                    item.state,
                    error=reason,
                    transient=err.transient,
                    attempts=attempts,
                    next_at=next_at,
                    spec_hash=item.spec.hash if item.spec else None,
                )
            if item.state is not None and not err.transient:
                # Prefect rejected this spec: the connector shows the error; a full pass
                # retries once the connector changes (or slowly, see Backoff).
                if item.outbox_max_id is not None:
                    store.settle_outbox(session, item.connector_id, item.outbox_max_id)
                return
            if item.connector_id < 0:
                return  # an orphan without a connector id: the next full pass retries it
            store.defer_outbox(
                session,
                item.connector_id,
                item.outbox_max_id,
                next_at=next_at,
                error=reason,
                action="delete" if item.state is None else "upsert",
                deployment_ids=item.stale_ids if item.state is None else set(),
            )

        return write

    # --- reports --------------------------------------------------------------

    def _finish(self, report: PassReport, t0: float) -> PassReport:
        report.finished_at = self.clock()
        report.seconds = round(monotonic() - t0, 3)
        if report.kind == "outbox" and report.connectors:
            self._save(report, "last_outbox_pass")
        return report

    def _save(self, report: PassReport, key: str) -> PassReport:
        try:
            with session_scope(self.url) as session:
                store.save_report(session, key, report.to_json())
        except Exception:  # a report is not worth failing a pass for
            log.exception("could not store the %s report", report.kind)
        return report
