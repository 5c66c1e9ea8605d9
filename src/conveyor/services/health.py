"""Health of each part of the platform, as the web app and ``conveyor doctor`` report it.

The Prefect checks are small read-only httpx calls rather than ``sync/gateway.py``: the
gateway is the one writer of deployments, and a health probe should stay light (no
``prefect`` import in the web process) and answer within its timeout even when Prefect is
down (the Prefect client retries with backoff).
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import text

from conveyor.db.models import Lease
from conveyor.db.session import session_scope
from conveyor.settings import Settings

RECONCILER_LEASE = "reconciler"


@dataclass
class Component:
    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "detail": self.detail}


def check_database(settings: Settings) -> Component:
    try:
        with session_scope(settings.effective_database_url) as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means "not reachable"
        return Component("database", False, f"not reachable: {type(exc).__name__}")
    return Component("database", True, "reachable")


def prefect_auth_headers() -> dict[str, str]:
    """Basic auth for a Prefect server started with PREFECT_SERVER_API_AUTH_STRING: the
    client side's PREFECT_API_AUTH_STRING ("user:password"), as Prefect's client sends it.
    (Prefect's /health answers without it.)"""
    auth = os.environ.get("PREFECT_API_AUTH_STRING")
    if not auth:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}


def check_prefect(settings: Settings, timeout: float = 2.0) -> Component:
    if not settings.prefect_api_url:
        return Component("prefect", False, "PREFECT_API_URL is not set")
    try:
        resp = httpx.get(settings.prefect_api_url.rstrip("/") + "/health", timeout=timeout)
    except httpx.HTTPError as exc:
        return Component("prefect", False, f"not reachable: {type(exc).__name__}")
    if resp.status_code != 200:
        return Component("prefect", False, f"answered HTTP {resp.status_code}")
    return Component("prefect", True, "reachable")


def check_work_pool(settings: Settings, timeout: float = 2.0) -> Component:
    """The default work pool exists and is not paused."""
    name = settings.default_work_pool
    if not settings.prefect_api_url:
        return Component("work_pool", False, "PREFECT_API_URL is not set")
    try:
        resp = httpx.get(
            f"{settings.prefect_api_url.rstrip('/')}/work_pools/{name}",
            headers=prefect_auth_headers(),
            timeout=timeout,
        )
    except httpx.HTTPError as exc:
        return Component("work_pool", False, f"Prefect not reachable: {type(exc).__name__}")
    if resp.status_code == 404:
        return Component("work_pool", False, f"work pool '{name}' does not exist")
    if resp.status_code != 200:
        return Component("work_pool", False, f"Prefect answered HTTP {resp.status_code}")
    pool = resp.json()
    if pool.get("is_paused"):
        return Component("work_pool", False, f"work pool '{name}' is paused")
    limit = pool.get("concurrency_limit")
    return Component(
        "work_pool",
        True,
        f"'{name}' ({pool.get('type')}, "
        + (f"concurrency limit {limit})" if limit else "no concurrency limit)"),
    )


def check_worker(settings: Settings, timeout: float = 2.0) -> Component:
    """At least one worker of the default work pool is online (Prefect saw its heartbeat)."""
    name = settings.default_work_pool
    if not settings.prefect_api_url:
        return Component("worker", False, "PREFECT_API_URL is not set")
    try:
        resp = httpx.post(
            f"{settings.prefect_api_url.rstrip('/')}/work_pools/{name}/workers/filter",
            json={"limit": 50},
            headers=prefect_auth_headers(),
            timeout=timeout,
        )
    except httpx.HTTPError as exc:
        return Component("worker", False, f"Prefect not reachable: {type(exc).__name__}")
    if resp.status_code == 404:
        return Component("worker", False, f"work pool '{name}' does not exist")
    if resp.status_code != 200:
        return Component("worker", False, f"Prefect answered HTTP {resp.status_code}")
    workers = resp.json()
    online = [w for w in workers if w.get("status") == "ONLINE"]
    if not online:
        if not workers:
            return Component("worker", False, f"no worker has polled work pool '{name}'")
        last = max((w.get("last_heartbeat_time") or "") for w in workers)
        return Component("worker", False, f"no worker online (last heartbeat {last or 'never'})")
    return Component("worker", True, f"{len(online)} online ({online[0].get('name')})")


def check_reconciler(settings: Settings) -> Component:
    """Healthy when a reconciler renewed its heartbeat within three intervals."""
    try:
        with session_scope(settings.effective_database_url) as session:
            lease = session.get(Lease, RECONCILER_LEASE)
    except Exception as exc:
        return Component("reconciler", False, f"unknown: {type(exc).__name__}")
    if lease is None or lease.heartbeat_at is None:
        return Component("reconciler", False, "no reconciler has run yet")
    age = datetime.now(UTC) - lease.heartbeat_at
    limit = timedelta(seconds=max(3 * settings.reconcile_interval, 30))
    if age > limit:
        return Component("reconciler", False, f"last heartbeat {int(age.total_seconds())} s ago")
    return Component("reconciler", True, f"alive ({lease.holder})")


def check_all(settings: Settings) -> list[Component]:
    """Every component the platform needs, database first."""
    prefect = check_prefect(settings)
    if prefect.ok:
        pool, worker = check_work_pool(settings), check_worker(settings)
    else:  # one timeout is enough: do not wait for it three times
        pool = Component("work_pool", False, "unknown: Prefect is not reachable")
        worker = Component("worker", False, "unknown: Prefect is not reachable")
    return [check_database(settings), prefect, pool, worker, check_reconciler(settings)]
