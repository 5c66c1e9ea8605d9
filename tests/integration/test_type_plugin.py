"""The example type plugin (examples/conveyor-jsonapi), pip-installed into a temporary
directory: its type reaches the API, the UI form, deployment files and a real run against
a JSON server on loopback, with no change to Conveyor."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from conveyor.pipelines import registry
from conveyor.pipelines.flow import run_connector
from conveyor.settings import Settings
from tests.fixtures.pipelines import duckdb_rows
from tests.fixtures.ui import UIClient, cheap_password_hashing, make_user, parse_html
from tests.fixtures.web import ApiUser

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "examples" / "conveyor-jsonapi"
RECORDS = [{"id": i, "name": f"thing {i}", "price": i * 2.5} for i in range(1, 8)]


@pytest.fixture(scope="module")
def plugin() -> Iterator[Path]:
    """pip install --target a temporary directory (no network, no build isolation), put it
    on sys.path and load the entry points; undone afterwards."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(prefix="conveyor-plugin-") as work:
        # Built from a copy: setuptools writes build/ and *.egg-info next to the sources.
        source = shutil.copytree(PLUGIN, Path(work) / "src")
        target = str(Path(work) / "site")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--no-index",
                "--no-build-isolation",
                "--target",
                target,
                str(source),
            ],
            check=True,
            capture_output=True,
        )
        sys.path.insert(0, target)
        importlib.invalidate_caches()
        try:
            assert registry.load_plugins(force=True) == {}
            yield Path(target)
        finally:
            registry.unregister("source", "json_api")
            sys.path.remove(target)
            sys.modules.pop("conveyor_jsonapi", None)
            importlib.invalidate_caches()


@pytest.fixture
def json_server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/things":
                self.send_error(404)
                return
            body = json.dumps({"data": RECORDS}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_plugin_type_is_registered_and_keeps_the_contract(plugin: Path) -> None:
    from tests.unit.test_type_contract import assert_contract

    info = registry.get_type("source", "json_api")
    assert_contract(info)
    assert info.module == "conveyor_jsonapi"
    assert info.connection_fields == {"url"} and info.secret_fields == {"token"}
    assert "table_name" in info.copy_fields


def test_plugin_type_in_the_api_and_checked(plugin: Path, admin: ApiUser, json_server: str) -> None:
    types = {t["name"]: t for t in admin.get("/api/v1/source-types").json()}
    assert types["json_api"]["title"] == "JSON API (example plugin)"
    assert types["json_api"]["secret_fields"] == ["token"]
    assert "url" in types["json_api"]["config_schema"]["properties"]
    config = {"url": json_server + "/things", "records_path": "data", "token": "tok-123"}
    created = admin.post(
        "/api/v1/sources", json={"name": "things", "type": "json_api", "config": config}
    )
    assert created.status_code == 201, created.text
    assert created.json()["config"]["token"] != "tok-123"  # write-only like any secret
    sid = created.json()["id"]
    checked = admin.post(f"/api/v1/sources/{sid}/check").json()
    assert checked["ok"] and "7 record(s)" in checked["message"], checked
    found = admin.get(f"/api/v1/sources/{sid}/discover").json()
    assert found["fields"] == ["id", "name", "price"], found
    missing = admin.post(
        "/api/v1/sources",
        json={"name": "bad", "type": "json_api", "config": {"url": json_server + "/nope"}},
    ).json()["id"]
    refused = admin.post(f"/api/v1/sources/{missing}/check").json()
    assert not refused["ok"]
    assert (
        refused["message"] == f"The JSON API at {json_server}/nope refused the request (HTTP 404)."
    )


def test_plugin_type_in_the_ui_form(
    plugin: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    cheap_password_hashing(monkeypatch)
    make_user(settings, "alice", "admin")
    ui = UIClient(settings).login("alice")
    doc = ui.page("/sources/new?type=json_api")
    names = {n.attrs.get("name") for n in doc.iter() if n.tag in ("input", "select", "textarea")}
    assert {"cfg.url", "cfg.records_path"} <= names
    assert "cfg.table_name" not in names  # what to copy belongs to the connector
    assert doc.find("input", name="cfg.token").attrs["type"] == "password"
    copy = parse_html(
        ui.htmx("GET", "/connectors/form/copy?source_mode=new&source.new.type=json_api").text
    )
    inputs = {n.attrs.get("name") for n in copy.iter() if n.tag == "input"}
    assert "table_name" in inputs and "primary_key" in inputs
    assert "cursor_column" not in inputs  # the type declares no incremental reads


def test_plugin_type_in_a_deployment_file_and_a_real_run(
    plugin: Path, admin: ApiUser, settings: Settings, json_server: str, tmp_path: Path
) -> None:
    doc = f"""
name: things-to-duckdb
flow_name: run_connector_pipeline
entrypoint: conveyor.pipelines.flow:run_connector_pipeline
work_pool_name: default
parameters: {{connector_id: 1}}
schedule: {{cron: "0 * * * *", timezone: UTC}}
connector:
  name: things
  source:
    name: things-api
    type: json_api
    config:
      url: {json_server}/things
      records_path: data
  destination:
    name: things-duckdb
    type: duckdb
    config: {{}}
  source_config_override:
    table_name: things
    primary_key: id
"""
    body = {"files": {"things.yaml": doc}, "base_dir": str(settings.data_dir)}
    applied = admin.post("/api/v1/deployments/apply", json=body)
    assert applied.status_code == 200, applied.text
    (connector,) = admin.get("/api/v1/connectors").json()["items"]
    result = run_connector(connector["id"], settings=settings)
    assert result["tables"] == {"things": 7}, result
    sql = f"SELECT count(*), sum(price) FROM connector_{connector['id']}.things"
    assert duckdb_rows(settings, sql) == [(7, 70.0)]
    again = run_connector(connector["id"], settings=settings)
    assert again["tables"] == {"things": 7}
    assert duckdb_rows(settings, sql) == [(7, 70.0)]  # merged by id, not appended
    exported = admin.get("/api/v1/deployments/export").json()["files"]
    (text,) = exported.values()
    assert "type: json_api" in text and "records_path: data" in text
