"""Connectors to Prefect deployments: Conveyor's reconciler beside raw Prefect client loops.

    .venv/bin/python bench/sync.py [--n 1000] [--backends sqlite,postgres] [--concurrency 4,8,16]
                                   [--repeat 3] [--no-layer]

For each Prefect server backend (SQLite, PostgreSQL), in one run:
(a) N connectors created through the REST API (`conveyor web`, 8 concurrent clients) until
    `conveyor reconcile` has every deployment in Prefect and each matches its spec hash,
    beside (i) a plain sequential loop of `PrefectClient.create_deployment` for the same N
    deployments and (ii) raw concurrent loops with 4, 8 and 16 requests in flight;
(b) a full reconcile pass over the N synced connectors with nothing to change (target < 2 s,
    no write calls);
(c) N schedule changes through the API until applied, beside the same N schedule changes
    sent by raw loops of `PrefectClient.update_deployment` (a PATCH of the schedules:
    sequential, 4, 8 and 16 in flight);
(a'), (c') the same work queued straight in the database and applied by one in-process
    outbox pass: the sync layer's own cost, without the HTTP API sharing the CPU.
Every create measurement gets a fresh Prefect server (same backend), so none pays for
another's deployments or flow runs. (a) and (c) time a running reconciler: each start of
`conveyor reconcile` is followed by its first full pass before the clock starts. The
Conveyor database is SQLite (the embedded default). With ``--repeat R`` each backend gets R
rounds of (a), (b), (c) and the raw loops, alternating whether the raw create loops or
Conveyor's go first; the table shows medians and each round's own ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psutil
from cryptography.fernet import Fernet
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).parent))
from _common import free_port, machine, scratch_postgres

POOL = "bench-pool"
CRON_A, CRON_B, CRON_C = "0 */6 * * *", "30 2 * * *", "45 3 * * *"


# --- a Prefect server per measurement ---------------------------------------------------

_SERVERS: dict[str, psutil.Process] = {}  # API URL → its `prefect server start` process


def server_cpu(api: str) -> float:
    """CPU seconds the Prefect server behind ``api`` has used so far (its children too).
    Read before and after a loop: the server's own cost of that loop's work."""
    root = _SERVERS[api]
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


@contextmanager
def prefect_server(backend: str, workdir: Path) -> Iterator[str]:
    """A fresh `prefect server start` on a free port; yields its API URL."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    home = Path(tempfile.mkdtemp(prefix="prefect-", dir=workdir))
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=api,
        PREFECT_UI_API_URL=api,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    with _maybe_postgres(backend) as db_url:
        if db_url:
            env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = db_url
        log = open(home / "server.log", "wb")  # noqa: SIM115
        cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
        proc = subprocess.Popen(
            [*cmd, "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_healthy(api + "/health", proc, home / "server.log")
            _SERVERS[api] = psutil.Process(proc.pid)
            yield api
        finally:
            _SERVERS.pop(api, None)
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.close()


@contextmanager
def _maybe_postgres(backend: str) -> Iterator[str | None]:
    if backend != "postgres":
        yield None
        return
    with scratch_postgres() as url:
        yield url.replace("postgresql+psycopg://", "postgresql+asyncpg://")


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"not healthy after {timeout}s: {url}")


# --- raw loops: the Prefect client and nothing else -------------------------------------


@dataclass
class FakeConnector:
    id: int
    name: str
    schedule: str
    timezone: str = "UTC"
    is_active: bool = True
    tags: list[str] = field(default_factory=list)
    work_pool_name: str | None = None
    work_queue_name: str | None = None
    deployment_name: str | None = None
    job_variables: dict[str, Any] | None = None


def _create_kwargs(flow_id: Any, i: int, cron: str) -> dict[str, Any]:
    """The same deployment Conveyor would create, as plain client arguments."""
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy, ConcurrencyOptions
    from prefect.client.schemas.schedules import CronSchedule

    from conveyor.sync.spec import PARAMETER_SCHEMA, build

    spec = build(
        FakeConnector(i, f"raw-{i}", cron), default_work_pool=POOL, default_work_queue="default"
    )
    return dict(
        flow_id=flow_id,
        name=spec.name,
        version=spec.version,
        description=spec.description,
        work_pool_name=spec.work_pool_name,
        work_queue_name=spec.work_queue_name,
        parameters=spec.parameters,
        tags=list(spec.tags),
        schedules=[DeploymentScheduleCreate(schedule=CronSchedule(cron=cron), active=True)],
        paused=False,
        concurrency_limit=1,
        concurrency_options=ConcurrencyOptions(collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
        entrypoint=spec.entrypoint,
        parameter_openapi_schema=PARAMETER_SCHEMA,
        enforce_parameter_schema=True,
    )


GAVE_UP: dict[str, int] = {}  # calls the client gave up on (after its own 5 retries)


async def _loop(items: list[Any], call: Callable[[Any], Awaitable[Any]], in_flight: int) -> float:
    """Seconds to ``call`` every item, ``in_flight`` at a time (1 = a plain loop).

    The client retries 503s itself (5 times, backing off); a call it gives up on is sent
    again, so every loop ends with all its work done, like Conveyor.
    """
    key = f"{call.__name__} {len(items)}@{in_flight}"

    async def once(item: Any) -> None:
        while True:
            try:
                await call(item)
                return
            except Exception:
                GAVE_UP[key] = GAVE_UP.get(key, 0) + 1

    t0 = time.perf_counter()
    if in_flight == 1:
        for item in items:
            await once(item)
    else:
        sem = asyncio.Semaphore(in_flight)

        async def one(item: Any) -> None:
            async with sem:
                await once(item)

        await asyncio.gather(*(one(item) for item in items))
    return time.perf_counter() - t0


async def raw_loop(api: str, ids: list[int], cron: str, in_flight: int) -> float:
    """Seconds to create deployments for ``ids`` with ``PrefectClient.create_deployment``."""
    from prefect.client.orchestration import PrefectClient

    from conveyor.sync.gateway import PrefectGateway

    async with PrefectGateway(api) as gw:  # set-up only, outside the timing
        await gw.ensure_work_pool(POOL)
    async with PrefectClient(api=api) as client:
        flow_id = await client.create_flow_from_name("run_connector_pipeline")

        async def create(i: int) -> None:
            await client.create_deployment(**_create_kwargs(flow_id, i, cron))

        return await _loop(ids, create, in_flight)


async def raw_update_loop(api: str, deployment_ids: list[str], cron: str, in_flight: int) -> float:
    """Seconds to give the deployments a new cron schedule with the client's
    ``update_deployment``: a PATCH of the schedules alone, the cheapest call the client has
    for it (about half the server's work of re-creating the deployment)."""
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.actions import DeploymentScheduleUpdate, DeploymentUpdate
    from prefect.client.schemas.schedules import CronSchedule

    async with PrefectClient(api=api) as client:

        async def update(dep_id: str) -> None:
            schedule = DeploymentScheduleUpdate(
                schedule=CronSchedule(cron=cron, timezone="UTC"), active=True
            )
            await client.update_deployment(UUID(dep_id), DeploymentUpdate(schedules=[schedule]))

        return await _loop(deployment_ids, update, in_flight)


# --- Conveyor: the API, the outbox, the reconciler --------------------------------------


class Conveyor:
    """`conveyor web` and `conveyor reconcile` on one SQLite database, against ``api``."""

    def __init__(self, api: str, workdir: Path) -> None:
        self.api = api
        self.dir = Path(tempfile.mkdtemp(prefix="conveyor-", dir=workdir))
        self.env = dict(os.environ)
        self.env.update(
            CONVEYOR_HOME=str(self.dir),
            CONVEYOR_DATABASE_URL=f"sqlite:///{self.dir / 'conveyor.db'}",
            CONVEYOR_SECRET_KEY=Fernet.generate_key().decode(),
            CONVEYOR_DEFAULT_WORK_POOL=POOL,
            CONVEYOR_LOG_LEVEL="WARNING",
            PREFECT_API_URL=api,
        )
        self.port = free_port()
        self.web: subprocess.Popen[bytes] | None = None
        self.reconciler: subprocess.Popen[bytes] | None = None
        self.token = ""

    def settings(self) -> Any:
        from conveyor.settings import Settings

        return Settings(
            home=self.dir,
            database_url=self.env["CONVEYOR_DATABASE_URL"],
            secret_key=SecretStr(self.env["CONVEYOR_SECRET_KEY"]),
            prefect_api_url=self.api,
            default_work_pool=POOL,
        )

    def start_db(self) -> None:
        from conveyor.db.migrations import upgrade

        upgrade(self.env["CONVEYOR_DATABASE_URL"])

    def start(self) -> None:
        from conveyor.db.session import session_scope
        from conveyor.domain.models import UserCreate
        from conveyor.services import users
        from conveyor.services.authz import SYSTEM

        url = self.env["CONVEYOR_DATABASE_URL"]
        self.start_db()
        with session_scope(url) as s:
            users.create_user(
                UserCreate(username="bench", password="a-long-password", role="admin"),
                session=s,
                actor=SYSTEM,
            )
            _row, self.token = users.create_token("bench", "bench", session=s, actor=SYSTEM)
        conveyor = str(Path(sys.executable).parent / "conveyor")
        with open(self.dir / "web.log", "ab") as log:
            self.web = subprocess.Popen(
                [conveyor, "web", "--port", str(self.port)], env=self.env, stdout=log, stderr=log
            )
        self.start_reconciler()
        _wait_healthy(f"http://127.0.0.1:{self.port}/api/v1/health", self.web, self.dir / "web.log")

    def start_reconciler(self) -> None:
        conveyor = str(Path(sys.executable).parent / "conveyor")
        started = datetime.now(UTC)
        with open(self.dir / "reconciler.log", "ab") as log:
            self.reconciler = subprocess.Popen(
                [conveyor, "reconcile", "--poll", "0.2"], env=self.env, stdout=log, stderr=log
            )
        self._wait_first_full_pass(started)

    def _wait_first_full_pass(self, since: datetime, timeout: float = 120) -> None:
        """Until the new reconciler has finished its first full pass (it starts with one):
        timings are of a running reconciler, not of its start-up."""
        from conveyor.db.models import Lease
        from conveyor.db.session import session_scope
        from conveyor.sync.store import LEASE_NAME

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.reconciler is not None
            if self.reconciler.poll() is not None:
                log = (self.dir / "reconciler.log").read_text()
                raise RuntimeError(f"reconciler exited: {log[-2000:]}")
            with session_scope(self.env["CONVEYOR_DATABASE_URL"]) as s:
                lease = s.get(Lease, LEASE_NAME)
                last = ((lease.info or {}) if lease else {}).get("last_full_pass") or {}
            finished = last.get("finished_at")
            if finished and datetime.fromisoformat(last["started_at"]) >= since:
                # Nothing to repair, else the timing that follows would include it.
                assert not last.get("repairs") and not last.get("failed"), last
                return
            time.sleep(0.1)
        raise RuntimeError(f"reconciler made no full pass in {timeout}s")

    def stop_reconciler(self) -> None:
        if self.reconciler and self.reconciler.poll() is None:
            self.reconciler.terminate()
            self.reconciler.wait(timeout=60)
        self.reconciler = None

    def stop(self) -> None:
        self.stop_reconciler()
        if self.web and self.web.poll() is None:
            self.web.terminate()
            self.web.wait(timeout=30)

    def sync_counts(self) -> tuple[int, int]:
        from sqlalchemy import func, select

        from conveyor.db.models import Connector, OutboxEntry
        from conveyor.db.session import session_scope

        with session_scope(self.env["CONVEYOR_DATABASE_URL"]) as s:
            synced = s.scalar(select(func.count()).where(Connector.sync_status == "synced"))
            queued = s.scalar(select(func.count()).select_from(OutboxEntry))
        return int(synced or 0), int(queued or 0)

    def deployment_ids(self) -> list[str]:
        from sqlalchemy import select

        from conveyor.db.models import Connector
        from conveyor.db.session import session_scope

        with session_scope(self.env["CONVEYOR_DATABASE_URL"]) as s:
            return [str(d) for d in s.scalars(select(Connector.prefect_deployment_id))]

    def wait_converged(self, n: int, timeout: float = 3600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            synced, queued = self.sync_counts()
            if synced == n and queued == 0:
                return
            time.sleep(0.05)  # two cheap counts: the poll adds at most 50 ms to a figure
        raise RuntimeError(f"not converged after {timeout}s: {self.sync_counts()}")

    async def api_calls(
        self, calls: list[tuple[str, str, dict[str, Any]]], clients: int = 8
    ) -> list[Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        sem = asyncio.Semaphore(clients)
        base = f"http://127.0.0.1:{self.port}/api/v1"
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:

            async def one(method: str, path: str, body: dict[str, Any]) -> Any:
                async with sem:
                    resp = await client.request(method, path, json=body)
                    if resp.status_code >= 300:
                        raise RuntimeError(f"{method} {path}: {resp.status_code} {resp.text}")
                    return resp.json()

            return await asyncio.gather(*(one(*c) for c in calls))

    async def verify(self, n: int) -> None:
        """Every connector's deployment exists once and hashes like its spec."""
        from sqlalchemy import select

        from conveyor.db.models import Connector
        from conveyor.db.session import session_scope
        from conveyor.sync.gateway import PrefectGateway
        from conveyor.sync.spec import build

        with session_scope(self.env["CONVEYOR_DATABASE_URL"]) as s:
            want = {
                c.id: build(c, default_work_pool=POOL, default_work_queue="default").hash
                for c in s.scalars(select(Connector))
            }
        async with PrefectGateway(self.api) as gw:
            seen = await gw.list_deployments()
        got: dict[int | None, list[str]] = {}
        for d in seen:
            got.setdefault(d.connector_id, []).append(d.hash)
        assert len(want) == n and len(seen) == n, (len(want), len(seen))
        bad = [cid for cid, h in want.items() if got.get(cid) != [h]]
        assert not bad, f"{len(bad)} deployments do not match, e.g. {bad[:5]}"

    def fill(self, n: int, cron: str) -> list[int]:
        """N connectors written straight through the services (no HTTP), queued for sync."""
        from conveyor.db.session import session_scope
        from conveyor.domain.models import ConnectorCreate, EndpointCreate
        from conveyor.secrets import SecretBox
        from conveyor.services import catalog, connectors
        from conveyor.services.authz import SYSTEM

        box = SecretBox(self.settings().secret_keys())
        with session_scope(self.env["CONVEYOR_DATABASE_URL"]) as s:
            config = {"host": "db", "database": "d", "username": "u"}
            src = catalog.create(
                "source",
                EndpointCreate(name="warehouse", type="sql_database", config=config),
                session=s,
                actor=SYSTEM,
                box=box,
            )
            dst = catalog.create(
                "destination",
                EndpointCreate(name="lake", type="duckdb", config={}),
                session=s,
                actor=SYSTEM,
                box=box,
            )
            made = [
                connectors.create(
                    ConnectorCreate(
                        name=f"c-{i}",
                        source_id=src.id,
                        destination_id=dst.id,
                        schedule=cron,
                        source_config_override={"tables": ["orders"]},
                    ),
                    session=s,
                    actor=SYSTEM,
                    box=box,
                ).id
                for i in range(n)
            ]
        return made

    def reschedule(self, ids: list[int], cron: str) -> None:
        from conveyor.db.session import session_scope
        from conveyor.domain.models import ConnectorPatch
        from conveyor.secrets import SecretBox
        from conveyor.services import connectors
        from conveyor.services.authz import SYSTEM

        box = SecretBox(self.settings().secret_keys())
        with session_scope(self.env["CONVEYOR_DATABASE_URL"]) as s:
            for cid in ids:
                connectors.update(
                    cid, ConnectorPatch(schedule=cron), session=s, actor=SYSTEM, box=box
                )

    async def outbox_pass(self) -> float:
        """Seconds for one in-process outbox pass over everything queued."""
        from conveyor.sync.gateway import PrefectGateway
        from conveyor.sync.reconciler import Reconciler

        settings = self.settings()
        async with PrefectGateway(self.api, max_in_flight=settings.reconcile_concurrency) as gw:
            await gw.ensure_work_pool(POOL)  # as a running reconciler has already done
            await gw._flow()
            t0 = time.perf_counter()
            report = await Reconciler(settings, gw).outbox_pass()
            took = time.perf_counter() - t0
        assert report.failed == 0, report.errors[:3]
        print(
            f"  calls in flight, the limits it had: {gw.in_flight.policy.changes}; "
            f"retried after a busy answer: {gw.retried or 'none'}",
            flush=True,
        )
        return took

    async def noop_pass(self) -> tuple[float, int, int]:
        """One in-process full pass: seconds, write calls, connectors found unchanged."""
        from conveyor.sync.gateway import PrefectGateway
        from conveyor.sync.reconciler import Reconciler

        async with PrefectGateway(self.api) as gw:
            await gw.ensure_work_pool(POOL)  # as a running reconciler has already done
            await gw._flow()
            gw.calls.clear()
            t0 = time.perf_counter()
            report = await Reconciler(self.settings(), gw).full_pass()
            return time.perf_counter() - t0, gw.write_calls, report.unchanged


# --- one backend -----------------------------------------------------------------------


def raw_creates(
    backend: str, n: int, concurrency: list[int], workdir: Path
) -> tuple[dict[int, float], dict[int, float]]:
    """Every raw create loop once, each on a fresh server: seconds, and the server's CPU
    seconds, per loop."""
    raw: dict[int, float] = {}
    cpu: dict[int, float] = {}
    for k in [1, *concurrency]:
        with prefect_server(backend, workdir) as api:
            before = server_cpu(api)
            raw[k] = asyncio.run(raw_loop(api, list(range(1, n + 1)), CRON_A, k))
            cpu[k] = server_cpu(api) - before
        print(
            f"[{backend}] raw create, {k} in flight: {raw[k]:.1f} s (server CPU {cpu[k]:.1f} s)",
            flush=True,
        )
    return raw, cpu


def raw_reschedules(
    backend: str, api: str, dep_ids: list[str], concurrency: list[int]
) -> tuple[dict[int, float], dict[int, float]]:
    """Raw schedule changes of Conveyor's deployments, each loop to another cron; the last
    loop sets the cron Conveyor's connectors have (CRON_A), so that a reconciler started
    afterwards finds nothing to repair."""
    loops = [1, *concurrency]
    crons = [(CRON_A, CRON_C)[(len(loops) - 1 - j) % 2] for j in range(len(loops))]
    out: dict[int, float] = {}
    cpu: dict[int, float] = {}
    for k, c in zip(loops, crons, strict=True):
        before = server_cpu(api)
        out[k] = asyncio.run(raw_update_loop(api, dep_ids, c, k))
        cpu[k] = server_cpu(api) - before
    print(
        f"[{backend}] raw reschedule: { {k: round(v, 1) for k, v in out.items()} } "
        f"(server CPU { {k: round(v, 1) for k, v in cpu.items()} })",
        flush=True,
    )
    return out, cpu


def conveyor_round(
    backend: str, n: int, concurrency: list[int], workdir: Path, *, conveyor_first: bool = True
) -> dict[str, Any]:
    """On one fresh server: (a) creates through the API, (b) no-op passes, (c) schedule
    changes through the API and the raw schedule-change loops on the same deployments,
    Conveyor's first or last, so that the order of the loops favours neither."""
    out: dict[str, Any] = {}
    with prefect_server(backend, workdir) as api:
        conv = Conveyor(api, workdir)
        try:
            conv.start()
            src, dst = asyncio.run(
                conv.api_calls(
                    [
                        (
                            "POST",
                            "/sources",
                            {
                                "name": "warehouse",
                                "type": "sql_database",
                                "config": {
                                    "host": "db",
                                    "port": 5432,
                                    "database": "d",
                                    "username": "u",
                                },
                            },
                        ),
                        ("POST", "/destinations", {"name": "lake", "type": "duckdb", "config": {}}),
                    ]
                )
            )
            body = {
                "source_id": src["id"],
                "destination_id": dst["id"],
                "schedule": CRON_A,
                "source_config_override": {"tables": ["orders"]},
            }
            cpu0 = server_cpu(api)
            t0 = time.perf_counter()
            made = asyncio.run(
                conv.api_calls(
                    [("POST", "/connectors", {**body, "name": f"c-{i}"}) for i in range(n)]
                )
            )
            api_done = time.perf_counter() - t0
            conv.wait_converged(n)
            out["conveyor_create"] = time.perf_counter() - t0
            out["conveyor_create_server_cpu"] = server_cpu(api) - cpu0
            out["conveyor_create_api_part"] = api_done
            asyncio.run(conv.verify(n))
            print(f"[{backend}] conveyor create: {out['conveyor_create']:.1f} s", flush=True)

            conv.stop_reconciler()
            passes = [asyncio.run(conv.noop_pass()) for _ in range(3)]
            assert all(p[1] == 0 and p[2] == n for p in passes), passes
            out["noop_pass"] = [round(p[0], 3) for p in passes]
            print(f"[{backend}] no-op pass: {out['noop_pass']} s, 0 write calls", flush=True)

            cids = [c["id"] for c in made]
            dep_ids = conv.deployment_ids()
            if not conveyor_first:
                out["raw_reschedule"], out["raw_reschedule_server_cpu"] = raw_reschedules(
                    backend, api, dep_ids, concurrency
                )
            conv.start_reconciler()
            cpu0 = server_cpu(api)
            t0 = time.perf_counter()
            asyncio.run(
                conv.api_calls([("PATCH", f"/connectors/{c}", {"schedule": CRON_B}) for c in cids])
            )
            conv.wait_converged(n)
            out["conveyor_reschedule"] = time.perf_counter() - t0
            out["conveyor_reschedule_server_cpu"] = server_cpu(api) - cpu0
            asyncio.run(conv.verify(n))
            print(
                f"[{backend}] conveyor reschedule: {out['conveyor_reschedule']:.1f} s", flush=True
            )
            conv.stop_reconciler()
            if conveyor_first:
                out["raw_reschedule"], out["raw_reschedule_server_cpu"] = raw_reschedules(
                    backend, api, dep_ids, concurrency
                )
        finally:
            conv.stop()
    return out


def layer_round(backend: str, n: int, workdir: Path) -> dict[str, float]:
    """The sync layer alone: the same work queued straight in the database (no HTTP API
    sharing the two cores), applied by one in-process outbox pass."""
    with prefect_server(backend, workdir) as api:
        conv = Conveyor(api, workdir)
        conv.start_db()
        cids = conv.fill(n, CRON_A)
        out = {"layer_create": asyncio.run(conv.outbox_pass())}
        asyncio.run(conv.verify(n))
        conv.reschedule(cids, CRON_B)
        out["layer_reschedule"] = asyncio.run(conv.outbox_pass())
        asyncio.run(conv.verify(n))
    print(
        f"[{backend}] sync layer alone: create {out['layer_create']:.1f} s, "
        f"reschedule {out['layer_reschedule']:.1f} s",
        flush=True,
    )
    return out


def bench_backend(
    backend: str,
    n: int,
    concurrency: list[int],
    workdir: Path,
    *,
    layer: bool = True,
    repeat: int = 1,
) -> dict[str, Any]:
    """``repeat`` rounds, alternating which comes first (the raw loops or Conveyor), for
    the creates and for the schedule changes, so that a server or machine getting slower
    or faster during the run favours neither; the table shows medians, the JSON every
    round."""
    rounds: list[dict[str, Any]] = []
    for r in range(repeat):
        if r % 2 == 0:
            raw, raw_cpu = raw_creates(backend, n, concurrency, workdir)
            conv = conveyor_round(backend, n, concurrency, workdir, conveyor_first=False)
        else:
            conv = conveyor_round(backend, n, concurrency, workdir, conveyor_first=True)
            raw, raw_cpu = raw_creates(backend, n, concurrency, workdir)
        rounds.append({"raw_create": raw, "raw_create_server_cpu": raw_cpu, **conv})
    out: dict[str, Any] = {"backend": backend, "n": n, "rounds": rounds}
    med = statistics.median
    for key in (
        "raw_create",
        "raw_reschedule",
        "raw_create_server_cpu",
        "raw_reschedule_server_cpu",
    ):
        out[key] = {k: med(rd[key][k] for rd in rounds) for k in rounds[0][key]}
    for key in (
        "conveyor_create",
        "conveyor_create_api_part",
        "conveyor_create_server_cpu",
        "conveyor_reschedule",
        "conveyor_reschedule_server_cpu",
    ):
        out[key] = med(rd[key] for rd in rounds)
    out["noop_pass"] = [t for rd in rounds for t in rd["noop_pass"]]
    if layer:
        out.update(layer_round(backend, n, workdir))
    return out


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| Prefect DB | N | measurement | Conveyor | raw sequential | raw 4 / 8 / 16 in flight "
        "| best raw ÷ Conveyor |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        raw = r["raw_create"]  # medians over the rounds
        best = min(raw.values())  # the best raw loop, sequential included
        conc = " / ".join(f"{raw[k]:.1f} s" for k in sorted(raw) if k != 1)
        lines.append(
            f"| {r['backend']} | {r['n']} | (a) create until converged | "
            f"{r['conveyor_create']:.1f} s ({r['n'] / r['conveyor_create']:.1f}/s) | "
            f"{raw[1]:.1f} s ({r['n'] / raw[1]:.1f}/s) | {conc} | "
            f"{best / r['conveyor_create']:.2f} |"
        )
        lines.append(
            f"| {r['backend']} | {r['n']} | (b) no-op full pass | "
            f"{statistics.median(r['noop_pass']):.2f} s (median of {len(r['noop_pass'])}; "
            f"worst {max(r['noop_pass']):.2f} s; 0 writes) | - | - | - |"
        )
        if "layer_create" in r:
            lines.append(
                f"| {r['backend']} | {r['n']} | (a') same, queued in the DB, sync layer only | "
                f"{r['layer_create']:.1f} s | {raw[1]:.1f} s | {conc} | "
                f"{best / r['layer_create']:.2f} |"
            )
        rr = r["raw_reschedule"]
        best_r = min(rr.values())
        conc_r = " / ".join(f"{rr[k]:.1f} s" for k in sorted(rr) if k != 1)
        lines.append(
            f"| {r['backend']} | {r['n']} | (c) schedule changes until applied | "
            f"{r['conveyor_reschedule']:.1f} s | {rr[1]:.1f} s | {conc_r} | "
            f"{best_r / r['conveyor_reschedule']:.2f} |"
        )
        if "layer_reschedule" in r:
            lines.append(
                f"| {r['backend']} | {r['n']} | (c') same, sync layer only | "
                f"{r['layer_reschedule']:.1f} s | {rr[1]:.1f} s | {conc_r} | "
                f"{best_r / r['layer_reschedule']:.2f} |"
            )
    lines.append("")
    lines.append("Prefect server CPU for the same work (medians; the sync layer should add none):")
    for r in results:
        for label, mine, raw_key in (
            ("(a) creates", "conveyor_create", "raw_create"),
            ("(c) schedule changes", "conveyor_reschedule", "raw_reschedule"),
        ):
            raw_cpu = r[f"{raw_key}_server_cpu"]
            loops = " / ".join(f"{raw_cpu[k]:.1f}" for k in sorted(raw_cpu))
            lines.append(
                f"- {r['backend']}, {label}: Conveyor {r[f'{mine}_server_cpu']:.1f} s "
                f"(busy {r[f'{mine}_server_cpu'] / r[mine]:.0%} of its time); raw loops "
                f"{'/'.join(str(k) for k in sorted(raw_cpu))} in flight: {loops} s"
            )
    for r in results:
        if len(r["rounds"]) < 2:
            continue
        lines.append("")
        lines.append(f"{r['backend']}, round by round (best raw in that round ÷ Conveyor):")
        for i, rd in enumerate(r["rounds"], 1):
            a, c = min(rd["raw_create"].values()), min(rd["raw_reschedule"].values())
            lines.append(
                f"- round {i}: (a) {rd['conveyor_create']:.1f} s vs {a:.1f} s = "
                f"{a / rd['conveyor_create']:.2f}; (c) {rd['conveyor_reschedule']:.1f} s vs "
                f"{c:.1f} s = {c / rd['conveyor_reschedule']:.2f}"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--concurrency", default="4,8,16")
    ap.add_argument(
        "--no-layer", action="store_true", help="skip (a') and (c'), the sync layer alone"
    )
    ap.add_argument(
        "--repeat", type=int, default=1, help="rounds per backend; the table shows medians"
    )
    args = ap.parse_args()
    concurrency = [int(x) for x in args.concurrency.split(",")]
    import prefect

    print(f"machine: {machine()}; Prefect {prefect.__version__}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="conveyor-bench-sync-"))
    results = [
        bench_backend(b, args.n, concurrency, workdir, layer=not args.no_layer, repeat=args.repeat)
        for b in args.backends.split(",")
        if b
    ]
    print(json.dumps(results, indent=1, default=str))
    print("raw calls the Prefect client gave up on:", GAVE_UP or "none")
    print(table(results))


if __name__ == "__main__":
    main()
