"""Health of each part of the platform, as the web app and ``conveyor doctor`` report it."""

from __future__ import annotations

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
