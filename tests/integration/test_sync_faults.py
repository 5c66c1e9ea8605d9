"""Faults with real processes: Prefect stopped and restarted in the middle of a batch,
the reconciler SIGKILLed mid-batch and restarted, two reconcilers at once on PostgreSQL.
In every case: changes are accepted meanwhile, everything converges, nothing is applied
twice into a second deployment, nothing is lost."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from conveyor.db.models import Lease
from conveyor.db.session import session_scope
from tests.fixtures.sync import (
    SyncEnv,
    deployments_tagged,
    stop_process,
    wait_for,
)

pytestmark = pytest.mark.prefect


def assert_exactly_one_matching_deployment_each(env: SyncEnv, gone: tuple[int, ...] = ()) -> None:
    rows = env.rows()
    everything = deployments_tagged("conveyor")
    by_connector: dict[str, list[Any]] = {}
    for dep in everything:
        for tag in dep.tags:
            if tag.startswith("connector-"):
                by_connector.setdefault(tag, []).append(dep)
    for row in rows:
        deps = by_connector.pop(f"connector-{row.id}", [])
        assert len(deps) == 1, f"connector {row.id}: {len(deps)} deployments"
        dep = deps[0]
        assert row.sync_status == "synced", (row.id, row.sync_status, row.sync_error)
        assert row.prefect_deployment_id == str(dep.id)
        assert dep.schedules[0].schedule.cron == row.schedule
        assert dep.parameters == {"connector_id": row.id}
    assert not by_connector, f"deployments without a connector: {sorted(by_connector)}"
    assert len(everything) == len(rows)
    for cid in gone:
        assert not deployments_tagged("conveyor", f"connector-{cid}")
    assert env.queued() == 0


def all_synced(env: SyncEnv) -> bool:
    rows = env.rows()
    return all(r.sync_status == "synced" for r in rows) and env.queued() == 0


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_prefect_stopped_and_restarted_during_a_batch(
    sync_env: SyncEnv, prefect_server: Any, tmp_path: Path
) -> None:
    env = sync_env
    ids = [env.create("0 */6 * * *") for _ in range(40)]
    proc = env.start_reconciler(tmp_path / "reconciler.log")
    try:
        wait_for(lambda: env.synced_count() >= 3, 90, "the batch to start")
        prefect_server.stop()
        # Prefect is down: changes are still accepted, and wait as pending with the
        # error and the next retry time.
        for cid in ids[:10]:
            env.patch(cid, schedule="30 * * * *")
        late = [env.create("15 4 * * *") for _ in range(5)]
        env.delete(ids[-1])

        def pending_with_reason() -> bool:
            rows = [r for r in env.rows() if r.id in late]
            return all(
                r.sync_status == "pending"
                and "Prefect" in (r.sync_error or "")
                and r.sync_next_retry_at is not None
                for r in rows
            )

        wait_for(pending_with_reason, 60, "pending connectors to carry Prefect's error")
        prefect_server.start()
        wait_for(lambda: all_synced(env), 180, "convergence after Prefect came back", every=1)
    finally:
        if prefect_server.proc is None:
            prefect_server.start()
        stop_process(proc)
    assert_exactly_one_matching_deployment_each(env, gone=(ids[-1],))
    assert {env.row(c).schedule for c in ids[:10]} == {"30 * * * *"}


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_reconciler_killed_mid_batch_and_restarted(sync_env: SyncEnv, tmp_path: Path) -> None:
    env = sync_env
    ids = [env.create("0 */6 * * *") for _ in range(60)]
    log = tmp_path / "reconciler.log"
    first = env.start_reconciler(log)
    try:
        wait_for(lambda: env.synced_count() >= 3, 90, "the batch to start", every=0.05)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        done = env.synced_count()
        assert done < len(ids), "the batch finished before the kill: make it bigger"
        # While no reconciler runs, more changes arrive.
        env.patch(ids[0], schedule="5 5 * * *")
        env.delete(ids[1])
        second = env.start_reconciler(log)
        try:
            wait_for(lambda: all_synced(env), 180, "the restarted reconciler to finish", every=1)
        finally:
            stop_process(second)
    finally:
        stop_process(first)
    assert_exactly_one_matching_deployment_each(env, gone=(ids[1],))
    assert env.row(ids[0]).schedule == "5 5 * * *"


def _holder_pid(env: SyncEnv) -> int | None:
    with session_scope(env.url) as s:
        lease = s.scalars(select(Lease).where(Lease.name == "reconciler")).first()
        if lease is None or not lease.holder:
            return None
        return int(lease.holder.split(":")[1])


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_two_reconcilers_on_postgresql_one_acts_the_other_takes_over(
    sync_env: SyncEnv, tmp_path: Path
) -> None:
    env = sync_env
    ids = [env.create("0 */6 * * *") for _ in range(30)]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [env.start_reconciler(log) for log in logs]
    try:
        wait_for(lambda: all_synced(env), 120, "the first convergence", every=1)
        took = [log.read_text().count("took the lock") for log in logs]
        assert sorted(took) == [0, 1], took  # exactly one acted
        leader_pid = wait_for(lambda: _holder_pid(env), 10, "the lease row to name the holder")
        leader = next(p for p in procs if p.pid == leader_pid)
        follower = next(p for p in procs if p.pid != leader_pid)
        os.kill(leader.pid, signal.SIGKILL)
        leader.wait()
        # The advisory lock died with the leader's connection: the other takes over.
        more = [env.create("20 2 * * *") for _ in range(10)]
        env.patch(ids[0], schedule="1 1 * * *")
        env.delete(ids[1])
        wait_for(lambda: all_synced(env), 120, "the follower to take over", every=1)
        assert _holder_pid(env) == follower.pid
        follower_log = logs[procs.index(follower)].read_text()
        assert follower_log.count("took the lock") == 1
    finally:
        for p in procs:
            stop_process(p)
    assert_exactly_one_matching_deployment_each(env, gone=(ids[1],))
    assert len(more) == 10
