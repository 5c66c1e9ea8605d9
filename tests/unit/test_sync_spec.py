"""Connector → deployment spec and its hash; Prefect's JSON projected back onto a spec;
Prefect client errors sorted into transient and terminal."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest

from conveyor.errors import ExternalError
from conveyor.sync import spec as S
from conveyor.sync.payloads import observe
from conveyor.sync.prefect_errors import PrefectUnavailable, ServerBusy, translate


@dataclass
class Conn:
    id: int = 7
    name: str = "orders"
    schedule: str | None = "*/15 * * * *"
    timezone: str = "Europe/Paris"
    is_active: bool = True
    tags: list[str] = field(default_factory=lambda: ["sales", "eu"])
    work_pool_name: str | None = None
    work_queue_name: str | None = None
    deployment_name: str | None = None
    job_variables: dict[str, Any] | None = None


def build(c: Conn) -> S.DeploymentSpec:
    return S.build(c, default_work_pool="pool", default_work_queue="default")


def test_the_mapping_of_the_design_page() -> None:
    spec = build(Conn())
    assert spec.name == "connector-7"
    assert spec.flow_name == "run_connector_pipeline"
    assert spec.entrypoint == "conveyor.pipelines.flow:run_connector_pipeline"
    assert spec.parameters == {"connector_id": 7}
    assert spec.tags == ("connector-7", "conveyor", "eu", "sales", "scheduled")
    assert spec.schedules == (S.CronSpec("*/15 * * * *", "Europe/Paris", active=True),)
    assert spec.paused is False
    assert spec.concurrency_limit == 1
    assert spec.work_pool_name == "pool" and spec.work_queue_name == "default"
    assert spec.connector_id == 7
    assert "orders" in (spec.description or "")


def test_a_deployment_file_name_and_pool_overrides_are_kept() -> None:
    spec = build(Conn(deployment_name="nightly-orders", work_pool_name="k8s", work_queue_name="q"))
    assert spec.name == "nightly-orders"
    assert (spec.work_pool_name, spec.work_queue_name) == ("k8s", "q")
    assert "connector-7" in spec.tags  # found again by tag, never by name


def test_inactive_means_paused_with_an_inactive_schedule() -> None:
    spec = build(Conn(is_active=False))
    assert spec.paused is True
    assert spec.schedules[0].active is False
    assert spec.with_paused(False).paused is False


def test_manual_only_has_no_schedule_and_no_scheduled_tag() -> None:
    spec = build(Conn(schedule=None))
    assert spec.schedules == ()
    assert "scheduled" not in spec.tags


def test_hash_is_deterministic_and_ignores_tag_order() -> None:
    a = build(Conn(tags=["b", "a"]))
    b = build(Conn(tags=["a", "b"]))
    assert a.hash == b.hash == S.spec_hash(a)
    assert len(a.hash) == 64


@pytest.mark.parametrize(
    "change",
    [
        {"schedule": "0 * * * *"},
        {"timezone": "UTC"},
        {"is_active": False},
        {"tags": ["x"]},
        {"name": "renamed"},
        {"work_queue_name": "other"},
        {"deployment_name": "from-file"},
    ],
)
def test_every_field_that_reaches_prefect_changes_the_hash(change: dict[str, Any]) -> None:
    assert build(Conn()).hash != build(replace(Conn(), **change)).hash


@pytest.mark.parametrize(
    "conn",
    [
        Conn(),
        Conn(schedule=None, is_active=False, tags=[]),
        Conn(work_queue_name="bulk"),
        Conn(job_variables={"cpu_request": "500m", "env": {"A": "b"}}),
    ],
)
def test_content_is_every_field_as_asdict_gives_it(conn: Conn) -> None:
    """content() is written out for speed; the hash of every deployment stays the same
    (job variables are left out when there are none: such hashes are as they were)."""
    import dataclasses

    spec = build(conn)
    spec = (
        replace(spec, schedules=(replace(spec.schedules[0], parameters={"a": [1]}),))
        if spec.schedules
        else spec
    )
    full = dataclasses.asdict(spec)
    if not spec.job_variables:
        del full["job_variables"]
    assert spec.content() == full
    assert list(spec.content()) == list(full)
    assert spec.hash == S.spec_hash(spec)
    assert S.DeploymentSpec.from_content(spec.content()) == spec


def test_job_variables_change_the_hash_and_an_edit_of_them_is_a_difference() -> None:
    plain = build(Conn())
    sized = build(Conn(job_variables={"memory_limit": "4Gi"}))
    assert plain.hash != sized.hash
    assert "job_variables" not in plain.content()
    assert sized.differences(plain) == ["job_variables"]
    assert plain.differences(sized) == ["job_variables"]


def test_a_spec_on_record_reads_back_as_the_same_spec() -> None:
    import json

    for spec in (build(Conn()), build(Conn(schedule=None, is_active=False))):
        stored = json.loads(json.dumps(spec.content()))  # as a JSON column gives it back
        again = S.DeploymentSpec.from_content(stored)
        assert again == spec and again.hash == spec.hash
    assert S.DeploymentSpec.from_content({"name": "x"}) is None
    assert S.DeploymentSpec.from_content({**build(Conn()).content(), "extra": 1}) is None


def test_connector_id_from_tags() -> None:
    assert S.connector_id_from_tags(["conveyor", "connector-12"]) == 12
    assert S.connector_id_from_tags(["conveyor", "connector-x"]) is None
    assert S.connector_id_from_tags([]) is None


# --- projection of what Prefect returns ------------------------------------------------

FLOW_ID = "25df5ef4-c255-4708-a198-63ab07bf236f"


def prefect_json(spec: S.DeploymentSpec, **over: Any) -> dict[str, Any]:
    """A deployment as Prefect 3.9's /deployments/filter returns it (trimmed)."""
    data: dict[str, Any] = {
        "id": "6cb2ed98-9308-475c-8115-1e52b25b9665",
        "name": spec.name,
        "version": spec.version,
        "description": spec.description,
        "flow_id": FLOW_ID,
        "concurrency_limit": None,
        "global_concurrency_limit": {"limit": 1, "active": True, "name": "deployment:x"},
        "concurrency_options": {"collision_strategy": "ENQUEUE", "grace_period_seconds": None},
        "paused": spec.paused,
        "schedules": [
            {
                "schedule": {"cron": s.cron, "timezone": s.timezone, "day_or": True},
                "active": s.active,
                "max_scheduled_runs": None,
                "parameters": {},
                "slug": None,
            }
            for s in spec.schedules
        ],
        "job_variables": {},
        "parameters": dict(spec.parameters),
        "tags": list(reversed(spec.tags)),
        "work_queue_name": spec.work_queue_name,
        "entrypoint": spec.entrypoint,
        "work_pool_name": spec.work_pool_name,
    }
    data.update(over)
    return data


