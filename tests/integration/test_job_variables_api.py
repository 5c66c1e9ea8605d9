"""Per-connector job variables through the API: checked against the work pool's base job
template (here the configured type's, as when Prefect cannot be reached), each bad value a 422
naming its field that changes nothing, and what is accepted read back as sent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from conveyor.services import job_pool
from conveyor.settings import Settings
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
