"""API load: concurrent clients for minutes on PostgreSQL, beside the HTTP+auth floor.

    .venv/bin/python bench/load.py [--clients 50] [--seconds 120] [--floor-seconds 30]
                                   [--connectors 200] [--no-reconciler] [--json FILE]

One `conveyor web` process (uvicorn, 1 worker) on a scratch PostgreSQL database with
``--connectors`` connectors and 20 runs each, and a `conveyor reconcile` process beside it
(Prefect unreachable: every change it takes is deferred with backoff, so it reads and
writes the same rows as the API). ``--clients`` asyncio clients (httpx, one keep-alive
connection each, a bearer token each) of three roles loop for ``--seconds``:

- every role reads: list connectors (first page of 50), read a connector, its run history
  (20 runs), health (no authentication);
- admins and editors also write their own connectors: create, change (schedule, tags,
  paused, description), delete.

Then the same clients call ``GET /api/v1/me`` for ``--floor-seconds``: the floor of the
stack (HTTP, routing, token auth) under the same concurrency. Any answer but the expected
status, or a transport error, is an error: the run prints them and exits 1. Prints
throughput and p50/p99 per operation and overall, as Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psutil
from cryptography.fernet import Fernet

sys.path.insert(0, str(Path(__file__).parent))
from _common import free_port, machine, scratch_postgres

ROLES = ("admin", "editor", "viewer")
# Of every 10 clients: 2 admins, 5 editors, 3 viewers.
ROLE_OF = ["admin"] * 2 + ["editor"] * 5 + ["viewer"] * 3
USERS_PER_ROLE = {"admin": 2, "editor": 5, "viewer": 3}
RUNS_PER_CONNECTOR = 20
CRONS = ["0 */6 * * *", "*/15 * * * *", "30 2 * * 1-5", "0 0 * * *"]
# Operation weights: readers, and what writers add.
FLOOR = "floor: GET /me (HTTP+auth)"
READS = {"list connectors": 20, "get connector": 25, "list runs": 15, "health": 5}
WRITES = {"create connector": 8, "patch connector": 12, "delete connector": 5}


@dataclass
class Results:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)
    error_count: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def error(self, op: str, what: str) -> None:
        self.error_count[op] += 1
        if len(self.errors) < 30:
            self.errors.append(f"{op}: {what}")


# --- setting up -----------------------------------------------------------------------


def prepare(db_url: str, env: dict[str, str], clients: int, connectors: int) -> dict[str, Any]:
    """Schema, users with one token per client, a source, a destination, connectors owned
    by the admins and editors, and runs — written through the services, as the API does."""
    os.environ.update(env)
    from conveyor.db.base import utcnow
    from conveyor.db.migrations import upgrade
    from conveyor.db.models import ConnectorRun
    from conveyor.db.session import dispose_all, session_scope
    from conveyor.domain.models import ConnectorCreate, EndpointCreate, UserCreate
    from conveyor.secrets import SecretBox
    from conveyor.services import catalog, users
    from conveyor.services import connectors as conn_svc
    from conveyor.services.authz import SYSTEM
    from conveyor.settings import Settings

    settings = Settings()
    url = settings.effective_database_url
    upgrade(url)
    box = SecretBox(settings.secret_keys())
    tokens: list[tuple[str, str]] = []  # (role, token) per client
    with session_scope(url) as s:
        names = {r: [f"{r}{i}" for i in range(USERS_PER_ROLE[r])] for r in ROLES}
        for role, who in names.items():
            for name in who:
                data = UserCreate(username=name, password="load-test-password", role=role)  # type: ignore[arg-type]
                users.create_user(data, session=s, actor=SYSTEM)
        for i in range(clients):
            role = ROLE_OF[i % len(ROLE_OF)]
            name = names[role][i % len(names[role])]
            _row, token = users.create_token(name, f"load-{i}", session=s, actor=SYSTEM)
            tokens.append((role, token))
        config = {"host": "db.example", "database": "d", "username": "u", "password": "pw"}
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
        owners = [
            users.actor_for(u)
            for n in names["admin"] + names["editor"]
            if (u := users.get_by_username(n, session=s)) is not None
        ]
        ids = []
        for i in range(connectors):
            c = conn_svc.create(
                ConnectorCreate(
                    name=f"seed-{i}",
                    source_id=src.id,
                    destination_id=dst.id,
                    schedule=CRONS[i % len(CRONS)],
                    tags=[f"team-{i % 7}"],
                    source_config_override={"tables": ["orders"]},
                ),
                session=s,
                actor=owners[i % len(owners)],
                box=box,
            )
            ids.append(c.id)
        s.flush()
        now = utcnow()
        for cid in ids:
            for k in range(RUNS_PER_CONNECTOR):
                start = now - timedelta(hours=6 * (RUNS_PER_CONNECTOR - k))
                ok = k % 5 != 0
                s.add(
                    ConnectorRun(
                        connector_id=cid,
                        status="succeeded" if ok else "failed",
                        trigger="schedule",
                        scheduled_for=start,
                        started_at=start,
                        finished_at=start + timedelta(seconds=30 + k),
                        rows_loaded=1000 * k if ok else None,
                        error=None if ok else "source refused the connection",
                        failure_class=None if ok else "transient",
                    )
                )
    dispose_all()
    return {"tokens": tokens, "ids": ids, "source_id": src.id, "destination_id": dst.id}


# --- the clients ----------------------------------------------------------------------


async def timed(
    res: Results, op: str, expect: int, send: Callable[[], Awaitable[httpx.Response]]
) -> httpx.Response | None:
    t0 = time.perf_counter()
    try:
        resp = await send()
    except httpx.HTTPError as exc:
        res.error(op, f"{type(exc).__name__}: {exc}")
        return None
    res.latencies[op].append(time.perf_counter() - t0)
    if resp.status_code != expect:
        res.error(op, f"HTTP {resp.status_code}: {resp.text[:300]}")
        return None
    return resp


async def client_loop(
    n: int, role: str, http: httpx.AsyncClient, seed: dict[str, Any], until: float, res: Results
) -> None:
    rng = random.Random(n)
    ids: list[int] = seed["ids"]
    mine: list[int] = []  # connectors this client created (only it changes them)
    weights = dict(READS) if role == "viewer" else {**READS, **WRITES}
    ops, w = list(weights), list(weights.values())
    made = 0
    while time.perf_counter() < until:
        op = rng.choices(ops, w)[0]
        if op in ("patch connector", "delete connector") and not mine:
            op = "create connector"
        if op == "list connectors":
            await timed(res, op, 200, lambda: http.get("/connectors", params={"limit": 50}))
        elif op == "get connector":
            cid = rng.choice(ids)
            await timed(res, op, 200, partial(http.get, f"/connectors/{cid}"))
        elif op == "list runs":
            cid = rng.choice(ids)
            runs = partial(http.get, f"/connectors/{cid}/runs", params={"limit": 20})
            await timed(res, op, 200, runs)
        elif op == "health":
            await timed(res, op, 200, lambda: http.get("/health"))
        elif op == "create connector":
            made += 1
            body = {
                "name": f"load-{n}-{made}",
                "source_id": seed["source_id"],
                "destination_id": seed["destination_id"],
                "schedule": rng.choice(CRONS),
                "tags": [f"client-{n}"],
                "source_config_override": {"tables": ["orders"]},
            }
            resp = await timed(res, op, 201, partial(http.post, "/connectors", json=body))
            if resp is not None:
                mine.append(resp.json()["id"])
        elif op == "patch connector":
            cid = rng.choice(mine)
            change = rng.choice(
                [
                    {"schedule": rng.choice(CRONS)},
                    {"tags": [f"client-{n}", f"t{rng.randrange(9)}"]},
                    {"is_active": rng.random() < 0.7},
                    {"description": f"changed at {time.time():.3f}"},
                ]
            )
            patch = partial(http.patch, f"/connectors/{cid}", json=change)
            await timed(res, op, 200, patch)
        elif op == "delete connector":
            cid = mine.pop(rng.randrange(len(mine)))
            await timed(res, op, 204, partial(http.delete, f"/connectors/{cid}"))


async def floor_loop(http: httpx.AsyncClient, until: float, res: Results) -> None:
    while time.perf_counter() < until:
        await timed(res, FLOOR, 200, partial(http.get, "/me"))


async def drive(
    base: str,
    seed: dict[str, Any],
    seconds: float,
    floor_seconds: float,
    mark: Callable[[str], None],
) -> tuple[Results, float, Results, float]:
    """The floor for half its time, the mix, the floor's other half: the same clients and
    connections throughout, and the floor on both sides of the mix (the machine's load
    drifts)."""
    tokens = seed["tokens"]
    https = [
        httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {t}"}, timeout=60)
        for _role, t in tokens
    ]
    mix, floor = Results(), Results()
    walls: dict[str, float] = {}

    async def phase(
        name: str, seconds: float, run: Callable[[int, float], Awaitable[None]]
    ) -> None:
        mark(name)
        t0 = time.perf_counter()
        await asyncio.gather(*(run(i, t0 + seconds) for i in range(len(tokens))))
        walls[name] = time.perf_counter() - t0

    try:
        await phase(
            "floor1", floor_seconds / 2, lambda i, until: floor_loop(https[i], until, floor)
        )
        await phase(
            "mix",
            seconds,
            lambda i, until: client_loop(i, tokens[i][0], https[i], seed, until, mix),
        )
        await phase(
            "floor2", floor_seconds / 2, lambda i, until: floor_loop(https[i], until, floor)
        )
        mark("end")
    finally:
        for h in https:
            await h.aclose()
    return mix, walls["mix"], floor, walls["floor1"] + walls["floor2"]


# --- reporting ------------------------------------------------------------------------


def quantile(ordered: list[float], q: float) -> float:
    """Nearest-rank quantile of sorted samples, in milliseconds."""
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))
    return ordered[k] * 1000


def rows(res: Results, wall: float) -> list[dict[str, Any]]:
    out = []
    every: list[float] = []
    for op in sorted(res.latencies):
        lat = sorted(res.latencies[op])
        every += lat
        out.append(_row(op, lat, res.error_count.get(op, 0), wall))
    if len(res.latencies) > 1:
        out.append(_row("all operations", sorted(every), sum(res.error_count.values()), wall))
    return out


def _row(op: str, lat: list[float], errors: int, wall: float) -> dict[str, Any]:
    return {
        "operation": op,
        "requests": len(lat),
        "errors": errors,
        "req_per_s": len(lat) / wall,
        "p50_ms": quantile(lat, 0.50),
        "p99_ms": quantile(lat, 0.99),
    }


class Marks:
    """CPU seconds of the web process, of this client process, and the load average, at
    each phase boundary: CPU per request holds on a busy machine where latency does not."""

    def __init__(self, web_pid: int) -> None:
        self.web = psutil.Process(web_pid)
        self.at: dict[str, tuple[float, float, float, float]] = {}

    def mark(self, name: str) -> None:
        t = self.web.cpu_times()
        self.at[name] = (
            t.user + t.system,
            time.process_time(),
            time.perf_counter(),
            os.getloadavg()[0],
        )

    def summary(self, requests: dict[str, int]) -> dict[str, Any]:
        segments = {"mix": [("mix", "floor2")], "floor": [("floor1", "mix"), ("floor2", "end")]}
        lines, figures = [], {}
        for phase, spans in segments.items():
            if any(a not in self.at or b not in self.at for a, b in spans):
                continue
            web = sum(self.at[b][0] - self.at[a][0] for a, b in spans)
            me = sum(self.at[b][1] - self.at[a][1] for a, b in spans)
            wall = sum(self.at[b][2] - self.at[a][2] for a, b in spans)
            load = (self.at[spans[0][0]][3], self.at[spans[-1][1]][3])
            n = max(requests.get(phase, 0), 1)
            f = {
                "web_cpu_share": web / wall,
                "web_cpu_ms_per_request": web / n * 1000,
                "client_cpu_ms_per_request": me / n * 1000,
                "load_average": load,
            }
            figures[phase] = f
            lines.append(
                f"{phase}: web process busy {f['web_cpu_share']:.0%} of one core, "
                f"{f['web_cpu_ms_per_request']:.1f} ms of its CPU per request; this client "
                f"{f['client_cpu_ms_per_request']:.1f} ms per request; load average "
                f"{load[0]:.1f} → {load[1]:.1f}"
            )
        return {"lines": lines, "figures": figures}


def wait_healthy(base: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"conveyor web exited with {proc.returncode}")
        try:
            if httpx.get(base + "/health/live", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("conveyor web did not answer within 60 s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--floor-seconds", type=float, default=30)
    ap.add_argument("--connectors", type=int, default=200)
    ap.add_argument("--no-reconciler", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    home = Path(f"/tmp/conveyor-load-{os.getpid()}")
    home.mkdir(exist_ok=True)
    with scratch_postgres() as db_url:
        env = {
            "CONVEYOR_DATABASE_URL": db_url,
            "CONVEYOR_SECRET_KEY": Fernet.generate_key().decode(),
            "CONVEYOR_HOME": str(home),
            "PREFECT_API_URL": "http://127.0.0.1:9/api",  # nothing listens: Prefect "down"
        }
        t_setup = time.perf_counter()
        seed = prepare(db_url, env, args.clients, args.connectors)
        print(f"database seeded in {time.perf_counter() - t_setup:.1f} s", flush=True)
        full_env = {**os.environ, **env}
        cli = [sys.executable, "-m", "conveyor.cli"]
        port = free_port()
        web_log = home / "web.log"
        procs = []
        with open(web_log, "ab") as log:
            web = subprocess.Popen(
                [*cli, "web", "--host", "127.0.0.1", "--port", str(port)],
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            procs.append(web)
            if not args.no_reconciler:
                procs.append(
                    subprocess.Popen(
                        [*cli, "reconcile"], env=full_env, stdout=log, stderr=subprocess.STDOUT
                    )
                )
        base = f"http://127.0.0.1:{port}/api/v1"
        marks = Marks(web.pid)
        try:
            wait_healthy(base, web)
            setup = time.perf_counter() - t_setup
            print(
                f"set up in {setup:.0f} s: {args.connectors} connectors, "
                f"{args.connectors * RUNS_PER_CONNECTOR} runs; {args.clients} clients for "
                f"{args.seconds:.0f} s, then the floor for {args.floor_seconds:.0f} s",
                flush=True,
            )
            mix, mix_wall, floor, floor_wall = asyncio.run(
                drive(base, seed, args.seconds, args.floor_seconds, marks.mark)
            )
            alive = [p.poll() is None for p in procs]
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                # The reconciler finishes its pass first: with Prefect unreachable, each
                # queued connector waits its turn to find the work pool (~1.5 s each).
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()

    table = rows(mix, mix_wall) + rows(floor, floor_wall)
    errors = sum(r["errors"] for r in table)
    cpu = marks.summary(
        {
            "mix": sum(map(len, mix.latencies.values())),
            "floor": len(floor.latencies[FLOOR]),
        }
    )
    print(f"\nmachine: {machine()}")
    print(
        f"{args.clients} clients ({', '.join(f'{ROLE_OF.count(r) * 10}% {r}s' for r in ROLES)})"
        f", {args.seconds:.0f} s mix + {args.floor_seconds:.0f} s floor, PostgreSQL, "
        f"reconciler {'off' if args.no_reconciler else 'on'}\n"
    )
    print("| operation | requests | errors | req/s | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in table:
        print(
            f"| {r['operation']} | {r['requests']} | {r['errors']} | {r['req_per_s']:.1f} "
            f"| {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |"
        )
    for line in cpu["lines"]:
        print(line)
    if args.json:
        out = {"machine": machine(), "rows": table, "cpu": cpu["figures"]}
        args.json.write_text(json.dumps(out, indent=2))
    if not all(alive):
        print(f"\nFAILED: a server process died during the run (log: {web_log})")
        return 1
    if errors:
        print(f"\nFAILED: {errors} errors; first ones:")
        for e in mix.errors + floor.errors:
            print("  " + e)
        tail = web_log.read_text(errors="replace").splitlines()[-40:]
        print(f"\nlast lines of {web_log}:\n" + "\n".join(tail))
        return 1
    print("\n0 errors")
    shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
