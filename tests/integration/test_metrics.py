"""/metrics: Prometheus text read from the database; request ids on every response."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, select

from conveyor.db.models import ConnectorRun, OutboxEntry
from conveyor.db.session import session_scope
from conveyor.settings import Settings
from tests.fixtures.web import ApiUser


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_count_connectors_runs_and_lag(
    client: TestClient, admin: ApiUser, settings: Settings
) -> None:
    c1 = admin.make_connector()
    admin.make_connector()
    now = datetime.now(UTC)
    with session_scope(settings.effective_database_url) as session:
        for status, seconds in [("succeeded", 3), ("succeeded", 45), ("failed", 700)]:
            session.add(
                ConnectorRun(
                    connector_id=c1["id"],
                    status=status,
                    trigger="manual",
                    started_at=now - timedelta(seconds=seconds),
                    finished_at=now,
                )
            )
        session.add(ConnectorRun(connector_id=c1["id"], status="running", trigger="schedule"))

    resp = client.get("/metrics")  # no authentication, as scrapers expect
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    m = _samples(resp.text)

    assert m[("conveyor_connectors", (("sync_status", "pending"),))] == 2
    assert m[("conveyor_connectors", (("sync_status", "synced"),))] == 0
    assert m[("conveyor_runs", (("status", "succeeded"),))] == 2
    assert m[("conveyor_runs", (("status", "running"),))] == 1
    ok = (("status", "succeeded"),)
    assert m[("conveyor_run_duration_seconds_count", ok)] == 2
    assert 47 < m[("conveyor_run_duration_seconds_sum", ok)] < 50
    assert m[("conveyor_run_duration_seconds_bucket", (("le", "5.0"), *ok))] == 1
    assert m[("conveyor_run_duration_seconds_bucket", (("le", "60.0"), *ok))] == 2
    assert m[("conveyor_run_duration_seconds_bucket", (("le", "600.0"), ("status", "failed")))] == 0
    # Two connector changes wait in the outbox (no reconciler runs here), made moments ago.
    lag = ("conveyor_reconcile_lag_seconds", ())
    assert m[("conveyor_outbox_pending", ())] == 2
    assert 0 <= m[lag] < 60
    # The lag is the age of the oldest waiting change: make it two minutes old.
    with session_scope(settings.effective_database_url) as session:
        oldest = session.scalars(select(OutboxEntry).order_by(OutboxEntry.id)).first()
        assert oldest is not None
        oldest.created_at = datetime.now(UTC) - timedelta(seconds=120)
    assert 120 <= _samples(client.get("/metrics").text)[lag] < 180
    # Nothing waiting: no lag.
    with session_scope(settings.effective_database_url) as session:
        session.execute(delete(OutboxEntry))
    m = _samples(client.get("/metrics").text)
    assert m[("conveyor_outbox_pending", ())] == 0 and m[lag] == 0


def test_request_id_is_echoed_or_generated(client: TestClient) -> None:
    given = client.get("/api/v1/health", headers={"X-Request-ID": "trace-42"})
    assert given.headers["X-Request-ID"] == "trace-42"
    made = client.get("/api/v1/health", headers={"X-Request-ID": "x" * 500})
    assert len(made.headers["X-Request-ID"]) == 32  # too long: replaced, not logged


def test_health_reports_every_component(client: TestClient) -> None:
    body = client.get("/api/v1/health").json()
    assert set(body["components"]) == {"database", "prefect", "work_pool", "worker", "reconciler"}
    assert body["components"]["database"]["ok"] is True
    assert body["components"]["reconciler"]["ok"] is False  # none runs in this test


def test_metrics_token_keeps_scrapes_without_it_out(app_settings: Settings, admin: ApiUser) -> None:
    """With CONVEYOR_METRICS_TOKEN set, only `Authorization: Bearer <token>` reads /metrics:
    no header, another scheme, a wrong or truncated token, and a logged-in user's API token
    are all 401 and show no figure."""
    from pydantic import SecretStr

    from conveyor.web.app import create_app

    token = "scrape-Token-4e1f0b9a"
    locked = app_settings.model_copy(update={"metrics_token": SecretStr(token)})
    with TestClient(create_app(locked)) as c:
        refused = [
            {},
            {"Authorization": f"Basic {token}"},
            {"Authorization": f"Bearer {token[:-1]}"},
            {"Authorization": f"Bearer {token}x"},
            {"Authorization": "Bearer "},
            {"Authorization": f"Bearer {admin.token}"},
        ]
        for headers in refused:
            resp = c.get("/metrics", headers=headers)
            assert resp.status_code == 401, headers
            assert "conveyor_" not in resp.text
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        ok = c.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        assert ("conveyor_info", (("version", __import__("conveyor").__version__),)) in _samples(
            ok.text
        )
