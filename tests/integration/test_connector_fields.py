"""The connector field list (domain/connector_fields.py) drives the API models, the audit
snapshot, the Prefect spec and deployment files: every listed field makes the whole trip."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from conveyor.domain.connector_fields import FIELDS, NAMES, TOP_LEVEL, ConnectorField
from conveyor.domain.models import ConnectorCreate, ConnectorOut, ConnectorPatch
from conveyor.sync.spec import build
from tests.fixtures.web import ApiUser

# A value other than the default for each field; a new field of a plain type needs no entry.
_SAMPLES: dict[str, Any] = {
    "schedule": "30 2 * * 1-5",
    "timezone": "Europe/Paris",
    "retry_policy": {"max_attempts": 5, "backoff_seconds": [5, 30]},
    "catch_up": "all",
    "schema_changes": "ignore_new_columns",
    "auto_pause_after_failures": 3,
    "freshness_sla_minutes": 90,
    # A process pool (the default) takes only env; tests/integration/test_job_variables.py
    # has the rest against a kubernetes pool.
    "job_variables": {"env": {"REGION": "eu-west"}},
}
_BY_TYPE: dict[Any, Any] = {str | None: "sample-value", bool: False, list[str]: ["t1", "t2"]}


def sample(f: ConnectorField) -> Any:
    if f.name in _SAMPLES:
        return _SAMPLES[f.name]
    assert f.type in _BY_TYPE, f"add a sample value for {f.name} ({f.type}) to this test"
    value = _BY_TYPE[f.type]
    return f"{f.name}-x" if value == "sample-value" else value


def default(f: ConnectorField) -> Any:
    return f.default_factory() if f.default_factory else f.default


def test_models_carry_every_listed_field() -> None:
    for model in (ConnectorCreate, ConnectorPatch, ConnectorOut):
        assert set(NAMES) <= set(model.model_fields), model.__name__
    nullable = [f.name for f in FIELDS if f.nullable]
    patch = ConnectorPatch.model_validate({name: None for name in nullable})
    assert patch.model_dump(exclude_unset=True) == {name: None for name in nullable}
    # A field that cannot be null refuses it, naming the field (the schema says so too).
    for f in FIELDS:
        if not f.nullable:
            with pytest.raises(ValidationError) as err:
                ConnectorPatch.model_validate({f.name: None})
            assert err.value.errors()[0]["loc"] == (f.name,)


def test_fields_marked_prefect_and_only_those_change_the_deployment() -> None:
    base = SimpleNamespace(id=3, name="c", deployment_name=None, schedule="0 3 * * *")
    values = {f.name: default(f) for f in FIELDS if f.name != "schedule"}

    def spec(**changed: Any) -> Any:
        row = SimpleNamespace(**{**vars(base), **values, **changed})
        return build(row, default_work_pool="pool", default_work_queue="queue")

    for f in FIELDS:
        changed = spec(**{f.name: sample(f)}) != spec()
        assert changed == f.prefect, f"{f.name}: prefect={f.prefect} but spec changed={changed}"


def test_every_field_round_trips_api_audit_export_and_apply(
    admin: ApiUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = admin.make_connector()
    url = f"/api/v1/connectors/{conn['id']}"
    wanted = {f.name: sample(f) for f in FIELDS}

    # API PATCH, and the API's view.
    resp = admin.patch(url, json=wanted)
    assert resp.status_code == 200, resp.text
    assert {name: resp.json()[name] for name in NAMES} == wanted

    # The audit snapshot of that change.
    entry = admin.get("/api/v1/audit").json()[0]
    assert entry["action"] == "connector.update"
    assert {name: entry["after"][name] for name in NAMES} == wanted
    assert all(entry["before"][name] != wanted[name] for name in NAMES)

    # Export: top-level fields sit at the file's top level.
    exported = admin.get("/api/v1/deployments/export").json()
    files = exported["files"]
    for var in exported["env_vars"]:
        monkeypatch.setenv(var, "secret")  # the file refers to the endpoint's secrets
    (text,) = files.values()
    doc = yaml.safe_load(text)
    for f in TOP_LEVEL:
        assert doc[f.name] == wanted[f.name]

    # Every field back to its default, then plan and apply the exported file.
    reset = admin.patch(url, json={f.name: default(f) for f in FIELDS})
    assert reset.status_code == 200, reset.text
    plan = admin.post("/api/v1/deployments/plan", json={"files": files})
    assert plan.status_code == 200, plan.text
    plan = plan.json()
    (change,) = plan["connectors"]
    assert change["action"] == "update"
    assert set(NAMES) <= {c["field"] for c in change["changes"]}
    applied = admin.post("/api/v1/deployments/apply", json={"files": files})
    assert applied.status_code == 200, applied.text
    after = admin.get(url).json()
    assert {name: after[name] for name in NAMES} == wanted