def test_a_deployment_read_back_hashes_like_its_spec() -> None:
    spec = build(Conn())
    obs = observe(prefect_json(spec), FLOW_ID)
    assert obs.hash == spec.hash
    assert obs.connector_id == 7


@pytest.mark.parametrize(
    ("over", "field_name"),
    [
        ({"parameters": {"connector_id": 7, "extra": 1}}, "parameters"),
        ({"paused": True}, "paused"),
        ({"flow_id": "00000000-0000-0000-0000-000000000000"}, "flow_name"),
        ({"global_concurrency_limit": None}, "concurrency_limit"),
        (
            {
                "schedules": [
                    {"schedule": {"interval": 60.0}, "active": True, "parameters": {}},
                ]
            },
            "schedules",
        ),
    ],
)
def test_an_edit_in_prefect_changes_the_hash(over: dict[str, Any], field_name: str) -> None:
    spec = build(Conn())
    obs = observe(prefect_json(spec, **over), FLOW_ID)
    assert obs.hash != spec.hash
    assert field_name in spec.differences(obs.spec)


# --- errors ---------------------------------------------------------------------------


def _status_error(code: int, detail: Any = "nope") -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://prefect/api/deployments/")
    response = httpx.Response(code, json={"detail": detail}, request=request)
    return httpx.HTTPStatusError("x", request=request, response=response)


@pytest.mark.parametrize(("code", "transient"), [(500, True), (503, True), (429, True)])
def test_server_errors_are_transient(code: int, transient: bool) -> None:
    err = translate(_status_error(code), "apply deployment")
    assert isinstance(err, ExternalError) and err.transient is transient


@pytest.mark.parametrize("code", [400, 404, 409, 422])
def test_client_errors_are_terminal_and_carry_prefects_reason(code: int) -> None:
    err = translate(_status_error(code, "Work pool not found."), "apply deployment 'c-1'")
    assert err is not None and err.transient is False
    assert "Work pool not found." in err.reason and str(code) in err.reason


def test_validation_details_are_readable() -> None:
    detail = [{"loc": ["body", "schedules", 0, "cron"], "msg": "Invalid cron string"}]
    err = translate(_status_error(422, detail), "apply")
    assert err is not None and "schedules.0.cron: Invalid cron string" in err.reason


def test_unreachable_and_timeouts_are_transient() -> None:
    request = httpx.Request("GET", "http://prefect/api")
    for exc in (httpx.ConnectError("refused", request=request), httpx.ConnectTimeout("x")):
        err = translate(exc, "list deployments")
        assert isinstance(err, PrefectUnavailable) and err.transient
    err = translate(httpx.ReadTimeout("slow"), "list deployments")
    assert isinstance(err, ServerBusy) and err.transient  # there, but overloaded
    # Connected, then the connection broke: this request failed, the server is there (the
    # soak saw a loaded Prefect drop one delete and the whole batch marked "not sent").
    for exc in (httpx.ReadError(""), httpx.RemoteProtocolError("closed mid-answer")):
        err = translate(exc, "delete deployment d-1")
        assert isinstance(err, ServerBusy) and not isinstance(err, PrefectUnavailable)
        assert err.transient and "dropped the connection" in str(err)


def test_other_exceptions_are_not_swallowed() -> None:
    assert translate(KeyError("x"), "anything") is None


def test_the_reconciler_imports_neither_the_web_app_nor_the_flow() -> None:
    """Design rule: web app, reconciler and flow share only domain/db/services."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import conveyor.sync.loop, conveyor.sync.watchdog, conveyor.sync.status\n"
        "import conveyor.cli.reconcile\n"
        "forbidden = ('conveyor.web', 'conveyor.pipelines.flow')\n"
        "bad = [m for m in sys.modules if m.startswith(forbidden)]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
