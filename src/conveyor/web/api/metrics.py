"""GET /metrics: Prometheus text format, read from the database at scrape time.

The figures come from ``services.metrics`` (aggregate queries on the shared database).
No session or API token, as usual for scrape endpoints: it exposes counts and timings only.
With ``CONVEYOR_METRICS_TOKEN`` set, a scraper must send ``Authorization: Bearer <token>``
(anything else is a 401), so a public ingress in front of the web app does not expose it.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from conveyor import __version__
from conveyor.domain.vocabulary import RUN_STATUSES
from conveyor.services import metrics as metrics_service
from conveyor.services import notify_delivery
from conveyor.settings import Settings

router = APIRouter(tags=["meta"])

DURATION_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)
SYNC_STATUSES = ("pending", "synced", "error")


class DatabaseCollector(Collector):
    """Collects every Conveyor metric from one read of ``services.metrics`` per scrape."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("conveyor_info", "Conveyor version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        figures = metrics_service.read(self.settings, DURATION_BUCKETS)
        yield from self._connectors(figures)
        yield from self._runs(figures)
        yield from self._reconcile(figures)
        yield from _notifications(self.settings)

    def _connectors(self, f: metrics_service.Figures) -> Iterator[Metric]:
        rows = f.connectors_by_sync_status
        g = GaugeMetricFamily(
            "conveyor_connectors", "Connectors by deployment sync status", labels=["sync_status"]
        )
        for status in sorted(set(SYNC_STATUSES) | set(rows)):
            g.add_metric([status], rows.get(status, 0))
        yield g
        yield GaugeMetricFamily(
            "conveyor_connectors_active",
            "Connectors whose schedule is active",
            value=f.connectors_active,
        )

    def _runs(self, f: metrics_service.Figures) -> Iterator[Metric]:
        rows = f.runs_by_status
        g = GaugeMetricFamily("conveyor_runs", "Run records by status", labels=["status"])
        for status in sorted(set(RUN_STATUSES) | set(rows)):
            g.add_metric([status], rows.get(status, 0))
        yield g
        h = HistogramMetricFamily(
            "conveyor_run_duration_seconds",
            "Duration of finished runs, from start to end",
            labels=["status"],
        )
        for d in f.durations:
            buckets = [(str(b), c) for b, c in zip(DURATION_BUCKETS, d.cumulative, strict=True)]
            buckets.append(("+Inf", d.count))
            h.add_metric([d.status], buckets, d.total_seconds)
        yield h

    def _reconcile(self, f: metrics_service.Figures) -> Iterator[Metric]:
        now = datetime.now(UTC)
        lag = 0.0
        if f.oldest_outbox_at is not None:
            lag = max(0.0, (now - f.oldest_outbox_at).total_seconds())
        yield GaugeMetricFamily(
            "conveyor_reconcile_lag_seconds",
            "Age of the oldest connector change not yet applied to Prefect (0 when none)",
            value=lag,
        )
        yield GaugeMetricFamily(
            "conveyor_outbox_pending",
            "Connector changes waiting for the reconciler",
            value=f.outbox_pending,
        )
        if f.reconciler_heartbeat_at is not None:
            yield GaugeMetricFamily(
                "conveyor_reconciler_heartbeat_age_seconds",
                "Seconds since the reconciler last reported alive",
                value=max(0.0, (now - f.reconciler_heartbeat_at).total_seconds()),
            )


def _notifications(settings: Settings) -> Iterator[Metric]:
    """Per notification channel (label ``channel``: its name): the delivery outbox."""
    from prometheus_client.core import CounterMetricFamily

    rows = notify_delivery.figures(settings)
    labels = ["channel", "type"]
    pending = GaugeMetricFamily(
        "conveyor_notification_pending", "Notifications waiting to be delivered", labels=labels
    )
    delivered = CounterMetricFamily(
        "conveyor_notification_delivered", "Notifications delivered", labels=labels
    )
    failed = CounterMetricFamily(
        "conveyor_notification_failed_attempts",
        "Delivery attempts that did not arrive (each is retried with backoff)",
        labels=labels,
    )
    expired = CounterMetricFamily(
        "conveyor_notification_expired",
        "Notifications given up undelivered after CONVEYOR_NOTIFY_MAX_AGE",
        labels=labels,
    )
    last = GaugeMetricFamily(
        "conveyor_notification_last_delivery_timestamp_seconds",
        "When the channel last delivered a notification (Unix time)",
        labels=labels,
    )
    for r in rows:
        key = [r.name, r.type]
        pending.add_metric(key, r.pending)
        delivered.add_metric(key, r.delivered)
        failed.add_metric(key, r.failed_attempts)
        expired.add_metric(key, r.expired)
        if r.last_delivery_at is not None:
            last.add_metric(key, r.last_delivery_at.timestamp())
    yield from (pending, delivered, failed, expired, last)


def build_registry(settings: Settings) -> CollectorRegistry:
    """A registry of its own per app (tests build many apps in one process)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(settings))
    return registry


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    token = request.app.state.settings.metrics_token
    if token is not None and not _bearer_matches(request, token.get_secret_value()):
        return Response(
            "metrics need the scrape token: Authorization: Bearer <CONVEYOR_METRICS_TOKEN>\n",
            status_code=401,
            media_type="text/plain",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    registry = getattr(request.app.state, "metrics_registry", None)
    if registry is None:
        registry = request.app.state.metrics_registry = build_registry(request.app.state.settings)
    body = await run_in_threadpool(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def _bearer_matches(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())
