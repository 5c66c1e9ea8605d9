"""Prefect scaled out as the chart runs it, as processes on this machine: two API servers
(`prefect server start --no-services`), one background-services process (`prefect server
services start`), one PostgreSQL database, Redis messaging (prefect-redis, the Redis on
127.0.0.1:6379), Conveyor's reconcilers and workers pointed at them.

    .venv/bin/python bench/prefect_topology.py [--n 200] [--live 4] [--minutes 3]

In one run:
1. Sync through one API server, then through two: two `conveyor reconcile` processes (one
   leader, one standby) reach Prefect through a round-robin TCP proxy (what a Kubernetes
   Service does) whose backends are [A], then [A, B]. Each round queues ``--n`` new
   connectors in the Conveyor database (PostgreSQL) and times them until every one is synced:
   deployment writes per second. Beside it, the same number of raw `create_deployment` calls,
   16 in flight, against A alone and split 8 + 8 over A and B at once.
2. Runs: ``--live`` connectors (a 100-row CSV into DuckDB) scheduled every minute for
   ``--minutes``, two `conveyor worker` processes (one polling A, one polling B).
Then the checks: as many Conveyor deployments in Prefect's database as connectors, no name
twice, every connector's deployment id among them; one flow run per deployment and scheduled
time (one scheduler); every flow run that ran has exactly one run record, succeeded.
Prints the figures as Markdown (the CPU seconds of each Prefect process beside each round).
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
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, func, select, text

sys.path.insert(0, str(Path(__file__).parent))
from _common import free_port, machine, scratch_postgres
from sync import POOL, raw_loop

HERE = Path(__file__).resolve()
CRON_SYNC = "0 */6 * * *"


# --- a round-robin TCP proxy (a Kubernetes Service, on loopback) -------------------------


def proxy_main(port: int, backends: list[int]) -> None:
    """Each new connection goes to the next backend port; bytes are copied both ways."""
    turn = 0

    async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            w.close()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal turn
        backend = backends[turn % len(backends)]
        turn += 1
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", backend)
        except OSError:
            w.close()
            return
        await asyncio.gather(pipe(r, uw), pipe(ur, w))

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


# --- processes ---------------------------------------------------------------------------


class Procs:
    """Started processes by name, each in its own session, stopped in reverse order."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs[name] = proc
        return proc

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name)

    def cpu(self, name: str) -> float:
        root = psutil.Process(self.procs[name].pid)
        total = 0.0
        for p in [root, *root.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def log_tail(self, name: str) -> str:
        return (self.dir / f"{name}.log").read_text(errors="replace")[-3000:]


def wait_for(pred: Any, what: str, timeout: float = 180, step: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


def healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


# --- the topology -------------------------------------------------------------------------


class Topology:
    def __init__(self, workdir: Path, prefect_db: str, conveyor_db: str, redis_db: int) -> None:
        self.dir = workdir
        self.procs = Procs(workdir)
        self.prefect_db = prefect_db.replace("postgresql+psycopg://", "postgresql+asyncpg://")
        self.prefect_sql = prefect_db
        self.conveyor_db = conveyor_db
        self.redis_db = redis_db
        self.ports = {"A": free_port(), "B": free_port()}
        self.proxy_port = free_port()
        self.proxy = f"http://127.0.0.1:{self.proxy_port}/api"
        self.secret = Fernet.generate_key().decode()
        self.home = workdir / "conveyor"
        self.home.mkdir()

    def prefect_env(self, name: str) -> dict[str, str]:
        home = self.dir / f"prefect-{name}"
        home.mkdir(exist_ok=True)
        env = dict(os.environ)
        env.update(
            PREFECT_HOME=str(home),
            PREFECT_API_DATABASE_CONNECTION_URL=self.prefect_db,
            PREFECT_API_DATABASE_MIGRATE_ON_START="false",
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_SERVER_UI_ENABLED="false",
            PREFECT_LOGGING_LEVEL="WARNING",
            # What the chart sets on API pods and the services pod (prefect-redis).
            PREFECT_MESSAGING_BROKER="prefect_redis.messaging",
            PREFECT_MESSAGING_CACHE="prefect_redis.messaging",
            PREFECT_SERVER_EVENTS_CAUSAL_ORDERING="prefect_redis.ordering",
            PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE="prefect_redis.lease_storage",
            PREFECT_REDIS_MESSAGING_URL=f"redis://127.0.0.1:6379/{self.redis_db}",
        )
        return env

    def conveyor_env(self, api: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            CONVEYOR_HOME=str(self.home),
            CONVEYOR_DATABASE_URL=self.conveyor_db,
            CONVEYOR_SECRET_KEY=self.secret,
            CONVEYOR_DEFAULT_WORK_POOL=POOL,
            CONVEYOR_LOG_LEVEL="WARNING",
            PREFECT_API_URL=api,
        )
        return env

    def start_prefect(self) -> None:
        prefect = [sys.executable, "-m", "prefect"]
        env = self.prefect_env("migrate")
        subprocess.run([*prefect, "server", "database", "upgrade", "-y"], env=env, check=True,
                       capture_output=True)  # fmt: skip
        self.procs.start("services", [*prefect, "server", "services", "start"],
                         self.prefect_env("services"))  # fmt: skip
        for name, port in self.ports.items():
            cmd = [*prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
            self.procs.start(f"api-{name}", [*cmd, "--no-services"], self.prefect_env(name))
        for name, port in self.ports.items():
            wait_for(lambda p=port: healthy(f"http://127.0.0.1:{p}/api/health"), f"API {name}")

    def api(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}/api"

    def set_backends(self, names: list[str]) -> None:
        self.procs.stop("proxy")
        ports = ",".join(str(self.ports[n]) for n in names)
        cmd = [sys.executable, str(HERE), "--proxy", str(self.proxy_port), ports]
        self.procs.start("proxy", cmd, dict(os.environ))
        wait_for(lambda: healthy(self.proxy + "/health"), "proxy")

    def start_conveyor_db(self) -> None:
        from conveyor.db.migrations import upgrade

        os.environ.update(self.conveyor_env(self.proxy))  # the services read the settings
        upgrade(self.conveyor_db)

    def start_reconcilers(self) -> None:
        conveyor = str(Path(sys.executable).with_name("conveyor"))
        since = datetime.now(UTC)
        for name in ("reconciler-1", "reconciler-2"):
            cmd = [conveyor, "reconcile", "--poll", "0.2"]
            self.procs.start(name, cmd, self.conveyor_env(self.proxy))
        wait_for(lambda: self.full_pass_since(since), "the leader's first full pass", 300, 0.2)

    def stop_reconcilers(self) -> None:
        for name in ("reconciler-1", "reconciler-2"):
            self.procs.stop(name)

    def full_pass_since(self, since: datetime) -> bool:
        from conveyor.db.models import Lease
        from conveyor.db.session import session_scope
        from conveyor.sync.store import LEASE_NAME

        with session_scope(self.conveyor_db) as s:
            lease = s.get(Lease, LEASE_NAME)
            last = ((lease.info or {}) if lease else {}).get("last_full_pass") or {}
        started = last.get("started_at")
        return bool(last.get("finished_at") and datetime.fromisoformat(started) >= since)

    def endpoints(self) -> tuple[int, int]:
        from conveyor.db.session import session_scope
        from conveyor.domain.models import EndpointCreate
        from conveyor.secrets import SecretBox
        from conveyor.services import catalog
        from conveyor.services.authz import SYSTEM
        from conveyor.settings import Settings

        inbox = self.home / "data" / "in"
        inbox.mkdir(parents=True)
        rows = "".join(f"{i},item {i},{i * 1.25}\n" for i in range(100))
        (inbox / "items.csv").write_text("id,name,price\n" + rows)
        box = SecretBox(Settings().secret_keys())
        with session_scope(self.conveyor_db) as s:
            config = {"path": str(inbox), "file_pattern": "*.csv"}
            src = catalog.create("source", EndpointCreate(name="csv", type="filesystem",
                                 config=config), session=s, actor=SYSTEM, box=box)  # fmt: skip
            dst = catalog.create("destination", EndpointCreate(name="duck", type="duckdb",
                                 config={}), session=s, actor=SYSTEM, box=box)  # fmt: skip
            return int(src.id), int(dst.id)

    def add_connectors(self, names: list[str], cron: str, ends: tuple[int, int]) -> list[int]:
        from conveyor.db.session import session_scope
        from conveyor.domain.models import ConnectorCreate
        from conveyor.secrets import SecretBox
        from conveyor.services import connectors
        from conveyor.services.authz import SYSTEM
        from conveyor.settings import Settings

        box = SecretBox(Settings().secret_keys())
        with session_scope(self.conveyor_db) as s:
            return [
                int(
                    connectors.create(
                        ConnectorCreate(
                            name=name, source_id=ends[0], destination_id=ends[1], schedule=cron
                        ),
                        session=s,
                        actor=SYSTEM,
                        box=box,
                    ).id
                )
                for name in names
            ]

    def synced(self) -> tuple[int, int, int]:
        from conveyor.db.models import Connector, OutboxEntry
        from conveyor.db.session import session_scope

        with session_scope(self.conveyor_db) as s:
            total = s.scalar(select(func.count()).select_from(Connector))
            ok = s.scalar(select(func.count()).where(Connector.sync_status == "synced"))
            queued = s.scalar(select(func.count()).select_from(OutboxEntry))
        return int(total or 0), int(ok or 0), int(queued or 0)


# --- the measurements ---------------------------------------------------------------------


PREFECT_PROCS = ("api-A", "api-B", "services", "proxy")


def cpu_snapshot(t: Topology) -> dict[str, float]:
    return {n: t.procs.cpu(n) for n in PREFECT_PROCS if n in t.procs.procs}


def sync_round(t: Topology, backends: list[str], n: int, ends: tuple[int, int]) -> dict[str, Any]:
    t.stop_reconcilers()
    t.set_backends(backends)
    t.start_reconcilers()
    tag = "".join(backends)
    before = cpu_snapshot(t)
    t0 = time.perf_counter()
    t.add_connectors([f"{tag}-{i}" for i in range(n)], CRON_SYNC, ends)
    queued = time.perf_counter() - t0

    def converged() -> bool:
        total, ok, q = t.synced()
        return total == ok and q == 0

    wait_for(converged, f"{n} connectors synced through {backends}", 3600, 0.05)
    seconds = time.perf_counter() - t0 - queued
    after = cpu_snapshot(t)
    cpu = {k: after[k] - before.get(k, 0.0) for k in after}
    return {"what": f"Conveyor, {len(backends)} API server(s)", "n": n, "seconds": seconds,
            "cpu": cpu}  # fmt: skip


def raw_round(t: Topology, backends: list[str], n: int, start: int) -> dict[str, Any]:
    """n raw creates, 16 in flight in all, split evenly over the given API servers at once."""
    ids = list(range(start, start + n))
    share = [ids[i :: len(backends)] for i in range(len(backends))]
    before = cpu_snapshot(t)

    async def go() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(
            *(raw_loop(t.api(b), part, CRON_SYNC, 16 // len(backends))
              for b, part in zip(backends, share, strict=True))
        )  # fmt: skip
        return time.perf_counter() - t0

    seconds = asyncio.run(go())
    after = cpu_snapshot(t)
    cpu = {k: after[k] - before.get(k, 0.0) for k in after}
    what = f"raw create_deployment, 16 in flight, {len(backends)} API server(s)"
    return {"what": what, "n": n, "seconds": seconds, "cpu": cpu}


def run_live(t: Topology, live: int, minutes: float, ends: tuple[int, int]) -> list[int]:
    conveyor = str(Path(sys.executable).with_name("conveyor"))
    for name in ("A", "B"):
        env = t.conveyor_env(t.api(name))
        env["PREFECT_WORKER_WEBSERVER_PORT"] = str(free_port())
        t.procs.start(f"worker-{name}", [conveyor, "worker"], env)
    ids = t.add_connectors([f"live-{i}" for i in range(live)], "* * * * *", ends)
    wait_for(lambda: t.synced()[0] == t.synced()[1], "live connectors synced", 300, 0.2)
    time.sleep(minutes * 60)
    return ids


def checks(t: Topology, live_ids: list[int]) -> dict[str, Any]:
    from conveyor.db.models import Connector, ConnectorRun
    from conveyor.db.session import session_scope

    with session_scope(t.conveyor_db) as s:
        deps = {str(d) for d in s.scalars(select(Connector.prefect_deployment_id))}
        n_connectors = s.scalar(select(func.count()).select_from(Connector))
        live_deps = [
            str(d)
            for d in s.scalars(
                select(Connector.prefect_deployment_id).where(Connector.id.in_(live_ids))
            )
        ]
        records = [
            (r.prefect_flow_run_id, r.status)
            for r in s.scalars(select(ConnectorRun).where(ConnectorRun.connector_id.in_(live_ids)))
        ]
    engine = create_engine(t.prefect_sql)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT d.id::text, d.name FROM deployment d JOIN flow f ON f.id = d.flow_id "
                "WHERE f.name = 'run_connector_pipeline' AND d.tags::text LIKE '%conveyor%'"
            )
        ).all()
        twice = conn.execute(
            text(
                "SELECT deployment_id, expected_start_time, count(*) FROM flow_run "
                "WHERE deployment_id::text = ANY(:ids) GROUP BY 1, 2 HAVING count(*) > 1"
            ),
            {"ids": live_deps},
        ).all()
        ran = conn.execute(
            text(
                "SELECT fr.id::text, fr.state_type, fr.start_time, fr.end_time, "
                "(SELECT min(s.timestamp) FROM flow_run_state s WHERE s.flow_run_id = fr.id "
                " AND s.type = 'PENDING') FROM flow_run fr "
                "WHERE fr.deployment_id::text = ANY(:ids) AND fr.start_time IS NOT NULL"
            ),
            {"ids": live_deps},
        ).all()
    engine.dispose()
    names = [r[1] for r in rows]
    by_run: dict[str, list[str]] = {}
    for flow_run_id, status in records:
        by_run.setdefault(str(flow_run_id), []).append(status)
    completed = [r for r in ran if r[1] == "COMPLETED"]
    occupancy = [(r[3] - r[4]).total_seconds() for r in completed if r[3] and r[4]]
    running = [(r[3] - r[2]).total_seconds() for r in completed if r[3] and r[2]]
    return {
        "connectors": int(n_connectors or 0),
        "deployments": len(rows),
        "names_twice": len(names) - len(set(names)),
        "missing": len(deps - {r[0] for r in rows}),
        "flow_runs_twice_for_a_time": len(twice),
        "flow_runs_started": len(ran),
        "completed": len(completed),
        "records_not_one": sum(1 for r in ran if len(by_run.get(r[0], [])) != 1),
        "completed_not_succeeded": sum(1 for r in completed if by_run.get(r[0]) != ["succeeded"]),
        "slot_seconds_median": statistics.median(occupancy) if occupancy else None,
        "running_seconds_median": statistics.median(running) if running else None,
    }


def report(results: list[dict[str, Any]], found: dict[str, Any], args: Any, load: str) -> str:
    out = [
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}, load average {load}",
        "",
        "| round | deployments | seconds | writes/s | CPU s: API A / API B / services / proxy |",
        "|---|---:|---:|---:|---|",
    ]
    for r in results:
        cpu = " / ".join(f"{r['cpu'].get(k, 0.0):.1f}" for k in PREFECT_PROCS)
        rate = r["n"] / r["seconds"]
        out.append(f"| {r['what']} | {r['n']} | {r['seconds']:.1f} | {rate:.1f} | {cpu} |")
    out += ["", "Checks: " + ", ".join(f"{k} = {v}" for k, v in found.items())]
    return "\n".join(out)


@contextmanager
def redis_db(db: int) -> Iterator[int]:
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=db)
    client.flushdb()
    try:
        yield db
    finally:
        client.flushdb()


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--proxy":
        proxy_main(int(sys.argv[2]), [int(p) for p in sys.argv[3].split(",")])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="connectors per sync round")
    parser.add_argument("--live", type=int, default=4, help="connectors scheduled every minute")
    parser.add_argument("--minutes", type=float, default=3.0, help="minutes of scheduled runs")
    parser.add_argument("--redis-db", type=int, default=13, help="Redis database (flushed)")
    parser.add_argument("--no-raw", action="store_true", help="skip the raw client rounds")
    args = parser.parse_args()

    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="topology-")))
        prefect_db = stack.enter_context(scratch_postgres())
        conveyor_db = stack.enter_context(scratch_postgres())
        db = stack.enter_context(redis_db(args.redis_db))
        t = Topology(workdir, prefect_db, conveyor_db, db)
        stack.callback(t.procs.stop_all)
        t.start_prefect()
        t.set_backends(["A"])
        t.start_conveyor_db()
        ends = t.endpoints()
        results = []
        if not args.no_raw:  # first: the reconcilers' first full pass removes these orphans
            results.append(raw_round(t, ["A"], args.n, 100_000))
            results.append(raw_round(t, ["A", "B"], args.n, 200_000))
            print(results[-2:], flush=True)
        for backends in (["A"], ["A", "B"]):
            results.append(sync_round(t, backends, args.n, ends))
            print(results[-1], flush=True)
        live = run_live(t, args.live, args.minutes, ends)
        t.stop_reconcilers()
        found = checks(t, live)
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        for name in list(t.procs.procs):
            if t.procs.procs[name].poll() is not None:
                print(f"{name} exited early:\n{t.procs.log_tail(name)}")
        print(report(results, found, args, load))


if __name__ == "__main__":
    main()
