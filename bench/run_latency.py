"""Run now → succeeded, and how late a scheduled run starts, on `conveyor worker` with its
defaults — beside the floor: a trivial flow deployed to the same pool, run by the same worker.

    .venv/bin/python bench/run_latency.py [--runs 5] [--worker-env KEY=VALUE ...]

One fresh Prefect server (SQLite), a Conveyor database (SQLite) with two connectors into
DuckDB — a 100-row CSV (dlt's path, as the issue's new user tried it) and a 100-row
PostgreSQL table (the direct copy: no dlt) — their deployments made by the reconciler, and
one ``conveyor worker`` started as an operator would (no options; its environment holds only
where Prefect and the Conveyor database are). ``--worker-env`` adds
variables to the worker (e.g. ``PREFECT_WORKER_QUERY_SECONDS=10`` for Prefect's default poll).

Run now is what the API's Run now calls (``services.runs.trigger``); the clock stops when the
run record says ``succeeded`` (what the user sees). The floor is ``create_flow_run`` of the
trivial deployment until Prefect says COMPLETED. The three rotate, after one warm-up each.
Each Conveyor run is split by Prefect's own timestamps: created → Pending (the worker's poll),
Pending → Running (the flow process starting: Python, imports, the engine), Running → end
(the flow's own work), end → record seen. Scheduled runs are created 15 s ahead; their delay
is Prefect's start_time - expected_start_time. Medians over ``--runs``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import free_port, machine, scratch_postgres
from sync import prefect_server

BENCH = Path(__file__).resolve().parent
FLOOR_FLOW = BENCH / "run_latency_flow.py"


def setup_conveyor(home: Path, api: str, pool: str, pg_url: str) -> tuple[Any, int, int]:
    """A migrated SQLite Conveyor database with two connectors into DuckDB, reconciled: a
    100-row CSV (dlt's path) and a 100-row PostgreSQL table (the direct copy, no dlt)."""
    from cryptography.fernet import Fernet

    from conveyor.db.migrations import upgrade
    from conveyor.db.session import session_scope
    from conveyor.domain.models import ConnectorCreate, EndpointCreate
    from conveyor.secrets import SecretBox
    from conveyor.services import catalog, connectors
    from conveyor.services.authz import SYSTEM
    from conveyor.settings import Settings
    from conveyor.sync.loop import run_once

    url = f"sqlite:///{home / 'conveyor.db'}"
    upgrade(url)
    os.environ.update(  # the services read the process's settings (allowed roots...)
        CONVEYOR_HOME=str(home),
        CONVEYOR_DATABASE_URL=url,
        CONVEYOR_SECRET_KEY=Fernet.generate_key().decode(),
        CONVEYOR_DEFAULT_WORK_POOL=pool,
    )
    s = Settings(prefect_api_url=api)
    inbox = s.data_dir / "in"
    inbox.mkdir(parents=True)
    (inbox / "items.csv").write_text(
        "id,name,price\n" + "".join(f"{i},item {i},{i * 1.25}\n" for i in range(100))
    )
    box = SecretBox(s.secret_keys())
    with session_scope(url) as session:
        src = catalog.create(
            "source",
            EndpointCreate(
                name="csv", type="filesystem", config={"path": str(inbox), "file_pattern": "*.csv"}
            ),
            session=session,
            actor=SYSTEM,
            box=box,
        )
        dst = catalog.create(
            "destination",
            EndpointCreate(name="duck", type="duckdb", config={}),
            session=session,
            actor=SYSTEM,
            box=box,
        )
        c = connectors.create(
            ConnectorCreate(name="items", source_id=src.id, destination_id=dst.id),
            session=session,
            actor=SYSTEM,
            box=box,
        )
        pg = catalog.create(
            "source",
            EndpointCreate(
                name="pg",
                type="sql_database",
                config={"connection_string": pg_url, "tables": ["items"]},
            ),
            session=session,
            actor=SYSTEM,
            box=box,
        )
        c2 = connectors.create(
            ConnectorCreate(name="pg-items", source_id=pg.id, destination_id=dst.id),
            session=session,
            actor=SYSTEM,
            box=box,
        )
        cid, cid_pg = int(c.id), int(c2.id)
    asyncio.run(run_once(s))
    return s, cid, cid_pg


def small_pg_table(url: str) -> str:
    """The 100-row table in the scratch database; its plain libpq URL."""
    import psycopg

    plain = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE items AS SELECT g AS id, 'item ' || g AS name, g * 1.25 AS price"
            " FROM generate_series(1, 100) g"
        )
    return plain


