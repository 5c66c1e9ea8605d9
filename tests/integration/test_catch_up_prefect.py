"""Catch-up through Prefect: scheduled times missed while no worker ran are skipped, run
once or each run, as the connector's ``catch_up`` says.

Three connectors (one per policy) share a cron that fires at three past minutes only. Prefect
schedules those three times of each deployment (its own scheduling, in the backfill mode
its API documents: the flow runs are auto-scheduled runs, as its scheduler service makes
them) while no worker runs; then a process worker starts and finds every one Late, as
after an outage. No test waits for the clock: the expectations follow from the flow runs
Prefect created, and the cron's next time is an hour away, so no other run comes due. A
fourth connector (``latest``) has only the oldest missed time made, as after an outage of the
whole platform longer than Prefect's scheduling horizon: that one flow run runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.db.models import Connector
from conveyor.db.session import session_scope
from conveyor.settings import Settings
from tests.fixtures.net import wait_for
from tests.fixtures.pipelines import ConnectorFactory
from tests.integration.unattended_support import (
    deployment_id,
    prefect_settings,
    reconcile,
    records,
    worker_env,
)

pytestmark = [pytest.mark.prefect, pytest.mark.timeout(300), pytest.mark.xdist_group("catchup")]


@pytest.fixture
def s(tmp_path: Path, prefect_api_url: str) -> Iterator[Settings]:
    yield from prefect_settings(tmp_path, prefect_api_url)


def missed_times(s: Settings, deployment: str, start: datetime, end: datetime) -> list[Any]:
    """Have Prefect schedule the deployment's times in [start, end]; the flow runs it made."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    def schedule() -> httpx.Response | None:
        resp = httpx.post(
            f"{s.prefect_api_url}/deployments/{deployment}/schedule",
            json={"start_time": start.isoformat(), "end_time": end.isoformat(), "max_runs": 3},
            timeout=30,
        )
        return None if resp.status_code == 503 else resp  # the server's SQLite was busy

    resp = wait_for(schedule, 60, "Prefect to accept the schedule request", every=1)
    assert resp.status_code < 300, resp.text

    async def read() -> list[Any]:
        async with get_client() as client:
            return await client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment]))
            )

    made = [
        r for r in asyncio.run(read()) if r.auto_scheduled and start <= r.expected_start_time <= end
    ]
    return sorted(made, key=lambda r: r.expected_start_time)


def flow_run_states(ids: list[str]) -> dict[str, str]:
    from prefect.client.orchestration import get_client

    async def read() -> dict[str, str]:
        async with get_client() as client:
            return {i: (await client.read_flow_run(i)).state.type.value for i in ids}  # type: ignore[union-attr]

    return asyncio.run(read())


def table_rows(path: Path) -> int:
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        return int(con.execute("SELECT count(*) FROM out.t").fetchone()[0])  # type: ignore[index]
    finally:
        con.close()


def test_missed_times_follow_each_policy(s: Settings, process_worker: Any, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.csv").write_text("id,v\n1,10\n2,20\n3,30\n")
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    times = [now - timedelta(minutes=n) for n in (4, 3, 2)]  # each >= 2 minutes late
    cron = ",".join(str(t.minute) for t in times) + " * * * *"
    factory = ConnectorFactory(s)
    policy_of: dict[int, str] = {}
    # "long": latest after the whole platform was down past Prefect's scheduling horizon,
    # so Prefect made only the oldest missed time's flow run (it never schedules the past).
    for policy in ("skip", "latest", "all", "long"):
        cid = factory(
            ("filesystem", {"path": str(src), "file_pattern": "*.csv", "table_name": "t"}),
            ("duckdb", {"path": str(tmp_path / f"{policy}.duckdb"), "dataset_name": "out"}),
            schedule=cron,
        )
        with session_scope(s.effective_database_url) as session:
            session.get(Connector, cid).catch_up = "latest" if policy == "long" else policy  # type: ignore[union-attr]
        policy_of[cid] = policy
    reconcile(s)

    # Prefect makes the three scheduled flow runs of each connector; no worker is running.
    made = {
        cid: missed_times(
            s,
            deployment_id(s, cid),
            times[0] - timedelta(seconds=1),
            (times[0] if policy == "long" else times[-1]) + timedelta(seconds=1),
        )
        for cid, policy in policy_of.items()
    }
    for cid, flow_runs in made.items():
        wanted = times[:1] if policy_of[cid] == "long" else times
        assert [r.expected_start_time for r in flow_runs] == wanted, policy_of[cid]

    worker = process_worker(s.default_work_pool, worker_env(s), limit=4)
    all_ids = [str(r.id) for runs in made.values() for r in runs]

    def all_recorded_and_done() -> bool:
        done = {
            r.prefect_flow_run_id
            for cid in made
            for r in records(s, cid)
            if r.status in ("skipped", "succeeded", "failed", "crashed")
        }
        return set(all_ids) <= done

    try:
        wait_for(all_recorded_and_done, 200, "every missed flow run to be decided", every=2)
    except AssertionError:
        print(worker.tail())
        raise

    for cid, flow_runs in made.items():
        policy = policy_of[cid]
        by_flow_run = {r.prefect_flow_run_id: r for r in records(s, cid)}
        status = [by_flow_run[str(fr.id)].status for fr in flow_runs]  # oldest first
        expected = {
            "skip": ["skipped", "skipped", "skipped"],
            "latest": ["skipped", "skipped", "succeeded"],
            "all": ["succeeded", "succeeded", "succeeded"],
            "long": ["succeeded"],  # the newest flow run there is, though later times passed
        }[policy]
        assert status == expected, (policy, [by_flow_run[str(f.id)].error for f in flow_runs])
        for fr in flow_runs:
            rec = by_flow_run[str(fr.id)]
            assert rec.trigger == "schedule"
            assert rec.scheduled_for == fr.expected_start_time
            if rec.status == "skipped":
                assert rec.log_summary and f"catch_up={policy}" in rec.log_summary
                assert "missed at" in rec.log_summary and rec.rows_loaded is None
            else:
                assert rec.rows_loaded == 3
        loaded = tmp_path / f"{policy}.duckdb"
        if policy == "skip":  # nothing ran: the destination was never written
            assert not loaded.exists()
        else:
            assert table_rows(loaded) == 3

    # A skipped flow run did what its policy asked: Completed in Prefect, like the others.
    assert set(flow_run_states(all_ids).values()) == {"COMPLETED"}
