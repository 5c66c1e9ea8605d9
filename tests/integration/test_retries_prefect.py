"""Retries through a real Prefect server and process worker, with a source server that goes
away: a transient failure is retried in the same run record until it succeeds, with the
rows loaded once; a wrong password is a config failure, not retried; "Retry now" of a
failed run starts a new run that succeeds.

The source is a PostgreSQL cluster of this module's own (tests/fixtures/scratch_pg.py), so
it can be stopped in the middle of a run and started again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from conveyor.db.models import Connector, NotificationEvent
from conveyor.db.session import session_scope
from conveyor.services.authz import SYSTEM
from conveyor.settings import Settings
from tests.fixtures.net import wait_for
from tests.fixtures.notify import WebhookReceiver
from tests.fixtures.pipelines import ConnectorFactory, duckdb_rows, pg_exec
from tests.fixtures.scratch_pg import ScratchPostgres, scratch_pg  # noqa: F401
from tests.integration.unattended_support import (
    deployment_id,
    prefect_settings,
    reconcile,
    record,
    worker_env,
)

pytestmark = [pytest.mark.prefect, pytest.mark.timeout(300), pytest.mark.xdist_group("retries")]

ROWS = 1000
DOWN_FOR = 30.0  # seconds the source server stays stopped


@pytest.fixture
def s(tmp_path: Path, prefect_api_url: str) -> Iterator[Settings]:
    yield from prefect_settings(tmp_path, prefect_api_url)


@pytest.fixture(scope="module")
def items(scratch_pg: ScratchPostgres) -> ScratchPostgres:  # noqa: F811
    pg_exec(
        scratch_pg.url(),
        "CREATE TABLE items (id int PRIMARY KEY)",
        f"INSERT INTO items SELECT generate_series(1, {ROWS})",
    )
    return scratch_pg


def connector(s: Settings, url: str, query: str, policy: dict[str, Any]) -> int:
    override = {"query": query, "write_disposition": "append"}
    cid = ConnectorFactory(s)(
        ("sql_database", {"connection_string": url}), ("duckdb", {}), source_override=override
    )
    with session_scope(s.effective_database_url) as session:
        session.get(Connector, cid).retry_policy = policy  # type: ignore[union-attr]
    reconcile(s)
    return cid


def run_now(s: Settings, cid: int) -> int:
    from conveyor.services import runs
    from conveyor.sync.flow_runs import create_flow_run

    return int(runs.trigger(cid, settings=s, actor=SYSTEM, start=create_flow_run).id)


def events_of(s: Settings, cid: int) -> list[tuple[str, str]]:
    """The connector's notification events (event, key), oldest first."""
    with session_scope(s.effective_database_url) as session:
        rows = session.execute(
            select(NotificationEvent.event, NotificationEvent.key)
            .where(NotificationEvent.connector_id == cid)
            .order_by(NotificationEvent.id)
        )
        return [(e, k) for e, k in rows]


def failures_in_a_row(s: Settings, cid: int) -> int:
    with session_scope(s.effective_database_url) as session:
        return int(session.get(Connector, cid).consecutive_failures)  # type: ignore[union-attr]


