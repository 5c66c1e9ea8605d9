"""/api/v1/deployments: the same operations as the CLI, for admins only."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from tests.fixtures.web import ApiUser

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = (REPO / "deployments" / "example-connector-deployment.yaml").read_text()
BASE = str(REPO / "deployments")
URL = "/api/v1/deployments"


def test_only_admins_may_use_deployment_files(editor: ApiUser, viewer: ApiUser) -> None:
    body = {"files": {"a.yaml": EXAMPLE}, "base_dir": BASE}
    for user in (editor, viewer):
        assert user.get(f"{URL}/export").status_code == 403
        for op in ("validate", "plan", "apply"):
            assert user.post(f"{URL}/{op}", json=body).status_code == 403


def test_validate_plan_apply_export_over_http(admin: ApiUser) -> None:
    body = {"files": {"example.yaml": EXAMPLE}, "base_dir": BASE}
    checked = admin.post(f"{URL}/validate", json=body)
    assert checked.status_code == 200, checked.text
    assert checked.json() == {"valid": True, "files": 1, "problems": []}

    planned = admin.post(f"{URL}/plan", json=body).json()
    assert planned["has_changes"] and planned["counts"] == {"create": 1}
    assert admin.get("/api/v1/connectors").json()["items"] == []  # plan wrote nothing

    applied = admin.post(f"{URL}/apply", json=body)
    assert applied.status_code == 200, applied.text
    assert applied.json()["ids"] == {"example-orders": 1}
    [connector] = admin.get("/api/v1/connectors").json()["items"]
    assert (connector["id"], connector["managed_by"], connector["sync_status"]) == (
        1,
        "file",
        "pending",
    )
    again = admin.post(f"{URL}/apply", json=body).json()
    assert again["changed"] is False and again["counts"]["unchanged"] == 1

    exported = admin.get(f"{URL}/export").json()
    assert list(exported["files"]) == ["example-orders.yaml"]
    assert "connector_id: 1" in exported["files"]["example-orders.yaml"]
    # The export applies back to the same state: no changes.
    back = {"files": exported["files"]}
    assert admin.post(f"{URL}/plan", json=back).json()["has_changes"] is False

    zipped = admin.get(f"{URL}/export", params={"format": "zip"})
    assert zipped.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(zipped.content)) as zf:
        assert zf.read("example-orders.yaml").decode() == exported["files"]["example-orders.yaml"]
    assert admin.get(f"{URL}/export", params={"format": "zip"}).content == zipped.content


def test_bad_files_come_back_with_file_line_and_column(admin: ApiUser) -> None:
    bad = EXAMPLE.replace('cron: "0 */6 * * *"', 'cron: "0 */6 * *"')
    body = {"files": {"example.yaml": bad, "other.yaml": "name: [\n"}, "base_dir": BASE}
    checked = admin.post(f"{URL}/validate", json=body).json()
    assert checked["valid"] is False
    assert [p["loc"] for p in checked["problems"]] == ["example.yaml:13:9", "other.yaml:2:1"]
    refused = admin.post(f"{URL}/apply", json=body)
    assert refused.status_code == 422
    assert [e["field"] for e in refused.json()["errors"]] == ["example.yaml:13:9", "other.yaml:2:1"]
    assert admin.get("/api/v1/connectors").json()["items"] == []


def test_relative_paths_need_base_dir_and_names_must_be_plain(admin: ApiUser) -> None:
    no_base = admin.post(f"{URL}/validate", json={"files": {"example.yaml": EXAMPLE}}).json()
    assert [p["reason"] for p in no_base["problems"]] == [
        "connector.source.config.path: relative path 'data' needs the file's directory "
        "(send base_dir, or use an absolute path)"
    ]
    traversal = admin.post(f"{URL}/validate", json={"files": {"../x.yaml": EXAMPLE}})
    assert traversal.status_code == 422