def floor_deployment(api: str, pool: str) -> str:
    """The trivial flow's deployment on the same pool (run from this directory)."""
    from prefect.client.orchestration import get_client

    async def make() -> str:
        async with get_client() as client:
            flow_id = await client.create_flow_from_name("noop")
            dep = await client.create_deployment(
                flow_id=flow_id,
                name="floor",
                entrypoint=f"{FLOOR_FLOW.name}:noop",
                work_pool_name=pool,
                job_variables={"working_dir": str(BENCH)},
            )
            return str(dep)

    os.environ["PREFECT_API_URL"] = api
    return asyncio.run(make())


def start_worker(s: Any, api: str, extra: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    assert s.secret_key is not None
    env = dict(os.environ)
    env.update(
        PREFECT_API_URL=api,
        CONVEYOR_HOME=str(s.home),
        CONVEYOR_DATABASE_URL=s.effective_database_url,
        CONVEYOR_SECRET_KEY=s.secret_key.get_secret_value(),
        CONVEYOR_DEFAULT_WORK_POOL=s.default_work_pool,
        PREFECT_WORKER_WEBSERVER_PORT=str(free_port()),
        **extra,
    )
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("conveyor")), "worker"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def flow_run(api: str, flow_run_id: str) -> Any:
    from uuid import UUID

    from prefect.client.orchestration import SyncPrefectClient

    with SyncPrefectClient(api=api) as client:
        return client.read_flow_run(UUID(flow_run_id))


def pending_at(api: str, flow_run_id: str) -> datetime | None:
    from uuid import UUID

    from prefect.client.orchestration import SyncPrefectClient

    with SyncPrefectClient(api=api) as client:
        states = client.read_flow_run_states(UUID(flow_run_id))
    times = [st.timestamp for st in states if st.type.value == "PENDING"]
    return min(times) if times else None