def flow_runs_of(s: Settings, cid: int) -> dict[str, str]:
    """Every flow run of the connector's deployment in Prefect: id → state type."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    async def read() -> dict[str, str]:
        async with get_client() as client:
            found = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(
                    id=DeploymentFilterId(any_=[deployment_id(s, cid)])
                )
            )
        return {str(r.id): r.state.type.value for r in found if r.state is not None}

    return asyncio.run(read())


def test_a_source_down_for_30_s_is_retried_in_one_record_and_loads_each_row_once(
    s: Settings, process_worker: Any, items: ScratchPostgres
) -> None:
    # The query sleeps first, so the server goes away while the run reads.
    slow = "SELECT i.id FROM items i, (SELECT pg_sleep(3)) AS wait"
    cid = connector(s, items.url(), slow, {"max_attempts": 5, "backoff_seconds": [8]})
    process_worker(s.default_work_pool, worker_env(s))
    run_id = run_now(s, cid)
    wait_for(lambda: record(s, run_id).status == "running", 120, "the first attempt to start")
    time.sleep(1.0)
    items.stop("fast")
    stopped = time.monotonic()
    try:
        retrying = wait_for(
            lambda: (r := record(s, run_id)).status == "retrying" and r, 60, "a retry"
        )
        assert retrying.attempt == 2 and retrying.max_attempts == 5
        assert retrying.waiting_reason.startswith("retrying in 8 s: attempt 2 of 5 — ")
        assert retrying.failure_class == "transient" and retrying.failure_side == "source"
        assert retrying.next_attempt_at is not None
        assert events_of(s, cid) == []  # a run that will be retried has not failed
        time.sleep(max(0.0, DOWN_FOR - (time.monotonic() - stopped)))
    finally:
        items.start()
    done = wait_for(
        lambda: (r := record(s, run_id)).status not in ("running", "retrying", "scheduled") and r,
        150,
        "the run to end",
        every=1,
    )
    assert done.status == "succeeded", (done.status, done.error, done.attempts)
    assert done.error is None and done.failure_class is None and done.waiting_reason is None
    # One record: every failed attempt is listed, transient, each its own flow run.
    assert done.attempt >= 2 and len(done.attempts) == done.attempt - 1
    assert [a["attempt"] for a in done.attempts] == list(range(1, done.attempt))
    assert {a["failure_class"] for a in done.attempts} == {"transient"}
    states = flow_runs_of(s, cid)
    earlier = [a["prefect_flow_run_id"] for a in done.attempts]
    assert len({*earlier, done.prefect_flow_run_id}) == done.attempt
    assert [states[f] for f in earlier] == ["FAILED"] * len(earlier)
    assert states[done.prefect_flow_run_id] == "COMPLETED"
    assert len(states) == done.attempt  # no flow run besides the attempts
    # Every row once: the failed attempts committed nothing.
    table = f"connector_{cid}.query_result"
    assert duckdb_rows(s, f"SELECT count(*), count(DISTINCT id) FROM {table}") == [(ROWS, ROWS)]
    # Its failed attempts were no failed run: one success, nothing to recover from.
    assert events_of(s, cid) == [("run.succeeded", f"run.succeeded:run-{run_id}")]


def webhook_channel(s: Settings, receiver: WebhookReceiver) -> None:
    """A webhook channel with the default events (all but run.succeeded), every connector."""
    from conveyor.domain.notifications import ChannelCreate
    from conveyor.secrets import SecretBox
    from conveyor.services import channels

    data = ChannelCreate(
        name="ops", type="webhook", config={"url": receiver.url, "secret": receiver.secret}
    )
    with session_scope(s.effective_database_url) as session:
        channels.create(
            data, session=session, actor=SYSTEM, box=SecretBox(s.secret_keys()), settings=s
        )


def delivered(s: Settings, receiver: WebhookReceiver) -> list[dict[str, Any]]:
    """One pass of the delivery loop; every body the receiver accepted (signature checked)."""
    from conveyor.services import notify_delivery

    notify_delivery.one_pass(s)
    assert receiver.bad_signatures == []
    return [r.body for r in receiver.received]


def test_a_wrong_password_is_not_retried_and_retry_now_starts_a_new_run(
    s: Settings, process_worker: Any, items: ScratchPostgres, webhook_receiver: WebhookReceiver
) -> None:
    from conveyor.services.retries import retry_now
    from conveyor.sync.flow_runs import create_flow_run

    webhook_channel(s, webhook_receiver)
    cid = connector(s, items.url("wrong-password"), "SELECT id FROM items", {})
    process_worker(s.default_work_pool, worker_env(s))
    first = run_now(s, cid)
    failed = wait_for(
        lambda: (r := record(s, first)).status not in ("scheduled", "running") and r,
        120,
        "the run to fail",
    )
    assert failed.status == "failed", (failed.status, failed.error)
    assert (failed.failure_class, failed.failure_side) == ("config", "source")
    assert "refused the user name or password" in (failed.error or "")
    assert (failed.attempt, failed.attempts, failed.next_attempt_at) == (1, [], None)
    assert "wrong-password" not in (failed.error or "") + (failed.log_summary or "")
    # The flow run ends Failed in Prefect (just after the record closed), and no other
    # flow run of the deployment was made.
    ended = wait_for(
        lambda: (f := flow_runs_of(s, cid)) and "RUNNING" not in f.values() and f,
        60,
        "the flow run to end in Prefect",
    )
    assert list(ended.values()) == ["FAILED"]
    # One run.failed, written with the record (the flow's own close, not retried).
    assert events_of(s, cid) == [("run.failed", f"run.failed:run-{first}")]
    assert failures_in_a_row(s, cid) == 1
    [body] = delivered(s, webhook_receiver)  # to the webhook, signed
    assert (body["id"], body["event"]) == (f"run.failed:run-{first}", "run.failed")
    assert body["connector"]["id"] == cid
    assert body["run"]["id"] == first and body["run"]["failure_class"] == "config"
    assert "wrong-password" not in str(body)

    ConnectorFactory(s).update_source(cid, {"connection_string": items.url()})
    again = retry_now(first, settings=s, actor=SYSTEM, start=create_flow_run)
    assert (again.trigger, again.retry_of, again.status) == ("retry", first, "scheduled")
    done = wait_for(
        lambda: (r := record(s, again.id)).status not in ("scheduled", "running") and r,
        120,
        "the retry to end",
    )
    assert done.status == "succeeded", (done.status, done.error)
    assert record(s, first).status == "failed"  # the old run keeps its outcome
    assert events_of(s, cid) == [
        ("run.failed", f"run.failed:run-{first}"),
        ("run.succeeded", f"run.succeeded:run-{again.id}"),
        ("run.recovered", f"run.recovered:run-{again.id}"),
    ]
    assert failures_in_a_row(s, cid) == 0
    # The webhook gets the recovery (run.succeeded is not among a channel's default events).
    bodies = delivered(s, webhook_receiver)
    assert [b["id"] for b in bodies] == [
        f"run.failed:run-{first}",
        f"run.recovered:run-{again.id}",
    ]
    assert bodies[1]["run"]["status"] == "succeeded" and bodies[1]["failed_runs_before"] == 1
    assert duckdb_rows(s, f"SELECT count(*) FROM connector_{cid}.query_result") == [(ROWS,)]
