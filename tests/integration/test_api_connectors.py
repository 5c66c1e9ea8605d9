"""Connectors through the REST API: create, read, change, pause, delete, list."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from conveyor.db.models import OutboxEntry
from conveyor.db.session import session_scope
from tests.fixtures.web import ApiUser
from tests.helpers import table_counts


def test_create_answers_pending_with_schedule_in_words(admin: ApiUser, database_url: str) -> None:
    conn = admin.make_connector(schedule="0 */6 * * *", timezone="Europe/Berlin", tags=["sales"])
    assert conn["sync_status"] == "pending"
    assert conn["schedule_description"] == "Every 6 hours, Europe/Berlin"
    assert len(conn["next_runs"]) == 5
    assert all(r.endswith("+01:00") or r.endswith("+02:00") for r in conn["next_runs"])
    assert conn["deployment_name"] == f"connector-{conn['id']}"
    assert conn["tags"] == ["sales"] and conn["owner"] == "alice"
    with session_scope(database_url) as session:
        outbox = list(session.scalars(select(OutboxEntry)))
    assert [(o.connector_id, o.action) for o in outbox] == [(conn["id"], "upsert")]


def test_camel_case_fields_from_older_clients_are_accepted(admin: ApiUser) -> None:
    src, dst = admin.make_source(), admin.make_destination()
    resp = admin.post(
        "/api/v1/connectors",
        json={
            "name": "legacy",
            "sourceId": src["id"],
            "destinationId": dst["id"],
            "isActive": False,
            "sourceConfigOverride": {"tables": ["a"]},
            "schedule": "*/15 * * * *",
        },
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["is_active"] is False
    assert body["source_config_override"] == {"tables": ["a"]}
    assert body["schedule_description"] == "Every 15 minutes, UTC"


def test_manual_only_connector_has_no_next_runs(admin: ApiUser) -> None:
    conn = admin.make_connector(schedule=None)
    assert conn["schedule"] is None
    assert conn["schedule_description"] == "Manual only"
    assert conn["next_runs"] == []


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"schedule": "61 * * * *"}, "schedule", "not a valid cron expression"),
        ({"schedule": "every day"}, "schedule", "expected 5 fields"),
        ({"timezone": "Mars/Olympus"}, "timezone", "not an IANA timezone"),
        ({"timezone": "Paris"}, "timezone", "did you mean 'Europe/Paris'?"),
        ({"name": ""}, "name", "at least 1 character"),
        ({"source_id": 4242}, "source_id", "source 4242 does not exist"),
        ({"destination_id": "x"}, "destination_id", "valid integer"),
        (
            {"source_config_override": {"query": "DELETE FROM t"}},
            "source_config_override.query",
            "must be a SELECT statement, not DELETE",
        ),
        (
            {"source_config_override": {"batch_size": "many"}},
            "source_config_override.batch_size",
            "valid integer",
        ),
        ({"tags": ["conveyor"]}, "tags", "reserved"),
        ({"colour": "red"}, "colour", "Extra inputs are not permitted"),
    ],
)
def test_bad_input_names_field_and_reason_and_writes_nothing(
    admin: ApiUser, database_url: str, change: dict, field: str, reason: str
) -> None:
    src, dst = admin.make_source(), admin.make_destination()
    body = {"name": "c", "source_id": src["id"], "destination_id": dst["id"], **change}
    before = table_counts(database_url)
    resp = admin.post("/api/v1/connectors", json=body)
    assert resp.status_code == 422, resp.text
    errors = {e["field"]: e["reason"] for e in resp.json()["errors"]}
    assert field in errors, errors
    assert reason in errors[field]
    assert table_counts(database_url) == before


def test_malformed_json_is_400(admin: ApiUser, database_url: str) -> None:
    before = table_counts(database_url)
    resp = admin.post(
        "/api/v1/connectors",
        content=b'{"name": "x",',
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 400
    assert "malformed JSON" in resp.json()["detail"]
    assert table_counts(database_url) == before


def test_body_over_one_mib_is_413(admin: ApiUser, database_url: str) -> None:
    before = table_counts(database_url)
    big = {"name": "big", "source_id": 1, "destination_id": 1, "description": "x" * (1 << 20)}
    resp = admin.post("/api/v1/connectors", json=big)
    assert resp.status_code == 413
    assert table_counts(database_url) == before


def test_duplicate_name_is_409(admin: ApiUser, database_url: str) -> None:
    conn = admin.make_connector(name="orders")
    before = table_counts(database_url)
    resp = admin.post(
        "/api/v1/connectors",
        json={
            "name": "orders",
            "source_id": conn["source_id"],
            "destination_id": conn["destination_id"],
        },
    )
    assert resp.status_code == 409
    assert resp.json()["detail"] == "a connector named 'orders' already exists"
    assert table_counts(database_url) == before


def test_patch_changes_schedule_and_enqueues_sync(admin: ApiUser, database_url: str) -> None:
    conn = admin.make_connector()
    resp = admin.patch(
        f"/api/v1/connectors/{conn['id']}",
        json={"schedule": "30 2 * * *", "timezone": "Asia/Tokyo", "version": conn["version"]},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["schedule_description"] == "At 02:30, Asia/Tokyo"
    assert body["version"] == conn["version"] + 1
    assert body["sync_status"] == "pending"
    with session_scope(database_url) as session:
        actions = [o.action for o in session.scalars(select(OutboxEntry))]
    assert actions == ["upsert", "upsert"]


def test_one_save_is_one_version(admin: ApiUser, database_url: str) -> None:
    """Issue 22: a save moved ``version`` by 2 (the change, then a second UPDATE when the
    sync fields went back to pending). A new connector starts at 1."""
    from sqlalchemy import update

    from conveyor.db.models import Connector

    conn = admin.make_connector()
    assert conn["version"] == 1
    version = conn["version"]
    for change in ({"description": "one"}, {"description": "two"}, {"is_active": False}):
        with session_scope(database_url) as session:  # as the reconciler leaves it
            session.execute(
                update(Connector).where(Connector.id == conn["id"]).values(sync_status="synced")
            )
        resp = admin.patch(f"/api/v1/connectors/{conn['id']}", json={**change, "version": version})
        assert resp.status_code == 200, resp.text
        assert resp.json()["version"] == version + 1, change
        assert admin.get(f"/api/v1/connectors/{conn['id']}").json()["version"] == version + 1
        version += 1


def test_stale_version_is_409_and_changes_nothing(admin: ApiUser, database_url: str) -> None:
    conn = admin.make_connector()
    first = admin.patch(
        f"/api/v1/connectors/{conn['id']}", json={"description": "a", "version": conn["version"]}
    )
    assert first.status_code == 200
    before = table_counts(database_url)
    stale = admin.patch(
        f"/api/v1/connectors/{conn['id']}", json={"description": "b", "version": conn["version"]}
    )
    assert stale.status_code == 409
    assert "changed by someone else" in stale.json()["detail"]
    assert table_counts(database_url) == before
    assert admin.get(f"/api/v1/connectors/{conn['id']}").json()["description"] == "a"


def test_pause_and_resume(admin: ApiUser) -> None:
    conn = admin.make_connector()
    paused = admin.post(f"/api/v1/connectors/{conn['id']}/pause").json()
    assert paused["is_active"] is False
    # Run now on a paused connector: the UI's words (issue 22).
    refused = admin.post(f"/api/v1/connectors/{conn['id']}/run")
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        f"connector {conn['id']} is paused: it does not run, on its schedule or by hand, "
        "until you resume it"
    )
    assert refused.json()["hint"] == "Resume the connector to run it"
    resumed = admin.post(f"/api/v1/connectors/{conn['id']}/resume").json()
    assert resumed["is_active"] is True
    actions = [e["action"] for e in admin.get("/api/v1/audit?entity_type=connector").json()]
    assert actions[:2] == ["connector.resume", "connector.pause"]


def test_delete_enqueues_removal_of_the_deployment(admin: ApiUser, database_url: str) -> None:
    conn = admin.make_connector()
    assert admin.delete(f"/api/v1/connectors/{conn['id']}").status_code == 204
    assert admin.get(f"/api/v1/connectors/{conn['id']}").status_code == 404
    with session_scope(database_url) as session:
        actions = [(o.connector_id, o.action) for o in session.scalars(select(OutboxEntry))]
    assert actions[-1] == (conn["id"], "delete")


def test_list_filters_and_cursor_pagination(admin: ApiUser) -> None:
    src, dst = admin.make_source(), admin.make_destination()
    made = [
        admin.make_connector(
            name=f"job-{i:02d}",
            source_id=src["id"],
            destination_id=dst["id"],
            tags=["finance"] if i % 2 else ["ops"],
            is_active=i != 3,
        )
        for i in range(7)
    ]
    seen, cursor = [], None
    while True:
        url = "/api/v1/connectors?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = admin.get(url).json()
        seen += [c["name"] for c in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [c["name"] for c in made]
    finance = admin.get("/api/v1/connectors?tag=finance").json()["items"]
    assert [c["name"] for c in finance] == ["job-01", "job-03", "job-05"]
    assert [c["name"] for c in admin.get("/api/v1/connectors?is_active=false").json()["items"]] == [
        "job-03"
    ]
    assert len(admin.get("/api/v1/connectors?q=JOB-0&sync_status=pending").json()["items"]) == 7
    bad = admin.get("/api/v1/connectors?cursor=!!!")
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "cursor"


def test_runs_of_a_connector_and_a_run(admin: ApiUser, database_url: str) -> None:
    from datetime import UTC, datetime, timedelta

    from conveyor.db.models import ConnectorRun

    conn = admin.make_connector()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with session_scope(database_url) as session:
        session.add(
            ConnectorRun(
                connector_id=conn["id"],
                status="succeeded",
                trigger="schedule",
                started_at=start,
                finished_at=start + timedelta(seconds=42),
                rows_loaded=1200,
                table_stats={"orders": 1200},
            )
        )
    runs = admin.get(f"/api/v1/connectors/{conn['id']}/runs").json()
    assert [(r["status"], r["rows_loaded"], r["duration_seconds"]) for r in runs] == [
        ("succeeded", 1200, 42.0)
    ]
    one = admin.get(f"/api/v1/runs/{runs[0]['id']}").json()
    assert one["table_stats"] == {"orders": 1200}
    listed = admin.get(f"/api/v1/connectors/{conn['id']}").json()
    assert listed["last_run"]["status"] == "succeeded"
    assert admin.get("/api/v1/runs/999").status_code == 404
