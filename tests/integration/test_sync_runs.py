"""Manual runs ("Run now") and the run watchdog against the real Prefect server (no worker
polls the test work pool, so flow runs stay where the test puts them)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest

from conveyor.db.base import utcnow
from conveyor.db.models import ConnectorRun
from conveyor.db.session import session_scope
from conveyor.domain.vocabulary import MANUAL_RUN_TAG, run_record_tag
from conveyor.errors import Conflict, PermissionDenied
from conveyor.services import runs
from conveyor.services.authz import SYSTEM, Actor
from conveyor.sync.flow_runs import create_flow_run
from conveyor.sync.gateway import PrefectGateway
from conveyor.sync.loop import run_once
from conveyor.sync.watchdog import HEARTBEAT_REASON, HELD_AFTER, ORPHAN_REASON, one_pass
from tests.fixtures.sync import (
    SyncEnv,
    prefect,
)

pytestmark = pytest.mark.prefect


def trigger(env: SyncEnv, cid: int, actor: Actor = SYSTEM) -> ConnectorRun:
    return runs.trigger(cid, settings=env.settings, actor=actor, start=create_flow_run)


def run_row(env: SyncEnv, run_id: int) -> ConnectorRun:
    with session_scope(env.url) as s:
        r = s.get(ConnectorRun, run_id)
        assert r is not None
        s.expunge(r)
        return r


def test_manual_run_is_refused_until_synced_and_while_paused(sync_env: SyncEnv) -> None:
    env = sync_env
    cid = env.create()
    with pytest.raises(Conflict, match="not synced"):
        trigger(env, cid)
    env.outbox_pass()
    env.patch(cid, is_active=False)
    env.outbox_pass()
    with pytest.raises(Conflict, match="paused"):
        trigger(env, cid)
    with pytest.raises(PermissionDenied):
        trigger(env, cid, Actor(username="v", role="viewer"))


def test_manual_run_creates_a_flow_run_tagged_manual_and_a_run_record(sync_env: SyncEnv) -> None:
    env = sync_env
    cid = env.create()
    env.outbox_pass()
    run = trigger(env, cid)
    assert (run.status, run.trigger, run.connector_id) == ("scheduled", "manual", cid)
    flow_run = prefect(lambda c: c.read_flow_run(run.prefect_flow_run_id))
    assert MANUAL_RUN_TAG in flow_run.tags and run_record_tag(run.id) in flow_run.tags
    assert str(flow_run.deployment_id) == env.row(cid).prefect_deployment_id
    # Prefect adds the deployment's tags; "scheduled" (the connector has a schedule) must
    # not mark a manual run as a scheduled one (issue 22).
    deployment = prefect(lambda c: c.read_deployment(flow_run.deployment_id))
    assert "scheduled" in deployment.tags
    assert "scheduled" not in flow_run.tags
    assert f"connector-{cid}" in flow_run.tags  # the other inherited tags stay
    assert flow_run.parameters == {"connector_id": cid}
    assert flow_run.state.type.value == "SCHEDULED"


def _force(flow_run_id: str, state: Any) -> None:
    prefect(lambda c: c.set_flow_run_state(flow_run_id, state, force=True))


def _set_run(env: SyncEnv, run_id: int, **values: Any) -> None:
    with session_scope(env.url) as s:
        r = s.get(ConnectorRun, run_id)
        assert r is not None
        for k, v in values.items():
            setattr(r, k, v)


def _close_stale(env: SyncEnv, now: datetime | None = None) -> int:
    async def go() -> int:
        assert env.settings.prefect_api_url
        async with PrefectGateway(env.settings.prefect_api_url) as gw:
            return await one_pass(settings=env.settings, gateway=gw, now=now)

    return asyncio.run(go())


def test_stale_runs_are_closed_with_a_status_and_a_reason(sync_env: SyncEnv) -> None:
    from prefect.states import Cancelled, Failed, Running

    env = sync_env
    cid = env.create()
    env.outbox_pass()
    failed, cancelled, silent, alive, waiting = (trigger(env, cid) for _ in range(5))
    now = utcnow()
    _force(failed.prefect_flow_run_id, Failed(message="source unreachable"))
    _force(cancelled.prefect_flow_run_id, Cancelled(message="cancelled by alice"))
    for r in (silent, alive):
        _force(r.prefect_flow_run_id, Running())
    _set_run(env, failed.id, status="running", started_at=now, heartbeat_at=now)
    _set_run(env, cancelled.id, status="running", started_at=now, heartbeat_at=now)
    old = now - timedelta(seconds=env.settings.run_heartbeat_timeout + 60)
    _set_run(env, silent.id, status="running", started_at=old, heartbeat_at=old)
    _set_run(env, alive.id, status="running", started_at=old, heartbeat_at=now)
    # A run row whose flow run was deleted from Prefect.
    with session_scope(env.url) as s:
        ghost = ConnectorRun(
            connector_id=cid,
            prefect_flow_run_id="00000000-0000-4000-8000-000000000001",
            status="running",
            trigger="schedule",
            started_at=old,
            heartbeat_at=old,
        )
        s.add(ghost)
        s.flush()
        ghost_id = ghost.id

    assert _close_stale(env) == 4

    r = run_row(env, failed.id)
    assert (r.status, r.error) == ("failed", "source unreachable") and r.finished_at
    r = run_row(env, cancelled.id)
    assert (r.status, r.error) == (
        "cancelled",
        "The run was cancelled in Prefect: cancelled by alice",
    )
    r = run_row(env, silent.id)
    assert (r.status, r.error) == ("crashed", HEARTBEAT_REASON)
    state = prefect(lambda c: c.read_flow_run(silent.prefect_flow_run_id)).state
    assert state.type.value == "CRASHED"  # frees the deployment's concurrency slot
    assert run_row(env, alive.id).status == "running"
    assert run_row(env, waiting.id).status == "scheduled"  # waiting for a worker is fine
    r = run_row(env, ghost_id)
    assert r.status == "crashed" and "no longer exists" in (r.error or "")

    assert _close_stale(env) == 0  # closed once


def test_the_watchdog_is_not_in_the_full_pass_but_reconcile_once_runs_it(
    sync_env: SyncEnv,
) -> None:
    from prefect.states import Failed

    env = sync_env
    cid = env.create()
    env.outbox_pass()
    run = trigger(env, cid)
    _force(run.prefect_flow_run_id, Failed(message="boom"))
    report, _ = env.full_pass()
    assert report.stale_runs_closed == 0
    assert run_row(env, run.id).status == "scheduled"  # the full pass leaves runs alone

    async def once() -> int:
        assert env.settings.prefect_api_url
        async with PrefectGateway(env.settings.prefect_api_url) as gw:
            return (await run_once(env.settings, gateway=gw)).stale_runs_closed

    assert asyncio.run(once()) == 1  # `conveyor reconcile --once`
    r = run_row(env, run.id)
    assert (r.status, r.error) == ("failed", "boom")


def test_a_flow_run_left_pending_by_a_dead_worker_is_crashed_and_its_record_closed(
    sync_env: SyncEnv,
) -> None:
    """A worker SIGKILLed between claiming a flow run (Pending) and starting its process
    leaves it Pending for ever, holding a slot of the work pool's limit: the chaos soak
    (tests/system) filled the pool's 4 slots so and no run started again."""
    from prefect.states import Pending

    env = sync_env
    cid = env.create()
    env.outbox_pass()
    lost = trigger(env, cid)
    _force(lost.prefect_flow_run_id, Pending())

    assert _close_stale(env) == 0  # just claimed: its process may be starting
    assert prefect(lambda c: c.read_flow_run(lost.prefect_flow_run_id)).state.type.value == (
        "PENDING"
    )
    held = max(env.settings.run_heartbeat_timeout, HELD_AFTER)
    assert _close_stale(env, now=utcnow() + timedelta(seconds=held + 5)) == 1
    state = prefect(lambda c: c.read_flow_run(lost.prefect_flow_run_id)).state
    assert state.type.value == "CRASHED"  # the pool's slot is free again
    r = run_row(env, lost.id)
    assert (r.status, r.error) == ("crashed", ORPHAN_REASON) and r.finished_at
