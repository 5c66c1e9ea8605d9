"""The retry policy through the API, and POST /api/v1/runs/{id}/retry's refusals (the runs
it starts are in test_retries_prefect.py, through a real Prefect server)."""

from __future__ import annotations

from typing import Any

from conveyor.db.models import Connector, ConnectorRun
from conveyor.db.session import session_scope
from conveyor.settings import Settings
from tests.fixtures.web import ApiUser

DEFAULT_POLICY = {"max_attempts": 3, "backoff_seconds": [60, 300, 900]}


def _run(settings: Settings, connector_id: int, status: str) -> int:
    with session_scope(settings.effective_database_url) as s:
        run = ConnectorRun(connector_id=connector_id, status=status, trigger="manual")
        s.add(run)
        s.flush()
        return int(run.id)


def _synced(settings: Settings, connector_id: int) -> None:
    with session_scope(settings.effective_database_url) as s:
        c = s.get(Connector, connector_id)
        assert c is not None
        c.sync_status = "synced"
        c.prefect_deployment_id = "00000000-0000-0000-0000-000000000001"


def test_the_retry_policy_shows_its_defaults_and_takes_a_change(editor: ApiUser) -> None:
    conn = editor.make_connector()
    assert conn["retry_policy"] == DEFAULT_POLICY
    url = f"/api/v1/connectors/{conn['id']}"
    resp = editor.patch(url, json={"retry_policy": {"max_attempts": 5}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["retry_policy"] == {"max_attempts": 5, "backoff_seconds": [60, 300, 900]}
    assert editor.patch(url, json={"retry_policy": None}).json()["retry_policy"] == DEFAULT_POLICY


def test_a_bad_retry_policy_names_the_field_and_changes_nothing(editor: ApiUser) -> None:
    conn = editor.make_connector()
    url = f"/api/v1/connectors/{conn['id']}"
    for policy, field in (
        ({"max_attempts": 0}, "retry_policy.max_attempts"),
        ({"max_attempts": 11}, "retry_policy.max_attempts"),
        ({"backoff_seconds": [10, -1]}, "retry_policy.backoff_seconds"),
        ({"backoff_seconds": []}, "retry_policy.backoff_seconds"),
        ({"tries": 2}, "retry_policy.tries"),
    ):
        resp = editor.patch(url, json={"retry_policy": policy})
        assert resp.status_code == 422, resp.text
        fields = {e["field"] for e in resp.json()["errors"]}
        assert field in fields, (policy, resp.json())
    assert editor.get(url).json()["retry_policy"] == DEFAULT_POLICY


def test_retry_now_refuses_what_it_cannot_retry(
    app_settings: Settings, editor: ApiUser, editor2: ApiUser, viewer: ApiUser
) -> None:
    conn = editor.make_connector()
    failed = _run(app_settings, conn["id"], "failed")
    succeeded = _run(app_settings, conn["id"], "succeeded")
    running = _run(app_settings, conn["id"], "running")

    def retry(who: ApiUser, run_id: int) -> Any:
        return who.post(f"/api/v1/runs/{run_id}/retry")

    assert retry(viewer, failed).status_code == 403
    assert retry(editor2, failed).status_code == 403  # not the owner
    assert retry(editor, 999_999).status_code == 404
    not_synced = retry(editor, failed)
    assert not_synced.status_code == 409 and "not synced" in not_synced.text
    _synced(app_settings, conn["id"])
    for run_id, status in ((succeeded, "succeeded"), (running, "running")):
        resp = retry(editor, run_id)
        assert resp.status_code == 409, resp.text
        assert f"is {status}" in resp.text
    assert editor.post(f"/api/v1/connectors/{conn['id']}/pause").status_code == 200
    paused = retry(editor, failed)
    assert paused.status_code == 409 and "paused" in paused.text
    with session_scope(app_settings.effective_database_url) as s:
        count = s.query(ConnectorRun).filter_by(connector_id=conn["id"]).count()
    assert count == 3  # no record made by a refusal
