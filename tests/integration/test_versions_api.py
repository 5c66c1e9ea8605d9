"""Version history and restore through the REST API (issue 18): connectors, sources and
destinations, numbered as ``version`` says, masked, restored as a new version that the
reconciler syncs; deployment-file apply and reset make exactly one version each."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select

from conveyor.db.models import AuditEntry, EntityVersion, OutboxEntry, Source
from conveyor.db.session import session_scope
from conveyor.deployments_io import apply_directory
from conveyor.secrets import SecretBox
from conveyor.services.authz import SYSTEM
from conveyor.services.versions import CONNECTOR_KEYS
from conveyor.settings import Settings
from tests.fixtures.web import ApiUser

CANARY = f"canary-{uuid.uuid4().hex[:12]}"
REPO = Path(__file__).resolve().parents[2]


def versions(user: ApiUser, path: str) -> list[dict[str, Any]]:
    resp = user.get(f"{path}/versions")
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


def upserts(database_url: str, connector_id: int) -> int:
    with session_scope(database_url) as s:
        rows = s.scalars(select(OutboxEntry).where(OutboxEntry.connector_id == connector_id))
        return sum(1 for o in rows if o.action == "upsert")


def test_connector_history_numbers_diff_and_restore(admin: ApiUser, database_url: str) -> None:
    c = admin.make_connector(schedule="0 */6 * * *")
    path = f"/api/v1/connectors/{c['id']}"
    assert admin.patch(path, json={"schedule": "15 3 * * *"}).status_code == 200
    assert admin.post(f"{path}/pause").status_code == 200
    now = admin.post(f"{path}/resume").json()

    listed = versions(admin, path)
    # One change, one version: the numbers are the connector's ``version`` (no double bump).
    assert [v["number"] for v in listed] == [4, 3, 2, 1] and now["version"] == 4
    assert [v["change"] for v in listed] == ["resume", "pause", "update", "create"]
    assert {v["actor"] for v in listed} == {"alice"}
    assert listed[2]["changed"] == ["schedule"] and listed[1]["changed"] == ["is_active"]

    one = admin.get(f"{path}/versions/1").json()
    assert one["snapshot"]["schedule"] == "0 */6 * * *"
    changed_now = {f["field"]: f for f in one["against_current"] if f["changed"]}
    assert changed_now == {
        "schedule": {
            "field": "schedule",
            "old": "0 */6 * * *",
            "new": "15 3 * * *",
            "changed": True,
        }
    }

    synced_before = upserts(database_url, c["id"])
    restored = admin.post(f"{path}/versions/1/restore")
    assert restored.status_code == 200, restored.text
    new = restored.json()
    assert (new["number"], new["change"], new["restored_from"]) == (5, "restore", 1)
    assert {k: new["snapshot"][k] for k in CONNECTOR_KEYS} == {
        k: one["snapshot"][k] for k in CONNECTOR_KEYS
    }
    back = admin.get(path).json()
    assert (back["schedule"], back["version"], back["sync_status"]) == (
        "0 */6 * * *",
        5,
        "pending",
    )
    # The reconciler is told (an outbox entry in the same transaction) and the audit says so.
    assert upserts(database_url, c["id"]) == synced_before + 1
    with session_scope(database_url) as s:
        actions = [a.action for a in s.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    assert actions[-1] == "connector.restore"

    again = admin.post(f"{path}/versions/5/restore")
    assert again.status_code == 409 and "nothing to restore" in again.text
    assert admin.get(f"{path}/versions/9").status_code == 404


def test_restore_refuses_a_deleted_source_or_a_taken_name(admin: ApiUser) -> None:
    src_a, src_b = admin.make_source(), admin.make_source()
    c = admin.make_connector(name="orders-old", source_id=src_a["id"])
    path = f"/api/v1/connectors/{c['id']}"
    assert admin.patch(path, json={"source_id": src_b["id"]}).status_code == 200
    assert admin.delete(f"/api/v1/sources/{src_a['id']}").status_code == 204
    gone = admin.post(f"{path}/versions/1/restore")
    assert gone.status_code == 409
    assert f"uses source '{src_a['name']}' (id {src_a['id']}), which has been deleted" in gone.text

    assert admin.patch(path, json={"name": "orders-new"}).status_code == 200
    admin.make_connector(name="orders-old")
    taken = admin.post(f"{path}/versions/2/restore")
    assert taken.status_code == 409 and "named 'orders-old'" in taken.text
    assert admin.get(path).json()["name"] == "orders-new"  # nothing changed


def test_source_history_keeps_secrets_and_never_shows_them(
    editor: ApiUser, viewer: ApiUser, settings: Settings, database_url: str
) -> None:
    src = editor.make_source(config={"host": "db.example.com", "database": "sales",
                                     "username": "reader", "password": CANARY})  # fmt: skip
    path = f"/api/v1/sources/{src['id']}"
    assert editor.patch(path, json={"config": {"username": "writer"}}).status_code == 200
    texts = []
    listed = versions(viewer, path)  # viewers read history (masked)
    texts.append(viewer.get(f"{path}/versions").text)
    assert [(v["number"], v["change"]) for v in listed] == [(2, "update"), (1, "create")]
    assert listed[0]["changed"] == ["config"]
    assert listed[0]["snapshot"]["config"]["password"] == "********"
    detail = viewer.get(f"{path}/versions/1")
    texts.append(detail.text)
    config = next(f for f in detail.json()["against_current"] if f["field"] == "config")
    assert (config["old"]["username"], config["new"]["username"]) == ("reader", "writer")

    assert viewer.post(f"{path}/versions/1/restore").status_code == 403
    restored = editor.post(f"{path}/versions/1/restore")
    texts.append(restored.text)
    assert restored.status_code == 200, restored.text
    assert (restored.json()["number"], restored.json()["restored_from"]) == (3, 1)
    now = editor.get(path).json()
    assert (now["config"]["username"], now["config"]["password"]) == ("reader", "********")
    box = SecretBox(settings.secret_keys())
    with session_scope(database_url) as s:
        stored = s.get(Source, src["id"])
        assert stored is not None
        assert box.decrypt_config(stored.config, {"password"})["password"] == CANARY
        snapshots = [str(v.snapshot) for v in s.scalars(select(EntityVersion))]
    assert all(CANARY not in t for t in texts + snapshots)


def test_a_source_version_elsewhere_needs_its_secret_again(editor: ApiUser) -> None:
    src = editor.make_source()
    path = f"/api/v1/sources/{src['id']}"
    moved = {"config": {"host": "db2.example.com", "password": "new-pw"}}
    assert editor.patch(path, json=moved).status_code == 200
    refused = editor.post(f"{path}/versions/1/restore")
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "config.password"
    assert editor.get(path).json()["config"]["host"] == "db2.example.com"
    bad = editor.post(f"{path}/versions/1/restore", json={"secrets": {"host": "x"}})
    assert bad.status_code == 422 and "secrets.host" in bad.text
    ok = editor.post(f"{path}/versions/1/restore", json={"secrets": {"password": "old-pw"}})
    assert ok.status_code == 200, ok.text
    assert editor.get(path).json()["config"]["host"] == "db.example.com"


def test_destination_history_and_restore(admin: ApiUser) -> None:
    dst = admin.make_destination(max_concurrent_runs=2)
    path = f"/api/v1/destinations/{dst['id']}"
    assert admin.patch(path, json={"max_concurrent_runs": 5}).status_code == 200
    assert admin.post(f"{path}/versions/1/restore").status_code == 200
    assert admin.get(path).json()["max_concurrent_runs"] == 2
    listed = versions(admin, path)
    assert [(v["number"], v["change"], v["restored_from"]) for v in listed] == [
        (3, "restore", 1),
        (2, "update", None),
        (1, "create", None),
    ]


def test_history_from_before_versions_starts_with_a_baseline(
    admin: ApiUser, database_url: str
) -> None:
    c = admin.make_connector()
    path = f"/api/v1/connectors/{c['id']}"
    with session_scope(database_url) as s:  # as a connector created before migration 0007
        s.execute(delete(EntityVersion))
    assert [(v["number"], v["change"]) for v in versions(admin, path)] == [(1, "baseline")]
    admin.patch(path, json={"description": "now with history"})
    assert [(v["number"], v["change"]) for v in versions(admin, path)] == [
        (2, "update"),
        (1, "baseline"),
    ]
    assert admin.post(f"{path}/versions/1/restore").status_code == 200
    assert admin.get(path).json()["description"] is None


def test_reset_is_one_version_with_the_same_settings(admin: ApiUser) -> None:
    c = admin.make_connector()
    path = f"/api/v1/connectors/{c['id']}"
    assert admin.post(f"{path}/reset", json={"drop_tables": False}).status_code == 200
    listed = versions(admin, path)
    assert [(v["number"], v["change"]) for v in listed] == [(2, "reset"), (1, "create")]
    assert listed[0]["snapshot"] == listed[1]["snapshot"]
    assert admin.get(path).json()["version"] == 2


def test_deployment_file_apply_makes_one_version_per_change(
    settings: Settings, tmp_path: Path
) -> None:
    files = tmp_path / "deployments"
    shutil.copytree(REPO / "deployments", files)
    box, url = SecretBox(settings.secret_keys()), settings.effective_database_url

    def apply() -> None:
        with session_scope(url) as s:
            apply_directory(files, session=s, box=box, actor=SYSTEM, settings=settings)

    def history() -> list[tuple[str, int, str]]:
        with session_scope(url) as s:
            rows = s.scalars(select(EntityVersion).order_by(EntityVersion.id))
            return sorted((v.entity_type, v.version, v.change) for v in rows)

    apply()
    created = [("connector", 1, "create"), ("destination", 1, "create"), ("source", 1, "create")]
    assert history() == created
    yaml = files / "example-connector-deployment.yaml"
    yaml.write_text(yaml.read_text().replace("0 */6 * * *", "30 2 * * *"))
    apply()
    apply()  # unchanged: no version
    assert history() == sorted([*created, ("connector", 2, "update")])
    with session_scope(url) as s:
        from conveyor.db.models import Connector

        c = s.get(Connector, 1)
        assert c is not None and (c.version, c.schedule) == (2, "30 2 * * *")
