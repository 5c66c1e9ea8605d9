"""Per-connector job variables through the API: checked against the work pool's base job
template (here the configured type's, as when Prefect cannot be reached), each bad value a 422
naming its field that changes nothing, and what is accepted read back as sent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from conveyor.cli.main import app as cli_app
from conveyor.services import job_pool
from conveyor.settings import Settings, get_settings
from conveyor.web.app import create_app
from tests.fixtures.web import ApiUser, _make_user

SIZED = {
    "cpu_request": "500m",
    "memory_limit": "4Gi",
    "node_selector": {"kubernetes.io/arch": "amd64"},
    "tolerations": [{"key": "etl", "operator": "Exists", "effect": "NoSchedule"}],
    "env": {"REGION": "eu-west"},
    "image": "registry.example/conveyor:1.2.3",
}


@pytest.fixture(autouse=True)
def _fresh_pool_cache() -> Iterator[None]:
    job_pool.forget()
    yield
    job_pool.forget()


def test_a_process_pool_takes_env_only_and_a_refusal_names_the_variable(admin: ApiUser) -> None:
    conn = admin.make_connector()
    url = f"/api/v1/connectors/{conn['id']}"
    ok = admin.patch(url, json={"job_variables": {"env": {"REGION": "eu"}}})
    assert ok.status_code == 200, ok.text
    assert ok.json()["job_variables"] == {"env": {"REGION": "eu"}}
    refused = admin.patch(url, json={"job_variables": {"cpu_request": "1"}})
    assert refused.status_code == 422, refused.text
    assert "job_variables.cpu_request" in refused.text
    assert "process work pool 'default'" in refused.text
    assert admin.get(url).json()["job_variables"] == {"env": {"REGION": "eu"}}  # unchanged


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ({"env": {"CONVEYOR_SECRET_KEY": "x"}}, "CONVEYOR_* and PREFECT_*"),
        ({"env": {"PREFECT_API_URL": "http://evil/api"}}, "come from the platform"),
        ({"env": {"1BAD": "x"}}, "not an environment variable name"),
        ({"memory_limit": "lots"}, "memory_limit"),
        ({"tolerations": [{"operator": "Equal", "value": "x"}]}, "needs operator Exists"),
        ({"node_selector": {"bad key!": "x"}}, "not a valid label key"),
        ({"gpu": 1}, "gpu"),
    ],
)
def test_bad_job_variables_are_422s_that_change_nothing(
    admin: ApiUser, bad: dict, says: str
) -> None:
    conn = admin.make_connector()
    url = f"/api/v1/connectors/{conn['id']}"
    resp = admin.patch(url, json={"job_variables": bad})
    assert resp.status_code == 422, resp.text
    assert says in resp.text
    assert "job_variables" in resp.text
    assert admin.get(url).json()["job_variables"] is None


def test_a_kubernetes_pool_takes_resources_placement_env_and_image(settings: Settings) -> None:
    k8s = settings.model_copy(update={"work_pool_type": "kubernetes"})
    with TestClient(create_app(k8s)) as client:
        admin = _make_user(k8s, client, "kate", "admin")
        # (A DuckDB file destination is refused on a kubernetes pool: PostgreSQL here.)
        dst = admin.make_destination(
            type="postgres",
            config={"host": "db.example", "database": "dw", "username": "w", "password": "pw"},
        )
        created = admin.make_connector(destination_id=dst["id"], job_variables=SIZED)
        assert created["job_variables"] == SIZED
        again = admin.get(f"/api/v1/connectors/{created['id']}").json()
        assert again["job_variables"] == SIZED


def _postgres_destination(user: ApiUser) -> dict:
    # (A DuckDB file destination is refused on a kubernetes pool.)
    return user.make_destination(
        type="postgres",
        config={"host": "db.example", "database": "dw", "username": "w", "password": "pw"},
    )


def test_a_restore_is_checked_against_the_pool_as_it_is_now(settings: Settings) -> None:
    """Version 1 was saved with CPU and memory on a kubernetes pool; the install now runs a
    process pool: restoring it is refused on the variable, like a save, and changes nothing.
    Where the pool takes them, the restore brings them back."""
    k8s = settings.model_copy(update={"work_pool_type": "kubernetes"})
    with TestClient(create_app(k8s)) as client:
        kate = _make_user(k8s, client, "kate", "admin")
        dst = _postgres_destination(kate)
        made = kate.make_connector(destination_id=dst["id"], job_variables=SIZED)
        url = f"/api/v1/connectors/{made['id']}"
        assert kate.patch(url, json={"job_variables": None}).status_code == 200  # version 2
    local = settings.model_copy(update={"work_pool_type": "process"})
    job_pool.forget()
    with TestClient(create_app(local)) as client:
        there = ApiUser(kate.username, kate.role, kate.token, client)
        refused = there.post(f"{url}/versions/1/restore")
        assert refused.status_code == 422, refused.text
        assert "job_variables.cpu_request" in refused.text
        assert "process work pool 'default'" in refused.text
        now = there.get(url).json()
        assert (now["version"], now["job_variables"]) == (2, None)  # nothing changed
    job_pool.forget()
    with TestClient(create_app(k8s)) as client:
        back = ApiUser(kate.username, kate.role, kate.token, client)
        assert back.post(f"{url}/versions/1/restore").status_code == 200
        assert back.get(url).json()["job_variables"] == SIZED


DEPLOYMENT_FILE = """\
name: orders-sized
parameters: {connector_id: 1}
job_variables:
  env: {REGION: eu}
  cpu_request: "1"
