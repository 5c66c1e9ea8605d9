"""UI page server time with 1,000 connectors and 100,000 runs in PostgreSQL.

    .venv/bin/python bench/ui.py [--connectors 1000] [--runs 100000] [--samples 40]

Every page is requested in-process (TestClient) through a timing wrapper around the ASGI
app: the time from the request entering the app to the last byte of the response leaving
it, i.e. server time without the network. Baseline in the same run: the JSON API calls
that read the same data (connector list, one connector, its runs), so the ratio shows what
rendering HTML adds on top of the shared queries. Target: every page p90 < 100 ms.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, percentiles, scratch_postgres

TYPES = ("succeeded",) * 8 + ("failed", "cancelled")


class Timed:
    """ASGI wrapper recording how long the app took for each request (server time)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.last = 0.0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        started = time.perf_counter()
        await self.app(scope, receive, send)
        self.last = time.perf_counter() - started


def seed(url: str, connectors: int, runs: int) -> dict[str, Any]:
    """Bulk-insert sources, destinations, connectors, runs and audit entries."""
    from argon2 import PasswordHasher

    from conveyor.db.models import AuditEntry, Connector, ConnectorRun, Destination, Source, User
    from conveyor.db.session import get_engine

    rnd = random.Random(7)
    now = datetime.now(UTC)
    engine = get_engine(url)
    with engine.begin() as conn:
        conn.execute(
            insert(User),
            [
                {
                    "username": "alice",
                    "password_hash": PasswordHasher().hash("bench-password"),
                    "role": "admin",
                    "is_active": True,
                    "created_at": now,
                }
            ],
        )
        common = {"created_at": now, "updated_at": now, "created_by": "alice"}
        conn.execute(
            insert(Source),
            [
                {
                    "name": f"source-{i}",
                    "type": "sql_database",
                    "config": {"host": f"db{i}.internal", "database": "sales"},
                    **common,
                }
                for i in range(20)
            ],
        )
        conn.execute(
            insert(Destination),
            [
                {"name": f"destination-{i}", "type": "duckdb", "config": {}, **common}
                for i in range(5)
            ],
        )
        crons = ["0 * * * *", "0 */6 * * *", "30 2 * * *", "0 6 * * 1", None]
        conn.execute(
            insert(Connector),
            [
                {
                    "name": f"connector-{i:04d}",
                    "source_id": 1 + i % 20,
                    "destination_id": 1 + i % 5,
                    "source_config_override": {"tables": ["orders", "order_lines"]},
                    "destination_config_override": {},
                    "schedule": crons[i % len(crons)],
                    "timezone": "Europe/Paris" if i % 3 else "UTC",
                    "is_active": i % 10 != 0,
                    "tags": [f"team-{i % 7}"] + (["finance"] if i % 4 == 0 else []),
                    "sync_status": "error" if i % 50 == 0 else "synced",
                    "sync_error": "work pool missing" if i % 50 == 0 else None,
                    "prefect_deployment_id": f"00000000-0000-4000-8000-{i:012d}",
                    "managed_by": "file" if i % 9 == 0 else "ui",
                    "owner_id": 1,
                    "version": 1,
                    **common,
                }
                for i in range(connectors)
            ],
        )
        batch: list[dict[str, Any]] = []
        per = runs // connectors
        for i in range(runs):
            cid = 1 + i % connectors
            k = i // connectors
            started = now - timedelta(hours=6 * (per - k))
            status = rnd.choice(TYPES)
            batch.append(
                {
                    "connector_id": cid,
                    "status": status,
                    "trigger": "schedule",
                    "started_at": started,
                    "finished_at": started + timedelta(seconds=rnd.uniform(5, 120)),
                    "rows_loaded": None if status == "failed" else rnd.randint(1000, 90000),
                    "table_stats": {"orders": {"rows": 500}, "order_lines": {"rows": 1500}},
                    "schema_changes": [],
                    "log_summary": "extracted 2 tables\nloaded rows",
                    "error": "connection reset" if status == "failed" else None,
                    "created_at": started,
                }
            )
            if len(batch) == 10_000:
                conn.execute(insert(ConnectorRun), batch)
                batch = []
        if batch:
            conn.execute(insert(ConnectorRun), batch)
        conn.execute(
            insert(AuditEntry),
            [
                {
                    "at": now - timedelta(minutes=i),
                    "actor": "alice",
                    "action": "connector.update",
                    "entity_type": "connector",
                    "entity_id": str(1 + i % connectors),
                    "before": {"schedule": "0 * * * *"},
                    "after": {"schedule": "0 */6 * * *"},
                }
                for i in range(5000)
            ],
        )
    return {"run_id": runs // 2}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connectors", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=40)
    args = parser.parse_args()

    from fastapi.testclient import TestClient

    from conveyor.db.migrations import upgrade
    from conveyor.settings import Settings
    from conveyor.web.app import create_app
    from conveyor.web.ui.connectors import PAGE_SIZE

    with scratch_postgres() as url:
        upgrade(url)
        t0 = time.perf_counter()
        ids = seed(url, args.connectors, args.runs)
        print(
            f"seeded {args.connectors} connectors, {args.runs} runs in "
            f"{time.perf_counter() - t0:.0f} s",
            file=sys.stderr,
        )
        settings = Settings(
            database_url=url,
            secret_key=Fernet.generate_key().decode(),
            prefect_api_url="http://127.0.0.1:4200/api",
        )
        app = create_app(settings)
        timed = Timed(app)
        client = TestClient(timed)  # type: ignore[arg-type]
        page = client.get("/login").text
        token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        client.post(
            "/login",
            data={"username": "alice", "password": "bench-password", "csrf_token": token},
        )
        mid = args.connectors // 2
        cursor_page = client.get("/connectors").text
        cursor = cursor_page.split("cursor=", 1)[1].split('"', 1)[0]
        pages = [
            ("Connectors list (first 50)", "/connectors"),
            ("Connectors list, page 2", f"/connectors?cursor={cursor}"),
            ("Connectors list, search", "/connectors?q=connector-04"),
            ("Connectors list, filter sync error", "/connectors?status=sync:error"),
            ("Connectors list, filter paused", "/connectors?status=state:paused"),
            ("Connectors list, filter last run failed", "/connectors?status=run:failed"),
            ("Connectors list, filter tag", "/connectors?tag=finance"),
            ("Connectors list, htmx poll", "/connectors"),
            ("Connector detail (50 runs + chart)", f"/connectors/{mid}"),
            ("Connector detail, live part (poll)", f"/connectors/{mid}/live"),
            ("Connector edit form", f"/connectors/{mid + 1}/edit"),
            ("New connector form", "/connectors/new"),
            (
                "Schedule preview (htmx)",
                "/connectors/form/schedule?schedule_preset=cron&cron=*/5+*+*+*+*&timezone=Europe/Paris",
            ),
            ("Delete confirmation", f"/connectors/{mid}/delete"),
            ("Run page", f"/runs/{ids['run_id']}"),
            ("Sources list", "/sources"),
            ("Source detail (50 connectors use it)", "/sources/3"),
            ("Destination detail (200 connectors use it)", "/destinations/2"),
            ("Users", "/admin/users"),
            ("API tokens", "/admin/tokens"),
            ("Audit log", "/admin/audit"),
            ("Audit log, filtered", f"/admin/audit?entity_type=connector&entity_id={mid}"),
        ]
        baseline = [
            ("API: GET /api/v1/connectors (50)", f"/api/v1/connectors?limit={PAGE_SIZE}"),
            ("API: GET /api/v1/connectors/{id}", f"/api/v1/connectors/{mid}"),
            ("API: GET /api/v1/connectors/{id}/runs (50)", f"/api/v1/connectors/{mid}/runs"),
        ]
        targets = pages + baseline
        poll = {"HX-Request": "true", "HX-Target": "rows"}

        def get(label: str, path: str) -> float:
            resp = client.get(path, headers=poll if label == "Connectors list, htmx poll" else {})
            assert resp.status_code == 200, (path, resp.status_code, resp.text[:300])
            return timed.last

        for label, path in targets:  # warm caches (templates, query plans, the pool)
            for _ in range(3):
                get(label, path)
        # Round-robin, so a burst of load from elsewhere hits every page alike.
        samples: dict[str, list[float]] = {label: [] for label, _ in targets}
        load_before = os.getloadavg()[0]
        for _ in range(args.samples):
            for label, path in targets:
                samples[label].append(get(label, path))
        load_after = os.getloadavg()[0]
        rows = [(label, percentiles(samples[label])) for label, _ in targets]
        worst = max(p["p90"] for label, p in rows if not label.startswith("API"))
        print(f"Machine: {machine()}")
        print(
            f"Data: {args.connectors} connectors, {args.runs} runs, 5,000 audit entries; "
            f"{args.samples} samples per page, round-robin, after 3 warm-up requests; "
            f"load average {load_before:.1f} -> {load_after:.1f}; server time (ms).\n"
        )
        print("| page | p50 | p90 | p99 |")
        print("|---|---:|---:|---:|")
        for label, p in rows:
            print(f"| {label} | {p['p50']:.1f} | {p['p90']:.1f} | {p['p99']:.1f} |")
        api = {label: p["p50"] for label, p in rows if label.startswith("API")}
        ui = {label: p["p50"] for label, p in rows}
        list_ratio = ui["Connectors list (first 50)"] / api["API: GET /api/v1/connectors (50)"]
        detail_api = (
            api["API: GET /api/v1/connectors/{id}"]
            + api["API: GET /api/v1/connectors/{id}/runs (50)"]
        )
        detail_ratio = ui["Connector detail (50 runs + chart)"] / detail_api
        print(
            f"\nRatio UI / JSON API (p50): list {list_ratio:.2f}x, detail {detail_ratio:.2f}x "
            "(the detail page against the two API calls that read the same data)."
        )
        print(f"Slowest page p90: {worst:.1f} ms (target < 100 ms).")
        return 0 if worst < 100 else 1


if __name__ == "__main__":
    sys.exit(main())
