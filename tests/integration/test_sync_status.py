"""What ``GET /api/v1/sync`` and ``conveyor sync status`` report: counts by status, the
oldest queued change, the reconciler, and the last full pass with what it repaired."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conveyor.db.session import session_scope
from conveyor.domain.models import UserCreate
from conveyor.services import users as users_service
from conveyor.services.authz import SYSTEM
from conveyor.web.app import create_app
from tests.fixtures.sync import (
    SyncEnv,
    prefect,
)

pytestmark = pytest.mark.prefect


def api_get(env: SyncEnv, path: str) -> Any:
    app = create_app(env.settings)  # the app as served: it must include /api/v1/sync
    with session_scope(env.url) as s:
        users_service.create_user(
            UserCreate(username="viewer1", password="correct-horse-battery", role="viewer"),
            session=s,
            actor=SYSTEM,
        )
        _row, token = users_service.create_token("viewer1", "t", session=s, actor=SYSTEM)
    with TestClient(app) as client:
        assert client.get(path).status_code == 401
        resp = client.get(path, headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 200, resp.text
        return resp.json()


def cli(env: SyncEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor.cli", *args],
        capture_output=True,
        text=True,
        env=env.env(),
        timeout=120,
    )


def test_status_reports_counts_oldest_change_and_last_pass(sync_env: SyncEnv) -> None:
    env = sync_env
    a, b = env.create(), env.create()
    env.outbox_pass()
    prefect(lambda c: c.delete_deployment(env.row(a).prefect_deployment_id))
    env.full_pass()  # repairs a
    env.patch(b, schedule="7 * * * *")  # queued, not applied yet

    body = api_get(env, "/api/v1/sync")
    assert body["counts"] == {"pending": 1, "synced": 1, "error": 0}
    assert body["queued_changes"] == 1
    oldest = body["oldest_pending_change"]
    assert oldest["connector_id"] == b and oldest["action"] == "upsert"
    last = body["last_full_pass"]
    assert last["connectors"] == 2 and last["created"] == 1
    assert last["repairs"] == [
        {
            "connector_id": a,
            "deployment_id": env.row(a).prefect_deployment_id,
            "action": "created",
            "reason": "deleted in Prefect",
        }
    ]
    assert body["reconciler"]["alive"] is False  # none is running

    out = cli(env, "sync", "status")
    assert out.returncode == 0, out.stderr
    assert "1 synced, 1 pending, 0 error" in out.stdout
    assert f"repaired connector {a}: created (deleted in Prefect)" in out.stdout
    js = cli(env, "sync", "status", "--json")
    assert json.loads(js.stdout)["counts"]["pending"] == 1


def test_reconcile_once_from_the_cli(sync_env: SyncEnv) -> None:
    env = sync_env
    cid = env.create()
    out = cli(env, "reconcile", "--once")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "full pass: 1 connectors" in out.stdout
    assert env.row(cid).sync_status == "synced"
    assert env.deployment_of(cid).name == f"connector-{cid}"
