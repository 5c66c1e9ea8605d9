"""API latency under concurrent clients, on PostgreSQL, beside two baselines.

    .venv/bin/python bench/api_latency.py [--clients 16] [--connectors 1000] [--requests 1600]

Measures p50/p90/p99 of connector create (POST /api/v1/connectors) and list
(GET /api/v1/connectors, first page of 50 with last runs) with 1,000 connectors in the
database, from 16 concurrent clients against one `conveyor web` process. Baselines in the
same run: (1) the same clients calling GET /api/v1/me (HTTP + auth floor of the stack);
(2) 16 threads running the equivalent SQL directly with psycopg (the database's own cost).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
from cryptography.fernet import Fernet

sys.path.insert(0, str(Path(__file__).parent))
from _common import free_port, machine, percentiles, scratch_postgres


def run_clients(clients: int, total: int, call: Callable[[int], None]) -> tuple[list[float], float]:
    """``total`` calls spread over ``clients`` threads; per-call latencies and wall time."""
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(total))

    def worker() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t0 = time.perf_counter()
            call(i)
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(worker) for _ in range(clients)]:
            f.result()
    return latencies, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--connectors", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=1600)
    args = ap.parse_args()

    with scratch_postgres() as db_url:
        env = {
            **os.environ,
            "CONVEYOR_DATABASE_URL": db_url,
            "CONVEYOR_SECRET_KEY": Fernet.generate_key().decode(),
            "CONVEYOR_HOME": "/tmp/conveyor-bench-home",
            "PREFECT_API_URL": "http://127.0.0.1:9/api",
        }
        cli = [sys.executable, "-m", "conveyor.cli"]
        subprocess.run([*cli, "db", "upgrade"], env=env, check=True, capture_output=True)
        subprocess.run(
            [*cli, "users", "create", "bench", "--role", "admin", "--password-stdin"],
            env=env,
            input=b"bench-password\n",
            check=True,
            capture_output=True,
        )
        token = subprocess.run(
            [*cli, "tokens", "create", "bench"], env=env, check=True, capture_output=True, text=True
        ).stdout.strip()
        port = free_port()
        web = subprocess.Popen(
            [*cli, "web", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}/api/v1"
        try:
            for _ in range(200):
                try:
                    if httpx.get(base + "/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            h = {"Authorization": f"Bearer {token}"}
            local = threading.local()

            def client() -> httpx.Client:
                if not hasattr(local, "c"):
                    local.c = httpx.Client(base_url=base, headers=h, timeout=30)
                return local.c  # type: ignore[no-any-return]

            src = httpx.post(
                base + "/sources",
                headers=h,
                json={
                    "name": "pg",
                    "type": "sql_database",
                    "config": {"host": "h", "database": "d", "username": "u", "password": "pw"},
                },
            ).json()
            dst = httpx.post(
                base + "/destinations",
                headers=h,
                json={"name": "duck", "type": "duckdb", "config": {}},
            ).json()

            def create(i: int, prefix: str = "seed") -> None:
                r = client().post(
                    "/connectors",
                    json={
                        "name": f"{prefix}-{i}",
                        "source_id": src["id"],
                        "destination_id": dst["id"],
                        "schedule": "0 */6 * * *",
                        "source_config_override": {"tables": ["orders"]},
                    },
                )
                assert r.status_code == 201, r.text

            print(f"seeding {args.connectors} connectors ...", flush=True)
            run_clients(args.clients, args.connectors, create)

            results = {}
            lat, wall = run_clients(args.clients, args.requests, lambda i: create(i, "bench"))
            results["POST /connectors (create)"] = (lat, wall)

            def list_(i: int) -> None:
                r = client().get("/connectors?limit=50")
                assert r.status_code == 200 and len(r.json()["items"]) == 50

            results["GET /connectors (list, 50)"] = run_clients(args.clients, args.requests, list_)

            def me(i: int) -> None:
                assert client().get("/me").status_code == 200

            results["baseline: GET /me (HTTP+auth floor)"] = run_clients(
                args.clients, args.requests, me
            )
        finally:
            web.terminate()
            web.wait(timeout=15)

        raw = db_url.replace("postgresql+psycopg://", "postgresql://")
        conns: dict[int, psycopg.Connection] = {}

        def sql_list(i: int) -> None:
            c = conns.setdefault(threading.get_ident(), psycopg.connect(raw))
            c.execute("SELECT * FROM connectors ORDER BY id LIMIT 51").fetchall()
            c.commit()

        results["baseline: raw SQL list (psycopg)"] = run_clients(
            args.clients, args.requests, sql_list
        )
        for c in conns.values():
            c.close()

    print(f"\nmachine: {machine()}")
    print(
        f"{args.clients} concurrent clients, {args.connectors} connectors seeded, "
        f"{args.requests} requests per case, PostgreSQL\n"
    )
    print("| case | p50 ms | p90 ms | p99 ms | req/s |\n|---|---:|---:|---:|---:|")
    for name, (lat, wall) in results.items():
        p = percentiles(lat)
        print(
            f"| {name} | {p['p50']:.1f} | {p['p90']:.1f} | {p['p99']:.1f} | {len(lat) / wall:.0f} |"
        )


if __name__ == "__main__":
    main()
