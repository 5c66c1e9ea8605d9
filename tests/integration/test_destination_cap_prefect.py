"""A destination's cap through Prefect: with max_concurrent_runs 1, two connectors writing to
it, started at once on a worker with room for both, move their data one after the other; the
one that waits says so on its record, and both succeed.

Each run's source query notes when it began and ended (PostgreSQL's clock_timestamp(), a
sleep between), and those times land in the destination: the two windows must not overlap.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.db.models import Destination
from conveyor.db.session import session_scope
from conveyor.domain.models import ConnectorCreate
from conveyor.domain.vocabulary import destination_limit_name
from conveyor.services import connectors
from conveyor.services import runs as runs_svc
from conveyor.services.authz import SYSTEM
from conveyor.settings import Settings
from conveyor.sync.flow_runs import create_flow_run
from tests.fixtures.pipelines import ConnectorFactory, pg_exec, pg_rows
from tests.integration.unattended_support import prefect_settings, reconcile, record, worker_env

pytestmark = [pytest.mark.prefect, pytest.mark.timeout(300)]

# began when the query started, then a sleep long enough for the other run's flow process to
# reach its data movement, then ended (per row, after the sleep).
SLOW = (
    "SELECT t.id, w.began, clock_timestamp() AS ended "
    "FROM t, (SELECT clock_timestamp() AS began, pg_sleep(10) AS slept) AS w"
)


@pytest.fixture
def s(tmp_path: Path, prefect_api_url: str) -> Iterator[Settings]:
    yield from prefect_settings(tmp_path, prefect_api_url)


def windows(target: str) -> dict[str, tuple[Any, Any]]:
    """Each loaded table's (began, ended) by schema: one per connector."""
    schemas = pg_rows(
        target,
        "SELECT table_schema, table_name FROM information_schema.columns "
        "WHERE column_name = 'began'",
    )
    return {
        schema: pg_rows(target, f'SELECT min(began), max(ended) FROM "{schema}"."{table}"')[0]
        for schema, table in schemas
    }


def limit_in_prefect(name: str) -> Any:
    from prefect.client.orchestration import get_client

    async def read() -> Any:
        async with get_client() as client:
            return await client.read_global_concurrency_limit_by_name(name)

    return asyncio.run(read())


def test_cap_of_one_makes_the_second_run_wait(
    s: Settings, process_worker: Any, pg_database: Any
) -> None:
    source_db, target = pg_database(), pg_database()
    pg_exec(
        source_db,
        "CREATE TABLE t (id int PRIMARY KEY)",
        "INSERT INTO t SELECT generate_series(1, 5)",
    )
    factory = ConnectorFactory(s)
    dst = factory.endpoint("destination", "postgres", {"connection_string": target})
    with session_scope(s.effective_database_url) as session:
        destination = session.get(Destination, dst)
        assert destination is not None
        destination.max_concurrent_runs = 1
        dst_name = destination.name
    ids = []
    for n in range(2):
        src = factory.endpoint("source", "sql_database", {"connection_string": source_db})
        with session_scope(s.effective_database_url) as session:
            c = connectors.create(
                ConnectorCreate(
                    name=f"capped-{n}",
                    source_id=src,
                    destination_id=dst,
                    source_config_override={"query": SLOW},
                ),
                session=session,
                actor=SYSTEM,
                box=factory.box,
            )
            ids.append(int(c.id))
    reconcile(s)
    worker = process_worker(s.default_work_pool, worker_env(s), limit=3)
    run_ids = [
        int(runs_svc.trigger(cid, settings=s, actor=SYSTEM, start=create_flow_run).id)
        for cid in ids
    ]

    reasons: set[str] = set()
    deadline = time.monotonic() + 200
    while time.monotonic() < deadline:
        now = [record(s, r) for r in run_ids]
        reasons.update(r.waiting_reason for r in now if r.waiting_reason)
        if all(r.status not in ("scheduled", "running", "retrying") for r in now):
            break
        time.sleep(0.25)
    final = [record(s, r) for r in run_ids]
    assert [r.status for r in final] == ["succeeded", "succeeded"], (
        [r.error for r in final],
        worker.tail(),
    )
    assert reasons == {f"waiting: destination busy (1 of 1 runs writing to {dst_name})"}
    assert [r.waiting_reason for r in final] == [None, None]  # cleared once it got its slot
    assert all(r.rows_loaded == 5 for r in final)

    (first, second) = sorted(windows(target).values())
    assert first[1] <= second[0], f"data movements overlapped: {first} and {second}"
    assert limit_in_prefect(destination_limit_name(dst)).limit == 1
