"""A DuckDB file destination is refused for a connector whose work pool is not a local
process pool (CONVEYOR_WORK_POOL_TYPE=kubernetes: each flow run is a pod of its own, and a
file written there is lost when it ends): in the API (the UI form calls the same service),
`conveyor deployments validate`, and flagged by `conveyor doctor`. A DuckLake on
PostgreSQL is accepted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conveyor.cli.main import app as cli_app
from conveyor.settings import Settings, get_settings
from tests.fixtures.web import ApiUser

LAKE = {
    "catalog_url": "postgresql://lake:lake-pw-1@catalog.example.com:5432/lake",
    "data_path": "s3://lake-bucket/data",
    "aws_access_key_id": "AKIAEXAMPLE",
    "aws_secret_access_key": "lake-secret-key",
    "endpoint_url": "https://s3.example.com",
}


@pytest.fixture
def app_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"work_pool_type": "kubernetes"})


@pytest.fixture
def k8s_env(app_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The command line's settings: the same database, a kubernetes default pool."""
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", app_settings.effective_database_url)
    monkeypatch.setenv("CONVEYOR_HOME", str(app_settings.home))
    assert app_settings.secret_key is not None
    monkeypatch.setenv("CONVEYOR_SECRET_KEY", app_settings.secret_key.get_secret_value())
    monkeypatch.setenv("CONVEYOR_WORK_POOL_TYPE", "kubernetes")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _refusal(resp: Any, loc: str) -> str:
    assert resp.status_code == 422, resp.text
    problems = resp.json()["detail"] if "detail" in resp.json() else resp.json()
    text = str(problems)
    assert loc in text, text
    return text


def test_api_refuses_a_duckdb_file_on_a_kubernetes_pool(editor: ApiUser) -> None:
    duck = editor.make_destination(name="local-file")
    before = editor.get("/api/v1/connectors").json()
    body = {
        "name": "to-a-pod-disk",
        "source_id": editor.make_source()["id"],
        "destination_id": duck["id"],
        "source_config_override": {"tables": ["orders"]},
    }
    text = _refusal(editor.post("/api/v1/connectors", json=body), "destination_id")
    assert "local-file" in text and "kubernetes" in text
    assert "DuckLake" in text and "PostgreSQL" in text
    assert editor.get("/api/v1/connectors").json() == before  # nothing saved
    # A DuckLake with its catalog in PostgreSQL and data on S3 is what a cluster takes.
    lake = editor.make_destination(name="lake", type="ducklake", config=LAKE)
    made = editor.make_connector(destination_id=lake["id"])
    # Moving that connector onto the DuckDB file is refused too, and changes nothing.
    resp = editor.patch(
        f"/api/v1/connectors/{made['id']}",
        json={"destination_id": duck["id"], "version": made["version"]},
    )
    _refusal(resp, "destination_id")
    assert editor.get(f"/api/v1/connectors/{made['id']}").json()["destination_id"] == lake["id"]


def test_validate_and_doctor_flag_a_duckdb_file_on_a_kubernetes_pool(
    k8s_env: None, editor: ApiUser, tmp_path: Path
) -> None:
    runner = CliRunner()
    folder = tmp_path / "deploy"
    folder.mkdir()
    (folder / "orders.yaml").write_text(
        "name: orders-to-duckdb\n"
        "schedule: {cron: '0 * * * *'}\n"
        "connector:\n"
        "  name: orders\n"
        "  source:\n"
        "    name: shop\n"
        "    type: sql_database\n"
        "    config: {host: db.example.com, database: shop}\n"
        "  destination:\n"
        "    name: pod-disk\n"
        "    type: duckdb\n"
        "    config: {}\n"
        "  source_config_override: {tables: [orders]}\n"
    )
    result = runner.invoke(cli_app, ["deployments", "validate", str(folder)])
    assert result.exit_code != 0, result.output
    out = " ".join(result.output.split())
    assert "orders.yaml:" in out and "connector.destination.type" in out
    assert "kubernetes" in out and "DuckLake" in out
    # doctor: a connector saved before the pool became kubernetes is flagged by name.
    from conveyor.cli.doctor import _placement_check
    from conveyor.db.models import Connector
    from conveyor.db.session import session_scope

    lake = editor.make_destination(name="lake", type="ducklake", config=LAKE)
    made = editor.make_connector(name="old-orders", destination_id=lake["id"])
    assert _placement_check(get_settings()).status == "ok"
    duck = editor.make_destination(name="pod-file")
    with session_scope(get_settings().effective_database_url) as s:
        s.get(Connector, made["id"]).destination_id = duck["id"]  # as before the change
    finding = _placement_check(get_settings())
    assert finding.status == "fail", finding
    assert "old-orders → pod-file (duckdb)" in finding.detail
    assert "DuckLake" in finding.fix