def wait(pred: Callable[[], Any], timeout: float = 180, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    raise SystemExit("timed out")


def run_now(s: Any, cid: int) -> dict[str, float]:
    from conveyor.db.models import ConnectorRun
    from conveyor.db.session import session_scope
    from conveyor.services import runs
    from conveyor.services.authz import SYSTEM
    from conveyor.sync.flow_runs import create_flow_run

    t0 = time.monotonic()
    created = datetime.now(UTC)
    run_id = int(runs.trigger(cid, settings=s, actor=SYSTEM, start=create_flow_run).id)

    def done() -> tuple[str, str | None] | None:
        with session_scope(s.effective_database_url) as session:
            r = session.get(ConnectorRun, run_id)
            assert r is not None
            if r.status in ("succeeded", "failed", "crashed", "cancelled"):
                return r.status, r.prefect_flow_run_id
        return None

    status, fr_id = wait(done)
    total = time.monotonic() - t0
    if status != "succeeded":
        raise SystemExit(f"run {run_id} ended {status}")
    assert fr_id is not None
    # The record closes just before the flow returns: wait for Prefect's end of it.
    fr = wait(lambda: (r := flow_run(s.prefect_api_url, fr_id)).end_time and r, step=0.2)
    pend = pending_at(s.prefect_api_url, fr_id) or fr.start_time
    return {
        "total": total,
        "poll": (pend - created).total_seconds(),
        "process": (fr.start_time - pend).total_seconds(),
        "flow": (fr.end_time - fr.start_time).total_seconds(),
    }


def run_floor(api: str, deployment_id: str) -> float:
    from conveyor.sync.flow_runs import create_flow_run

    t0 = time.monotonic()
    fr_id = create_flow_run(api, deployment_id, tags=[])

    def done() -> str | None:
        state = flow_run(api, fr_id).state
        return state.type.value if state and state.is_final() else None

    final = wait(done)
    if final != "COMPLETED":
        raise SystemExit(f"floor flow run ended {final}")
    return time.monotonic() - t0


def scheduled_delay(api: str, deployment_id: str, tags: list[str]) -> float:
    from conveyor.sync.flow_runs import create_flow_run

    at = datetime.now(UTC) + timedelta(seconds=15)
    fr_id = create_flow_run(api, deployment_id, tags=tags, scheduled_at=at)
    fr = wait(lambda: (r := flow_run(api, fr_id)).start_time and r, timeout=120, step=0.2)
    return float((fr.start_time - at).total_seconds())


def deployment_id_of(s: Any, cid: int) -> str:
    from conveyor.db.models import Connector
    from conveyor.db.session import session_scope

    with session_scope(s.effective_database_url) as session:
        c = session.get(Connector, cid)
        assert c is not None and c.prefect_deployment_id
        return str(c.prefect_deployment_id)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    extra = dict(kv.split("=", 1) for kv in args.worker_env)

    with tempfile.TemporaryDirectory(prefix="conveyor-latency-") as tmp:
        work = Path(tmp)
        with prefect_server("sqlite", work) as api, scratch_postgres() as pg:
            os.environ["PREFECT_API_URL"] = api
            home = work / "home"
            home.mkdir()
            pool = "latency"
            s, cid, cid_pg = setup_conveyor(home, api, pool, small_pg_table(pg))
            floor_id = floor_deployment(api, pool)
            conveyor_dep = deployment_id_of(s, cid)
            worker = start_worker(s, api, extra, work / "worker.log")
            try:
                run_now(s, cid)  # warm-up: the worker's first poll, cold file caches
                run_now(s, cid_pg)
                run_floor(api, floor_id)
                mine: list[dict[str, float]] = []
                direct: list[dict[str, float]] = []
                floor: list[float] = []
                for i in range(args.runs):
                    # Rotated, so that none always follows another on a busy machine.
                    steps = [
                        lambda: mine.append(run_now(s, cid)),
                        lambda: direct.append(run_now(s, cid_pg)),
                        lambda: floor.append(run_floor(api, floor_id)),
                    ]
                    for step in steps[i % 3 :] + steps[: i % 3]:
                        step()
                    print(
                        f"run {i + 1}: csv {mine[-1]}  pg {direct[-1]}  floor {floor[-1]:.2f}s",
                        flush=True,
                    )
                late_mine = [scheduled_delay(api, conveyor_dep, []) for _ in range(3)]
                late_floor = [scheduled_delay(api, floor_id, []) for _ in range(3)]
            except BaseException:
                print((work / "worker.log").read_text()[-6000:], file=sys.stderr)
                raise
            finally:
                os.killpg(worker.pid, signal.SIGTERM)
                try:
                    worker.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(worker.pid, signal.SIGKILL)

    def med(key: str, runs: list[dict[str, float]] = mine) -> float:
        return statistics.median(m[key] for m in runs)

    load = os.getloadavg()
    print()
    print(f"machine: {machine()}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"worker environment added: {extra or 'none (conveyor worker defaults)'}")
    n = args.runs
    print(f"| measure (median of {n}) | 100-row CSV (dlt) | 100-row PostgreSQL table (direct)"
          " | trivial flow (floor) |")  # fmt: skip
    print("|---|---:|---:|---:|")
    print(
        f"| Run now → succeeded | {med('total'):.2f} s | {med('total', direct):.2f} s"
        f" | {statistics.median(floor):.2f} s |"
    )
    for key, what in (
        ("poll", "created → Pending (worker poll)"),
        ("process", "Pending → Running (flow process start)"),
        ("flow", "Running → end (the flow)"),
    ):
        print(f"| … {what} | {med(key):.2f} s | {med(key, direct):.2f} s | |")
    print(
        f"| scheduled run, start - scheduled time (median of 3) | "
        f"{statistics.median(late_mine):.2f} s | | {statistics.median(late_floor):.2f} s |"
    )


if __name__ == "__main__":
    main()
