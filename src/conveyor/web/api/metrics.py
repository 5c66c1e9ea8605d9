"""GET /metrics: Prometheus text format, read from the database at scrape time.

Runs are written by flow processes and deployments by the reconciler, so no in-process
counter would see them; every figure here is one aggregate query on the shared database.
No authentication, as usual for scrape endpoints: it exposes counts and timings only.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func, literal, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from conveyor import __version__
from conveyor.db.models import Connector, ConnectorRun, Lease, OutboxEntry
from conveyor.db.session import session_scope
from conveyor.domain.vocabulary import RUN_STATUSES
from conveyor.services.health import RECONCILER_LEASE
from conveyor.settings import Settings

router = APIRouter(tags=["meta"])

DURATION_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)
SYNC_STATUSES = ("pending", "synced", "error")


def _duration_seconds(session: Session) -> ColumnElement[Any]:
    started, finished = ConnectorRun.started_at, ConnectorRun.finished_at
    if session.get_bind().dialect.name == "sqlite":
        return (func.julianday(finished) - func.julianday(started)) * 86400.0
    return func.extract("epoch", finished - started)


class DatabaseCollector(Collector):
    """Collects every Conveyor metric with a handful of aggregate queries per scrape."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("conveyor_info", "Conveyor version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        with session_scope(self.settings.effective_database_url) as session:
            yield from self._connectors(session)
            yield from self._runs(session)
            yield from self._reconcile(session)

    def _connectors(self, session: Session) -> Iterator[Metric]:
        rows: dict[str, int] = {
            status: n
            for status, n in session.execute(
                select(Connector.sync_status, func.count()).group_by(Connector.sync_status)
            )
        }
        g = GaugeMetricFamily(
            "conveyor_connectors", "Connectors by deployment sync status", labels=["sync_status"]
        )
        for status in sorted(set(SYNC_STATUSES) | set(rows)):
            g.add_metric([status], rows.get(status, 0))
        yield g
        active = session.scalar(select(func.count()).where(Connector.is_active.is_(True))) or 0
        yield GaugeMetricFamily(
            "conveyor_connectors_active", "Connectors whose schedule is active", value=active
        )

    def _runs(self, session: Session) -> Iterator[Metric]:
        rows: dict[str, int] = {
            status: n
            for status, n in session.execute(
                select(ConnectorRun.status, func.count()).group_by(ConnectorRun.status)
            )
        }
        g = GaugeMetricFamily("conveyor_runs", "Run records by status", labels=["status"])
        for status in sorted(set(RUN_STATUSES) | set(rows)):
            g.add_metric([status], rows.get(status, 0))
        yield g

        d = _duration_seconds(session)
        bucket_cols = [
            func.sum(case((d <= b, literal(1)), else_=literal(0))) for b in DURATION_BUCKETS
        ]
        q = (
            select(ConnectorRun.status, func.count(), func.sum(d), *bucket_cols)
            .where(ConnectorRun.started_at.is_not(None), ConnectorRun.finished_at.is_not(None))
            .group_by(ConnectorRun.status)
        )
        h = HistogramMetricFamily(
            "conveyor_run_duration_seconds",
            "Duration of finished runs, from start to end",
            labels=["status"],
        )
        for status, count, total, *cumulative in session.execute(q).all():
            buckets = [
                (str(b), int(c or 0)) for b, c in zip(DURATION_BUCKETS, cumulative, strict=True)
            ]
            buckets.append(("+Inf", int(count)))
            h.add_metric([status], buckets, float(total or 0.0))
        yield h

    def _reconcile(self, session: Session) -> Iterator[Metric]:
        now = datetime.now(UTC)
        oldest, pending = session.execute(
            select(func.min(OutboxEntry.created_at), func.count())
        ).one()
        lag = 0.0
        if oldest is not None:
            oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=UTC)
            lag = max(0.0, (now - oldest).total_seconds())
        yield GaugeMetricFamily(
            "conveyor_reconcile_lag_seconds",
            "Age of the oldest connector change not yet applied to Prefect (0 when none)",
            value=lag,
        )
        yield GaugeMetricFamily(
            "conveyor_outbox_pending", "Connector changes waiting for the reconciler", value=pending
        )
        lease = session.get(Lease, RECONCILER_LEASE)
        if lease is not None and lease.heartbeat_at is not None:
            yield GaugeMetricFamily(
                "conveyor_reconciler_heartbeat_age_seconds",
                "Seconds since the reconciler last reported alive",
                value=max(0.0, (now - lease.heartbeat_at).total_seconds()),
            )


def build_registry(settings: Settings) -> CollectorRegistry:
    """A registry of its own per app (tests build many apps in one process)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(settings))
    return registry


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    registry = getattr(request.app.state, "metrics_registry", None)
    if registry is None:
        registry = request.app.state.metrics_registry = build_registry(request.app.state.settings)
    body = await run_in_threadpool(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