connector:
  name: orders
  source: {name: shop}
  destination: {name: warehouse}
  source_config_override: {tables: [orders]}
"""


def test_deployments_validate_checks_job_variables_against_the_pool(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`conveyor deployments validate` (no database) refuses at the line what the pool
    would refuse on save; the API's validate uses the app's settings."""
    folder = tmp_path / "deploy"
    folder.mkdir()
    (folder / "orders.yaml").write_text(DEPLOYMENT_FILE)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("CONVEYOR_PREFECT_API_URL", raising=False)
    runner = CliRunner()
    monkeypatch.setenv("CONVEYOR_WORK_POOL_TYPE", "process")
    get_settings.cache_clear()
    result = runner.invoke(cli_app, ["deployments", "validate", "--no-env", str(folder)])
    assert result.exit_code != 0, result.output
    out = " ".join(result.output.split())
    assert "orders.yaml:5:" in out and "job_variables.cpu_request" in out, out
    assert "process work pool 'default'" in out and "env" in out
    monkeypatch.setenv("CONVEYOR_WORK_POOL_TYPE", "kubernetes")
    get_settings.cache_clear()
    result = runner.invoke(cli_app, ["deployments", "validate", "--no-env", str(folder)])
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output

    k8s = settings.model_copy(update={"work_pool_type": "kubernetes", "prefect_api_url": None})
    body = {"files": {"orders.yaml": DEPLOYMENT_FILE}, "check_env": False}
    for s, valid in ((settings.model_copy(update={"prefect_api_url": None}), False), (k8s, True)):
        job_pool.forget()
        with TestClient(create_app(s)) as client:
            user = _make_user(s, client, f"admin-{s.work_pool_type}", "admin")
            resp = user.post("/api/v1/deployments/validate", json=body)
            assert resp.status_code == 200, resp.text
            assert resp.json()["valid"] is valid, resp.text
            if not valid:
                (problem,) = resp.json()["problems"]
                assert problem["loc"].startswith("orders.yaml:5:")
                assert "job_variables.cpu_request" in problem["reason"], problem
                assert "process work pool 'default'" in problem["reason"], problem


def test_an_editor_cannot_choose_the_image_nor_variables_that_steer_the_run(
    settings: Settings,
) -> None:
    """Attacks by an editor on the run that holds the secrets: a flow image of their own
    (any code, with the platform's key in its environment), or variables that change how
    the run works — code from a file (PYTHONPATH, LD_PRELOAD), a proxy or CA that sees
    the stored passwords, dlt configuration that redirects credentials. Each is refused on
    its field and changes nothing; an admin's image stays through an editor's edit."""
    k8s = settings.model_copy(update={"work_pool_type": "kubernetes"})
    with TestClient(create_app(k8s)) as client:
        kate = _make_user(k8s, client, "kate", "admin")
        eddie = _make_user(k8s, client, "eddie", "editor")
        dst = _postgres_destination(kate)
        mine = eddie.make_connector(destination_id=dst["id"], job_variables={"cpu_request": "1"})
        url = f"/api/v1/connectors/{mine['id']}"
        evil = eddie.patch(url, json={"job_variables": {"image": "attacker.example/steal:1"}})
        assert evil.status_code == 403, evil.text
        for name in (
            "PYTHONPATH",
            "LD_PRELOAD",
            "HTTPS_PROXY",
            "SSL_CERT_FILE",
            "REQUESTS_CA_BUNDLE",
            "AWS_ENDPOINT_URL",
            "SOURCES__SQL_DATABASE__CREDENTIALS",
        ):
            refused = eddie.patch(url, json={"job_variables": {"env": {name: "x"}}})
            assert refused.status_code == 422, (name, refused.text)
            assert "job_variables.env" in refused.text and name in refused.text
        assert eddie.get(url).json()["job_variables"] == {"cpu_request": "1"}  # unchanged
        image = {"cpu_request": "1", "image": "registry.example/conveyor:1.2.3"}
        assert kate.patch(url, json={"job_variables": image}).status_code == 200
        kept = eddie.patch(url, json={"schedule": "0 4 * * *"})
        assert kept.status_code == 200, kept.text
        assert kept.json()["job_variables"] == image
