"""The reconciler against a small in-memory fake of the Prefect gateway.

The fake injects faults (Prefect down, flaky answers, answers lost after the change was
made, specs Prefect rejects, the reconciler killed mid-batch) and edits made in Prefect's
UI. The property: whatever the sequence, once faults stop, a few full passes leave exactly
one matching deployment per connector, no orphans, foreign deployments untouched.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import delete, select, text, update

from conveyor.db.base import utcnow
from conveyor.db.migrations import upgrade
from conveyor.db.models import AuditEntry, Connector, Lease, OutboxEntry
from conveyor.db.session import dispose_all, session_scope
from conveyor.domain.models import ConnectorCreate, ConnectorPatch, EndpointCreate
from conveyor.domain.vocabulary import OWNER_TAG
from conveyor.errors import ExternalError
from conveyor.secrets import SecretBox
from conveyor.services import catalog, connectors
from conveyor.services.authz import SYSTEM
from conveyor.settings import Settings
from conveyor.sync import store
from conveyor.sync.payloads import FlowRunState, ObservedDeployment
from conveyor.sync.prefect_errors import PrefectUnavailable
from conveyor.sync.reconciler import Backoff, Reconciler
from conveyor.sync.spec import CronSpec, DeploymentSpec, build

REJECTED_CRON = "1 2 3 4 5"  # valid cron that the fake Prefect refuses (like a 422)


class Killed(BaseException):
    """The reconciler process dies here (like SIGKILL): nothing after runs."""


@dataclass
class FakeDeployment:
    id: str
    spec: DeploymentSpec


class FakeGateway:
    """Prefect in a dict: upsert on name, ids that survive updates, and faults."""

    def __init__(self, seed: int = 0) -> None:
        self.deployments: dict[str, FakeDeployment] = {}
        self.pools: set[str] = set()
        self.down = False
        self.flaky = 0.0  # chance a call fails with a 503 before doing anything
        self.lose_answers = 0.0  # chance a write is done but its answer lost
        self.kill_after_calls: int | None = None  # raise Killed after this many calls
        self.calls: list[str] = []
        self.rng = random.Random(seed)
        self._ids = itertools.count(1)

    # fault plumbing
    def _enter(self, kind: str) -> None:
        self.calls.append(kind)
        if self.kill_after_calls is not None:
            self.kill_after_calls -= 1
            if self.kill_after_calls < 0:
                self.kill_after_calls = None
                raise Killed()
        if self.down:
            raise PrefectUnavailable("cannot reach Prefect: connection refused")
        if self.rng.random() < self.flaky:
            raise ExternalError("Prefect answered 503", transient=True)

    def _leave(self) -> None:
        if self.rng.random() < self.lose_answers:
            raise ExternalError("Prefect did not answer in time", transient=True)

    @property
    def write_calls(self) -> int:
        return sum(1 for c in self.calls if c not in ("list", "find", "flow_run_states"))

    # the Gateway protocol
    async def ensure_work_pool(self, name: str) -> None:
        if name not in self.pools:  # the real gateway remembers the pools it ensured
            self._enter("pool")
            self.pools.add(name)

    async def list_deployments(self) -> list[ObservedDeployment]:
        self._enter("list")
        return [
            ObservedDeployment(d.id, d.spec.name, d.spec)
            for d in self.deployments.values()
            if OWNER_TAG in d.spec.tags
        ]

    async def find_deployments(self, connector_id: int) -> list[ObservedDeployment]:
        self._enter("find")
        return [
            ObservedDeployment(d.id, d.spec.name, d.spec)
            for d in self.deployments.values()
            if OWNER_TAG in d.spec.tags and d.spec.connector_id == connector_id
        ]

    async def upsert(self, spec: DeploymentSpec) -> str:
        self._enter("upsert")
        if any(s.cron == REJECTED_CRON for s in spec.schedules):
            raise ExternalError("Prefect answered 422: invalid schedule", transient=False)
        existing = next((d for d in self.deployments.values() if d.spec.name == spec.name), None)
        dep_id = existing.id if existing else f"dep-{next(self._ids)}"
        self.deployments[dep_id] = FakeDeployment(dep_id, spec)
        self._leave()
        return dep_id

    async def update(self, deployment_id: str, old: DeploymentSpec, new: DeploymentSpec) -> str:
        """A PATCH of the fields that differ between ``old`` and ``new`` onto whatever the
        deployment is now; an upsert when it is gone or renamed (as the real gateway does)."""
        if old.name != new.name or old.flow_name != new.flow_name:
            return await self.upsert(new)
        self._enter("update")
        if any(s.cron == REJECTED_CRON for s in new.schedules):
            raise ExternalError("Prefect answered 422: invalid schedule", transient=False)
        d = self.deployments.get(deployment_id)
        if d is None:
            return await self.upsert(new)
        changed = set(new.differences(old))
        for together in (
            {"work_pool_name", "work_queue_name"},
            {"concurrency_limit", "collision_strategy"},
        ):
            if changed & together:
                changed |= together
        d.spec = replace(d.spec, **{f: getattr(new, f) for f in changed})
        self._leave()
        return deployment_id

    async def set_paused(self, deployment_id: str, paused: bool) -> None:
        self._enter("pause")
        d = self.deployments.get(deployment_id)
        if d is None:
            raise ExternalError("Prefect answered 404: Deployment not found")
        d.spec = d.spec.with_paused(paused)
        self._leave()

    async def delete(self, deployment_id: str) -> bool:
        self._enter("delete")
        gone = self.deployments.pop(deployment_id, None) is not None
        self._leave()
        return gone

    async def flow_run_states(self, flow_run_ids: list[str]) -> dict[str, FlowRunState]:
        self._enter("flow_run_states")
        return {}

    async def crash_flow_run(self, flow_run_id: str, message: str) -> bool:
        self._enter("crash")
        return False

    # edits made in Prefect's UI
    def _ours(self) -> list[str]:
        return sorted(k for k, d in self.deployments.items() if OWNER_TAG in d.spec.tags)

    def ui_delete(self, pick: int) -> None:
        ours = self._ours()
        if ours:
            self.deployments.pop(ours[pick % len(ours)])

    def ui_edit(self, pick: int, how: str) -> None:
        ours = self._ours()
        if not ours:
            return
        d = self.deployments[ours[pick % len(ours)]]
        if how == "pause":
            d.spec = d.spec.with_paused(True)
        elif how == "parameters":
            d.spec = replace(d.spec, parameters={**d.spec.parameters, "limit": 5})
        elif how == "job_variables":
            d.spec = replace(d.spec, job_variables={"env": {"EDITED": "in-prefect"}})
        else:
            d.spec = replace(d.spec, schedules=())

    def ui_add(self, owned: bool) -> str:
        dep_id = f"ui-{next(self._ids)}"
        tags = (OWNER_TAG, "connector-999") if owned else ("team-x",)
        spec = replace(_SOME_SPEC, name=f"hand-made-{dep_id}", tags=tags)
        self.deployments[dep_id] = FakeDeployment(dep_id, spec)
        return dep_id


@dataclass
class _C:
    id: int = 999
    name: str = "x"
    schedule: str | None = "0 * * * *"
    timezone: str = "UTC"
    is_active: bool = True
    tags: tuple[str, ...] = ()
    work_pool_name: str | None = None
    work_queue_name: str | None = None
    deployment_name: str | None = None
    job_variables: dict[str, Any] | None = None


_SOME_SPEC = build(_C(), default_work_pool="pool", default_work_queue="default")  # type: ignore[arg-type]


# --- a database shared by the examples of a test -----------------------------------


@dataclass
class World:
    settings: Settings
    box: SecretBox
    source_id: int
    destination_id: int
    names: Iterator[int]

    @property
    def url(self) -> str:
        return self.settings.effective_database_url

    def reset(self) -> None:
        with session_scope(self.url) as s:
            for model in (OutboxEntry, Connector, Lease):
                s.execute(delete(model))

    def create(self, schedule: str | None, tz: str = "UTC", active: bool = True) -> int:
        with session_scope(self.url) as s:
            c = connectors.create(
                ConnectorCreate(
                    name=f"c-{next(self.names)}",
                    source_id=self.source_id,
                    destination_id=self.destination_id,
                    schedule=schedule,
                    timezone=tz,
                    is_active=active,
                    source_config_override={"tables": ["orders"]},
                ),
                session=s,
                actor=SYSTEM,
                box=self.box,
            )
            return int(c.id)

    def patch(self, cid: int, **fields: Any) -> None:
        with session_scope(self.url) as s:
            connectors.update(cid, ConnectorPatch(**fields), session=s, actor=SYSTEM, box=self.box)

    def delete(self, cid: int) -> None:
        with session_scope(self.url) as s:
            connectors.delete(cid, session=s, actor=SYSTEM)

    def sql_set_schedule(self, cid: int, schedule: str) -> None:
        """A change made straight in the database: no service call, no outbox entry."""
        with session_scope(self.url) as s:
            s.execute(update(Connector).where(Connector.id == cid).values(schedule=schedule))

    def ids(self) -> list[int]:
        with session_scope(self.url) as s:
            return list(s.scalars(select(Connector.id).order_by(Connector.id)))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home: Path = tmp_path_factory.mktemp("sync-prop")
    settings = Settings(
        home=home,
        database_url=f"sqlite:///{home / 'conveyor.db'}",
        secret_key=Fernet.generate_key().decode(),
        prefect_api_url="http://127.0.0.1:9/api",
        default_work_pool="pool",
        reconcile_concurrency=4,
    )
    upgrade(settings.effective_database_url)
    box = SecretBox(settings.secret_keys())
    with session_scope(settings.effective_database_url) as s:
        src = catalog.create(
            "source",
            EndpointCreate(
                name="src",
                type="sql_database",
                config={"host": "h", "port": 5432, "database": "d", "username": "u"},
            ),
            session=s,
            actor=SYSTEM,
            box=box,
        )
        dst = catalog.create(
            "destination",
            EndpointCreate(name="dst", type="duckdb", config={}),
            session=s,
            actor=SYSTEM,
            box=box,
        )
        ids = (src.id, dst.id)
    yield World(settings, box, ids[0], ids[1], itertools.count(1))
    dispose_all()


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def reconciler(world: World, gw: FakeGateway, clock: Clock, seed: int = 0) -> Reconciler:
    return Reconciler(world.settings, gw, clock=clock, backoff=Backoff(), rng=random.Random(seed))


def desired(world: World) -> dict[int, DeploymentSpec]:
    with session_scope(world.url) as s:
        rows = list(s.scalars(select(Connector)))
        return {
            c.id: build(c, default_work_pool="pool", default_work_queue="default") for c in rows
        }


def assert_converged(world: World, gw: FakeGateway, foreign: dict[str, DeploymentSpec]) -> None:
    want = desired(world)
    by_connector: dict[int | None, list[FakeDeployment]] = {}
    for d in gw.deployments.values():
        if OWNER_TAG in d.spec.tags:
            by_connector.setdefault(d.spec.connector_id, []).append(d)
    with session_scope(world.url) as s:
        rows = {c.id: c for c in s.scalars(select(Connector))}
        queued = s.scalar(text("SELECT count(*) FROM outbox"))
    for cid, spec in want.items():
        row = rows[cid]
        deps = by_connector.pop(cid, [])
        if any(sc.cron == REJECTED_CRON for sc in spec.schedules):
            assert row.sync_status == "error", (cid, row.sync_status, row.sync_error)
            assert "invalid schedule" in (row.sync_error or "")
            assert len(deps) <= 1 and all(d.spec.hash != spec.hash for d in deps)
            continue
        assert len(deps) == 1, (cid, deps)
        assert deps[0].spec.hash == spec.hash, spec.differences(deps[0].spec)
        assert row.sync_status == "synced", (cid, row.sync_status, row.sync_error)
        assert row.prefect_deployment_id == deps[0].id
        assert row.synced_spec_hash == spec.hash
    assert not by_connector, f"orphans left: {by_connector}"
    for dep_id, spec in foreign.items():
        assert gw.deployments[dep_id].spec == spec  # never touched
    assert queued == 0


async def settle(world: World, gw: FakeGateway, clock: Clock) -> None:
    """Faults stop; full passes (time moving past every backoff) until nothing changes."""
    gw.down, gw.flaky, gw.lose_answers, gw.kill_after_calls = False, 0.0, 0.0, None
    rec = reconciler(world, gw, clock)
    for _ in range(4):
        clock.advance(4 * 3600)
        report = await rec.full_pass()
        # Specs Prefect rejects are retried (slowly) and fail again: expected.
        unexpected = [e for e in report.errors if e["transient"]]
        if report.changed == 0 and report.recorded == 0 and not unexpected:
            return
    raise AssertionError(f"no convergence after 4 full passes: {report.to_json()}")


# --- the property -------------------------------------------------------------------

CRONS = ["0 * * * *", "*/5 * * * *", "30 2 * * 1-5", REJECTED_CRON, None]
TZS = ["UTC", "Europe/Paris", "America/New_York"]

create_op = st.tuples(
    st.just("create"), st.sampled_from(CRONS), st.sampled_from(TZS), st.booleans()
)
op = st.one_of(
    create_op,
    create_op,
    st.tuples(st.just("schedule"), st.integers(0, 20), st.sampled_from(CRONS)),
    st.tuples(st.just("timezone"), st.integers(0, 20), st.sampled_from(TZS)),
    st.tuples(st.just("active"), st.integers(0, 20), st.booleans()),
    st.tuples(st.just("tags"), st.integers(0, 20), st.sampled_from([[], ["a"], ["a", "b"]])),
    st.tuples(st.just("delete"), st.integers(0, 20)),
    st.tuples(st.just("sql_schedule"), st.integers(0, 20), st.sampled_from(CRONS[:3])),
    st.tuples(st.just("ui_delete"), st.integers(0, 20)),
    st.tuples(
        st.just("ui_edit"),
        st.integers(0, 20),
        st.sampled_from(["pause", "parameters", "sched", "job_variables"]),
    ),
    st.tuples(
        st.just("job_variables"),
        st.integers(0, 20),
        st.sampled_from([None, {"env": {"A": "1"}}, {"cpu_request": "1", "env": {"A": "2"}}]),
    ),
    st.tuples(st.just("ui_add"), st.booleans()),
    st.tuples(st.just("down"), st.booleans()),
    st.tuples(st.just("flaky"), st.sampled_from([0.0, 0.3, 0.7])),
    st.tuples(st.just("lose_answers"), st.sampled_from([0.0, 0.3])),
    st.tuples(st.just("outbox_pass"), st.integers(0, 30)),
    st.tuples(st.just("full_pass"), st.integers(0, 30)),
    st.tuples(st.just("kill"), st.integers(0, 6)),
    st.tuples(st.just("time"), st.sampled_from([1, 10, 600, 7200])),
)


async def play(world: World, ops: list[tuple[Any, ...]], seed: int) -> None:
    gw = FakeGateway(seed)
    clock = Clock()
    foreign: dict[str, DeploymentSpec] = {}
    kill_next: int | None = None
    for step in ops:
        ids = world.ids()
        kind = step[0]
        pick = (lambda i, ids=ids: ids[i % len(ids)]) if ids else None
        if kind == "create":
            world.create(step[1], step[2], step[3])
        elif kind == "schedule" and pick:
            world.patch(pick(step[1]), schedule=step[2])
        elif kind == "timezone" and pick:
            world.patch(pick(step[1]), timezone=step[2])
        elif kind == "active" and pick:
            world.patch(pick(step[1]), is_active=step[2])
        elif kind == "tags" and pick:
            world.patch(pick(step[1]), tags=step[2])
        elif kind == "job_variables" and pick:
            world.patch(pick(step[1]), job_variables=step[2])
        elif kind == "delete" and pick:
            world.delete(pick(step[1]))
        elif kind == "sql_schedule" and pick:
            world.sql_set_schedule(pick(step[1]), step[2])
        elif kind == "ui_delete":
            gw.ui_delete(step[1])
        elif kind == "ui_edit":
            gw.ui_edit(step[1], step[2])
        elif kind == "ui_add":
            dep_id = gw.ui_add(owned=step[1])
            if not step[1]:
                foreign[dep_id] = gw.deployments[dep_id].spec
        elif kind == "down":
            gw.down = step[1]
        elif kind == "flaky":
            gw.flaky = step[1]
        elif kind == "lose_answers":
            gw.lose_answers = step[1]
        elif kind == "kill":
            kill_next = step[1]
        elif kind == "time":
            clock.advance(step[1])
        elif kind in ("outbox_pass", "full_pass"):
            # Each pass is a fresh reconciler, as after a restart.
            rec = reconciler(world, gw, clock, seed=step[1])
            gw.kill_after_calls, kill_next = kill_next, None
            try:
                if kind == "outbox_pass":
                    await rec.outbox_pass()
                else:
                    await rec.full_pass()
            except Killed:
                # A killed process does nothing later: what it had in flight ends now.
                others = asyncio.all_tasks() - {asyncio.current_task()}
                await asyncio.gather(*others, return_exceptions=True)
            gw.kill_after_calls = None
    await settle(world, gw, clock)
    assert_converged(world, gw, foreign)
    # Converged means idempotent: one more pass makes no write call.
    before = gw.write_calls
    report = await reconciler(world, gw, clock).full_pass()
    assert gw.write_calls == before and report.changed == 0


@hsettings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    first=st.lists(create_op, min_size=1, max_size=6),
    ops=st.lists(op, min_size=5, max_size=40),
    seed=st.integers(0, 2**16),
)
def test_any_operations_and_faults_converge_to_exactly_the_desired_deployments(
    world: World, first: list[tuple[Any, ...]], ops: list[tuple[Any, ...]], seed: int
) -> None:
    world.reset()
    asyncio.run(play(world, first + ops, seed))


# --- specific behaviours ------------------------------------------------------------


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_changes_to_one_connector_are_coalesced_into_one_call(world: World) -> None:
    world.reset()
    gw, clock = FakeGateway(), Clock()
    cid = world.create("0 * * * *")
    world.patch(cid, schedule="5 * * * *")
    world.patch(cid, timezone="Europe/Paris")
    world.patch(cid, is_active=False)
    report = run(reconciler(world, gw, clock).outbox_pass())
    assert gw.calls.count("upsert") == 1
    assert report.created == 1
    assert_converged(world, gw, {})


def test_a_change_prefect_does_not_see_makes_no_call(world: World) -> None:
    world.reset()
    gw, clock = FakeGateway(), Clock()
    cid = world.create("0 * * * *")
    run(reconciler(world, gw, clock).outbox_pass())
    gw.calls.clear()
    world.patch(cid, description="only the description")  # not part of the deployment
    report = run(reconciler(world, gw, clock).outbox_pass())
    assert gw.calls == [] and report.recorded == 1
    assert_converged(world, gw, {})


def test_prefect_down_keeps_changes_pending_with_error_and_retry_time(world: World) -> None:
    world.reset()
    gw, clock = FakeGateway(), Clock()
    ids = [world.create("0 * * * *") for _ in range(5)]
    gw.down = True
    report = run(reconciler(world, gw, clock).outbox_pass())
    assert report.failed == 5
    # Once Prefect is known down, the rest of the batch is not sent to it.
    assert gw.calls.count("upsert") <= world.settings.reconcile_concurrency
    with session_scope(world.url) as s:
        rows = list(s.scalars(select(Connector).where(Connector.id.in_(ids))))
        queued = list(s.scalars(select(OutboxEntry)))
    assert {r.sync_status for r in rows} == {"pending"}
    assert all("cannot reach Prefect" in (r.sync_error or "") for r in rows)
    assert all(r.sync_next_retry_at and r.sync_next_retry_at > clock.now for r in rows)
    assert len(queued) == 5 and all(q.next_attempt_at and q.last_error for q in queued)
    # Not due yet: the next pass leaves them alone.
    gw.down = False
    gw.calls.clear()
    assert run(reconciler(world, gw, clock).outbox_pass()).connectors == 0
    assert gw.calls == []
    clock.advance(5)
    run(reconciler(world, gw, clock).outbox_pass())
    assert_converged(world, gw, {})


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    b = Backoff(base=2, cap=60)
    rng = random.Random(1)
    delays = [b.delay(n, rng) for n in range(1, 12)]
    assert 1 <= delays[0] <= 2
    assert 4 <= delays[2] <= 8
    assert all(30 <= d <= 60 for d in delays[6:])
    assert len({round(d, 3) for d in delays}) == len(delays)  # jittered
    assert b.delay(1, rng, transient=False) >= 30  # rejected specs retry slowly


def test_a_rejected_spec_is_not_retried_unchanged_but_is_once_changed(world: World) -> None:
    world.reset()
    gw, clock = FakeGateway(), Clock()
    bad = world.create(REJECTED_CRON)
    good = world.create("0 * * * *")
    rec = reconciler(world, gw, clock)
    run(rec.outbox_pass())
    with session_scope(world.url) as s:
        assert s.get(Connector, bad).sync_status == "error"  # type: ignore[union-attr]
        assert s.get(Connector, good).sync_status == "synced"  # type: ignore[union-attr]
    gw.calls.clear()
    run(rec.full_pass())
    assert "upsert" not in gw.calls  # nothing else stalls, nothing retried unchanged
    world.sql_set_schedule(bad, "0 3 * * *")
    run(rec.full_pass())
    assert_converged(world, gw, {})


def test_lost_lock_stops_the_batch(world: World) -> None:
    world.reset()
    gw, clock = FakeGateway(), Clock()
    for _ in range(3):
        world.create("0 * * * *")
    rec = Reconciler(world.settings, gw, clock=clock, is_leader=lambda: False)
    from conveyor.sync.reconciler import LeadershipLost

    with pytest.raises(LeadershipLost):
        run(rec.outbox_pass())
    assert "upsert" not in gw.calls


def test_changes_made_while_a_pass_runs_join_it(world: World) -> None:
    world.reset()
    gw, clock = FakeGateway(), Clock()
    first = world.create("0 * * * *")
    made: list[int] = []
    original = gw.upsert

    async def upsert_and_meanwhile(spec: DeploymentSpec) -> str:
        if not made:  # while the first upsert is in flight, users keep working
            world.patch(first, schedule="5 * * * *")
            made.append(world.create("10 * * * *"))
        return await original(spec)

    gw.upsert = upsert_and_meanwhile  # type: ignore[method-assign]
    rec = Reconciler(world.settings, gw, clock=clock, poll_interval=0.01)
    report = run(rec.outbox_pass())
    assert report.connectors == 2
    assert gw.calls.count("upsert") == 3  # first twice (changed in flight), the new one once
    assert_converged(world, gw, {})


def test_recording_many_syncs_keeps_version_and_updated_at_and_skips_rows_changed_meanwhile(
    world: World,
) -> None:
    """Results are written in batches (executemany): the same guarded update as one by one."""
    world.reset()
    ids = [world.create("0 * * * *") for _ in range(5)]
    with session_scope(world.url) as s:
        before = {c.id: (c.version, c.updated_at) for c in s.scalars(select(Connector))}
        states = store.load_connectors(s)
    gw, clock = FakeGateway(), Clock()
    report = asyncio.run(reconciler(world, gw, clock).outbox_pass())
    assert report.failed == 0 and report.connectors == 5
    assert_converged(world, gw, {})
    with session_scope(world.url) as s:
        rows = {c.id: c for c in s.scalars(select(Connector))}
        assert {cid: (r.version, r.updated_at) for cid, r in rows.items()} == before
    # A result for a snapshot older than the row (edited meanwhile) changes nothing.
    world.patch(ids[2], schedule="5 * * * *")
    with session_scope(world.url) as s:
        edited = s.get(Connector, ids[2])
        assert edited is not None
        newer = (edited.sync_status, edited.synced_spec_hash, edited.version, edited.updated_at)
        store.record_synced_many(
            s, [(states[cid], "dep-stale", _SOME_SPEC, clock()) for cid in (ids[2], ids[3])]
        )
    with session_scope(world.url) as s:
        edited, other = s.get(Connector, ids[2]), s.get(Connector, ids[3])
        assert edited is not None and other is not None
        assert newer[0] == "pending"
        assert (
            edited.sync_status,
            edited.synced_spec_hash,
            edited.version,
            edited.updated_at,
        ) == newer
        assert other.prefect_deployment_id == "dep-stale"  # same version: recorded
        assert (other.version, other.updated_at) == before[ids[3]]


def test_a_change_to_a_synced_connector_is_one_patch_of_what_differs(world: World) -> None:
    world.reset()
    cid = world.create("0 * * * *")
    gw, clock = FakeGateway(), Clock()
    rec = reconciler(world, gw, clock)
    run(rec.outbox_pass())
    assert gw.calls == ["upsert"]
    want = desired(world)[cid]
    with session_scope(world.url) as s:
        row = s.get(Connector, cid)
        assert row is not None and row.synced_spec is not None
        assert DeploymentSpec.from_content(row.synced_spec) == want

    gw.calls.clear()
    world.patch(cid, schedule="5 * * * *", tags=["eu"])
    run(rec.outbox_pass())
    assert gw.calls == ["update"]
    assert_converged(world, gw, {})

    # Changed straight in the database: the full pass patches what Prefect has.
    world.sql_set_schedule(cid, "7 * * * *")
    gw.calls.clear()
    report = run(rec.full_pass())
    assert [r["reason"] for r in report.repairs] == ["changed in the database"]
    assert "update" in gw.calls and "upsert" not in gw.calls
    assert_converged(world, gw, {})


def test_without_the_synced_spec_on_record_a_change_is_an_upsert(world: World) -> None:
    """A spec on record that does not hash to synced_spec_hash (written by another
    version of the mapping, or edited by hand) is not trusted to diff against."""
    world.reset()
    cid = world.create("0 * * * *")
    gw, clock = FakeGateway(), Clock()
    rec = reconciler(world, gw, clock)
    run(rec.outbox_pass())
    with session_scope(world.url) as s:
        row = s.get(Connector, cid)
        assert row is not None and row.synced_spec is not None
        row.synced_spec = {**row.synced_spec, "paused": True}
    gw.calls.clear()
    world.patch(cid, schedule="5 * * * *")
    run(rec.outbox_pass())
    assert gw.calls == ["upsert"]
    assert_converged(world, gw, {})


def drift_entries(world: World) -> list[AuditEntry]:
    with session_scope(world.url) as s:
        q = select(AuditEntry).where(AuditEntry.action == "connector.drift_repaired")
        return list(s.scalars(q.order_by(AuditEntry.id)))


def test_each_drift_repair_is_one_audit_entry_by_the_reconciler(world: World) -> None:
    world.reset()
    cid = world.create("0 * * * *")
    gw, clock = FakeGateway(), Clock()
    rec = reconciler(world, gw, clock)
    run(rec.outbox_pass())
    seen = len(drift_entries(world))
    (dep,) = gw.deployments.values()
    name = dep.spec.name

    # Paused and rescheduled in Prefect's UI: one entry, what Prefect had → what came back.
    dep.spec = replace(dep.spec, paused=True, schedules=(CronSpec("5 5 * * *", "UTC", True),))
    report = run(rec.full_pass())
    assert [r["reason"] for r in report.repairs] == ["edited in Prefect (schedules, paused)"]
    (entry,) = drift_entries(world)[seen:]
    assert (entry.actor, entry.entity_type) == ("reconciler", "connector")
    assert entry.entity_id == str(cid)
    assert entry.before == {"schedule": ["5 5 * * * UTC"], "paused": True}
    assert entry.after == {"schedule": ["0 * * * * UTC"], "paused": False}

    # Nothing to repair, a change made in Conveyor (outbox) or straight in the database:
    # Prefect had what Conveyor last synced, so no entry.
    run(rec.full_pass())
    world.patch(cid, schedule="10 * * * *")
    run(rec.outbox_pass())
    world.sql_set_schedule(cid, "20 * * * *")
    report = run(rec.full_pass())
    assert [r["reason"] for r in report.repairs] == ["changed in the database"]
    assert len(drift_entries(world)) == seen + 1

    # Deleted in Prefect; a Conveyor-tagged deployment with no connector made there.
    gw.ui_delete(0)
    hand_made = gw.ui_add(owned=True)
    run(rec.full_pass())
    assert_converged(world, gw, {})
    by_id = {e.entity_id: e for e in drift_entries(world)[seen + 1 :]}
    assert set(by_id) == {str(cid), "999"}
    assert by_id[str(cid)].before == {"deployment": "missing"}
    assert by_id[str(cid)].after == {
        "deployment": name,
        "schedule": ["20 * * * * UTC"],
        "paused": False,
        "tags": sorted(desired(world)[cid].tags),
        "parameters": {"connector_id": cid},
        "work_pool": "pool",
        "work_queue": "default",
    }
    assert by_id["999"].before == {"deployment": f"hand-made-{hand_made}"}
    assert by_id["999"].after == {"deployment": "removed"}


def test_job_variables_edited_in_prefect_are_repaired_audited_and_never_reset(
    world: World,
) -> None:
    world.reset()
    cid = world.create("0 * * * *")
    sized = {"cpu_request": "500m", "env": {"REGION": "eu"}}
    world.patch(cid, job_variables=sized)
    gw, clock = FakeGateway(), Clock()
    rec = reconciler(world, gw, clock)
    run(rec.outbox_pass())
    (dep,) = gw.deployments.values()
    assert dep.spec.job_variables == sized
    seen = len(drift_entries(world))

    # Changed in Prefect's UI: the full pass puts the connector's back, and says so.
    dep.spec = replace(dep.spec, job_variables={"env": {"REGION": "us"}, "image": "x:1"})
    report = run(rec.full_pass())
    assert [r["reason"] for r in report.repairs] == ["edited in Prefect (job_variables)"]
    assert gw.deployments[dep.id].spec.job_variables == sized
    (entry,) = drift_entries(world)[seen:]
    assert (entry.actor, entry.entity_id) == ("reconciler", str(cid))
    assert entry.before == {"job_variables": {"env": {"REGION": "us"}, "image": "x:1"}}
    assert entry.after == {"job_variables": sized}

    # Removed in Prefect's UI: restored too.
    gw.deployments[dep.id].spec = replace(dep.spec, job_variables={})
    run(rec.full_pass())
    assert gw.deployments[dep.id].spec.job_variables == sized
    (entry,) = drift_entries(world)[seen + 1 :]
    assert (entry.before, entry.after) == ({"job_variables": {}}, {"job_variables": sized})

    # Any other change, through Conveyor or straight in the database, keeps them.
    world.patch(cid, schedule="5 * * * *", tags=["eu"])
    run(rec.outbox_pass())
    world.sql_set_schedule(cid, "7 * * * *")
    run(rec.full_pass())
    assert gw.deployments[dep.id].spec.job_variables == sized
    assert_converged(world, gw, {})

    # Set to null in Conveyor (the pool's defaults): Prefect's are cleared, not audited.
    world.patch(cid, job_variables=None)
    run(rec.outbox_pass())
    assert gw.deployments[dep.id].spec.job_variables == {}
    assert len(drift_entries(world)) == seen + 2
    assert_converged(world, gw, {})
