"""The connector form's Advanced section (the flow runs' job variables): collapsed until
needed, saved and shown back on edit, each bad value refused on its own input, and on a
process work pool only env open, anything else refused by the save's pool check."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from conveyor.db.models import Connector
from conveyor.db.session import session_scope
from conveyor.services import job_pool
from conveyor.settings import Settings
from tests.fixtures.ui import Node, Seed, UIClient, cheap_password_hashing, make_user, parse_html

SIZED_FORM = {
    "job_variables.cpu_request": "500m",
    "job_variables.memory_limit": "4Gi",
    "job_variables.image": "registry.example/conveyor:1.2.3",
    "job_variables.node_selector": "kubernetes.io/arch=amd64\n# a comment\n\nteam=data",
    "job_variables.tolerations": "dedicated=etl:NoSchedule\ngpu:NoExecute",
    "job_variables.env": "REGION=eu-west\nDSN_OPTS=a=b",
}
SIZED = {
    "cpu_request": "500m",
    "memory_limit": "4Gi",
    "image": "registry.example/conveyor:1.2.3",
    "node_selector": {"kubernetes.io/arch": "amd64", "team": "data"},
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "etl", "effect": "NoSchedule"},
        {"key": "gpu", "operator": "Exists", "effect": "NoExecute"},
    ],
    "env": {"REGION": "eu-west", "DSN_OPTS": "a=b"},
}


@pytest.fixture(autouse=True)
def _fresh_pool_cache() -> Iterator[None]:
    job_pool.forget()
    yield
    job_pool.forget()


@pytest.fixture
def k8s(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """An install whose default pool is kubernetes (Prefect not reachable: the configured
    type's template, as the save check uses it then)."""
    cheap_password_hashing(monkeypatch)
    s = settings.model_copy(update={"work_pool_type": "kubernetes", "prefect_api_url": None})
    make_user(s, "alice", "admin")
    return s


@pytest.fixture
def local(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    cheap_password_hashing(monkeypatch)
    s = settings.model_copy(update={"work_pool_type": "process", "prefect_api_url": None})
    make_user(s, "alice", "admin")
    return s


def _form(seed: Seed, destination: str = "", **fields: Any) -> dict[str, Any]:
    data = {
        "name": "orders-sync",
        "source_mode": "existing",
        "source_id": str(seed.endpoint("source")),
        "destination_mode": "existing",
        "destination_id": destination or str(seed.endpoint("destination")),
        "copy_mode": "tables",
        "tables": "orders",
        "schedule_preset": "hourly",
        "timezone": "UTC",
        "is_active": ["false", "true"],
    }
    data.update(fields)
    return data


def _postgres(seed: Seed) -> str:
    # A DuckDB file is refused on a kubernetes pool (services/placement.py).
    return str(
        seed.endpoint(
            "destination",
            type="postgres",
            config={"host": "db.example", "database": "dw", "username": "w", "password": "pw"},
        )
    )


def _connectors(settings: Settings) -> list[Connector]:
    with session_scope(settings.effective_database_url) as session:
        return list(session.query(Connector))


def _input(doc: Node, name: str) -> Node:
    node = doc.find("input", name=name) or doc.find("textarea", name=name)
    assert node is not None, name
    return node


def _value(doc: Node, name: str) -> str:
    node = _input(doc, name)
    return node.text if node.tag == "textarea" else str(node.attrs.get("value", ""))


def test_saved_prefilled_on_edit_and_emptied(k8s: Settings) -> None:
    seed, ui = Seed(k8s), UIClient(k8s).login("alice")
    new = ui.page("/connectors/new")
    section = new.by_id("advanced-step")
    assert section.tag == "details" and "open" not in section.attrs  # collapsed by default
    assert "kubernetes work pool" in new.by_id("advanced-pool").text
    assert "disabled" not in _input(new, "job_variables.cpu_request").attrs

    resp = ui.post("/connectors/new", _form(seed, _postgres(seed), **SIZED_FORM))
    assert resp.status_code == 303, resp.text[-3000:]
    (c,) = _connectors(k8s)
    assert c.job_variables == SIZED

    edit = ui.page(f"/connectors/{c.id}/edit")
    assert "open" not in edit.by_id("advanced-step").attrs
    assert "cpu_request" in edit.by_id("advanced-set").text
    assert _value(edit, "job_variables.cpu_request") == "500m"
    assert _value(edit, "job_variables.image") == "registry.example/conveyor:1.2.3"
    # One line each (a JSONB column may give the keys back in another order).
    assert set(_value(edit, "job_variables.node_selector").split()) == {
        "kubernetes.io/arch=amd64",
        "team=data",
    }
    assert set(_value(edit, "job_variables.env").split()) == {"REGION=eu-west", "DSN_OPTS=a=b"}
    assert _value(edit, "job_variables.tolerations") == "dedicated=etl:NoSchedule gpu:NoExecute"
    # Saving the edit form as shown keeps them exactly.
    shown = {
        n: _value(edit, n).replace(" ", "\n")
        for n in SIZED_FORM
        if n.endswith(("selector", "tolerations", "env"))
    }
    form = _form(seed, str(c.destination_id), **{**SIZED_FORM, **shown})
    form.update(source_id=str(c.source_id), version=str(c.version))
    assert ui.post(f"/connectors/{c.id}/edit", form).status_code == 303
    assert _connectors(k8s)[0].job_variables == SIZED

    # Emptied: the pool's defaults again (null).
    (c,) = _connectors(k8s)
    form = _form(seed, str(c.destination_id), source_id=str(c.source_id), version=str(c.version))
    assert ui.post(f"/connectors/{c.id}/edit", form).status_code == 303
    assert _connectors(k8s)[0].job_variables is None


def test_tolerations_as_yaml_with_seconds_come_back_as_yaml(k8s: Settings) -> None:
    seed, ui = Seed(k8s), UIClient(k8s).login("alice")
    yaml_text = (
        "- {key: node.kubernetes.io/unreachable, operator: Exists,\n"
        "   effect: NoExecute, tolerationSeconds: 60}"
    )
    resp = ui.post(
        "/connectors/new", _form(seed, _postgres(seed), **{"job_variables.tolerations": yaml_text})
    )
    assert resp.status_code == 303, resp.text[-3000:]
    (c,) = _connectors(k8s)
    want = {
        "key": "node.kubernetes.io/unreachable",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 60,
    }
    assert c.job_variables == {"tolerations": [want]}
    shown = _value(ui.page(f"/connectors/{c.id}/edit"), "job_variables.tolerations")
    assert shown.startswith("- {") and '"tolerationSeconds": 60' in shown


BAD = [  # (field, what is typed, what its error says)
    ("cpu_request", "lots", "'lots' is not a Kubernetes quantity"),
    ("memory_limit", "4 GB", "512Mi or 4Gi"),
    ("image", "Registry/Conveyor", "not an image reference"),
    ("node_selector", "arch amd64", "line 1: 'arch amd64' is not key=value"),
    ("node_selector", "bad key!=x", "not a valid label key"),
    ("env", "REGION=eu\nREGION=us", "line 2: REGION is given twice"),
    ("env", "CONVEYOR_SECRET_KEY=x", "come from the platform"),
    ("env", "1BAD=x", "not an environment variable name"),
    ("tolerations", "a=b:c:d", "line 1: 'a=b:c:d' is not key=value:Effect"),
    ("tolerations", "dedicated=etl:Sometimes", "toleration 1 (effect)"),
    ("tolerations", "- [unclosed", "not valid YAML or JSON"),
    (
        "tolerations",
        "- {operator: Equal, value: x}",
        "toleration 1: a toleration without a key",
    ),
]


def test_a_bad_value_is_refused_on_its_field_and_saves_nothing(k8s: Settings) -> None:
    seed, ui = Seed(k8s), UIClient(k8s).login("alice")
    destination = _postgres(seed)
    for field, typed, words in BAD:
        form = _form(seed, destination, **{f"job_variables.{field}": typed})
        resp = ui.post("/connectors/new", form)
        assert resp.status_code == 422, (field, typed, resp.text[-2000:])
        doc = parse_html(resp.text)
        error = doc.by_id(f"err-job_variables-{field}")
        assert error is not None, (field, typed, resp.text[-3000:])
        assert words in error.text, (field, typed, error.text)
        assert "open" in doc.by_id("advanced-step").attrs  # opened where the error is
        assert _input(doc, f"job_variables.{field}").attrs.get("aria-invalid") == "true"
        assert _value(doc, f"job_variables.{field}") == " ".join(typed.split())  # kept
    assert _connectors(k8s) == []


def test_a_process_pool_opens_env_only_and_refuses_the_rest_on_its_field(local: Settings) -> None:
    seed, ui = Seed(local), UIClient(local).login("alice")
    new = ui.page("/connectors/new")
    said = new.by_id("advanced-pool").text
    assert "process work pool" in said and "only env" in said and "Kubernetes" in said
    for name in ("cpu_request", "memory_limit", "image", "node_selector", "tolerations"):
        node = _input(new, f"job_variables.{name}")
        assert "disabled" in node.attrs, name
    assert "disabled" not in _input(new, "job_variables.env").attrs

    ok = ui.post("/connectors/new", _form(seed, **{"job_variables.env": "REGION=eu"}))
    assert ok.status_code == 303, ok.text[-3000:]
    (c,) = _connectors(local)
    assert c.job_variables == {"env": {"REGION": "eu"}}

    # A request made without the browser (the input is disabled there): the pool check.
    form = _form(seed, str(c.destination_id), source_id=str(c.source_id), version=str(c.version))
    form.update({"job_variables.env": "REGION=eu", "job_variables.cpu_limit": "2"})
    resp = ui.post(f"/connectors/{c.id}/edit", form)
    assert resp.status_code == 422, resp.text[-2000:]
    doc = parse_html(resp.text)
    error = doc.by_id("err-job_variables-cpu_limit").text
    assert "process work pool 'default'" in error and "takes only env" in error
    # A value the pool does not take stays open to be cleared.
    assert "disabled" not in _input(doc, "job_variables.cpu_limit").attrs
    assert _connectors(local)[0].job_variables == {"env": {"REGION": "eu"}}
