"""The gateway sends Prefect exactly what the official client would send."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID, uuid4

import pytest
from pydantic import ValidationError

from conveyor.sync.payloads import create_payload, update_payload
from conveyor.sync.prefect_errors import translate
from conveyor.sync.spec import DeploymentSpec, build


@dataclass
class _C:
    id: int = 7
    name: str = "orders"
    schedule: str | None = "0 */6 * * *"
    timezone: str = "UTC"
    is_active: bool = True
    tags: tuple[str, ...] = ()
    work_pool_name: str | None = None
    work_queue_name: str | None = None
    deployment_name: str | None = None
    job_variables: dict[str, Any] | None = None


class _Capture:
    """Stands in for PrefectClient's HTTP layer: keeps the body it was asked to send."""

    def __init__(self) -> None:
        self.bodies: list[Any] = []

    async def request(self, method: str, path: str, json: Any = None, **_: Any) -> Any:
        assert (method, path) == ("POST", "/deployments/")
        self.bodies.append(json)

        class Answer:
            def json(self) -> dict[str, str]:
                return {"id": str(uuid4())}

        return Answer()


def _client_body(flow_id: str, spec: DeploymentSpec) -> Any:
    """What ``PrefectClient.create_deployment`` sends for ``spec``."""
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy, ConcurrencyOptions
    from prefect.client.schemas.schedules import CronSchedule

    from conveyor.sync.spec import PARAMETER_SCHEMA

    capture = _Capture()
    asyncio.run(
        PrefectClient.create_deployment(
            capture,  # type: ignore[arg-type]
            flow_id=UUID(flow_id),
            name=spec.name,
            version=spec.version,
            description=spec.description,
            work_pool_name=spec.work_pool_name,
            work_queue_name=spec.work_queue_name,
            parameters=spec.parameters,
            tags=list(spec.tags),
            schedules=[
                DeploymentScheduleCreate(
                    schedule=CronSchedule(cron=s.cron, timezone=s.timezone, day_or=s.day_or),
                    active=s.active,
                    parameters=s.parameters,
                )
                for s in spec.schedules
            ],
            paused=spec.paused,
            concurrency_limit=spec.concurrency_limit,
            concurrency_options=(
                ConcurrencyOptions(
                    collision_strategy=ConcurrencyLimitStrategy(spec.collision_strategy)
                )
                if spec.collision_strategy
                else None
            ),
            entrypoint=spec.entrypoint,
            parameter_openapi_schema=PARAMETER_SCHEMA,
            enforce_parameter_schema=True,
        )
    )
    return capture.bodies[0]


def _spec(**fields: Any) -> DeploymentSpec:
    return build(_C(**fields), default_work_pool="pool", default_work_queue="default")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "spec",
    [
        _spec(),
        _spec(timezone="Europe/Paris", is_active=False, tags=("team-a", "nightly")),
        _spec(schedule=None, deployment_name="orders-nightly", work_queue_name="big"),
        _spec(schedule="30 2 * * 1-5", work_pool_name="other-pool"),
        replace(_spec(), work_pool_name=None, work_queue_name=None),
        replace(_spec(), collision_strategy=None, concurrency_limit=None),
        replace(_spec(), collision_strategy="CANCEL_NEW"),
    ],
)
def test_create_payload_is_the_clients_own_body(spec: DeploymentSpec) -> None:
    flow_id = str(uuid4())
    assert create_payload(flow_id, spec) == _client_body(flow_id, spec)


def test_a_schedule_the_client_rejects_is_rejected_before_sending() -> None:
    spec = _spec(schedule="61 * * * *")
    with pytest.raises(ValidationError) as info:
        create_payload(str(uuid4()), spec)
    err = translate(info.value, "apply deployment 'x'")
    assert err is not None and not err.transient
    assert "Invalid cron string" in err.reason


def test_an_update_sends_only_the_fields_that_differ() -> None:
    base = _spec(timezone="Europe/Paris", tags=("team-a",))
    assert update_payload(base, base) == {}

    moved = _spec(timezone="Europe/Paris", tags=("team-a",), schedule="15 3 * * 1-5")
    assert update_payload(base, moved) == {"schedules": create_payload("f", moved)["schedules"]}

    paused = _spec(timezone="Europe/Paris", tags=("team-a",), is_active=False)
    body = update_payload(base, paused)
    assert body is not None and set(body) == {"paused", "schedules"}
    assert body["paused"] is True and body["schedules"][0]["active"] is False

    retagged = _spec(timezone="Europe/Paris", tags=("team-a", "eu"))
    assert update_payload(base, retagged) == {"tags": list(retagged.tags)}

    queued = _spec(timezone="Europe/Paris", tags=("team-a",), work_queue_name="bulk")
    assert update_payload(base, queued) == {"work_pool_name": "pool", "work_queue_name": "bulk"}

    unscheduled = _spec(timezone="Europe/Paris", tags=("team-a",), schedule=None)
    body = update_payload(base, unscheduled)
    assert body == {"schedules": [], "tags": list(unscheduled.tags)}


def test_an_update_to_another_name_is_not_a_patch() -> None:
    base = _spec()
    assert update_payload(base, _spec(deployment_name="orders-nightly")) is None
    assert update_payload(base, replace(base, flow_name="another-flow")) is None


def test_an_update_to_a_schedule_the_client_rejects_is_rejected_before_sending() -> None:
    with pytest.raises(ValidationError):
        update_payload(_spec(), _spec(schedule="61 * * * *"))


def test_callers_queued_behind_a_set_up_that_found_prefect_down_get_its_answer_at_once() -> None:
    """A batch waiting on the work-pool set-up while Prefect is down: one refused
    connection answers them all, instead of each trying again behind the lock."""
    import asyncio
    import time

    from conveyor.sync.gateway import PrefectGateway
    from conveyor.sync.prefect_errors import PrefectUnavailable

    async def main() -> tuple[list[BaseException | None], float, int]:
        gw = PrefectGateway("http://127.0.0.1:9/api", timeout=1.0)  # nothing listens on 9
        async with gw:
            t0 = time.perf_counter()
            results = await asyncio.gather(
                *(gw.ensure_work_pool("pool") for _ in range(20)), return_exceptions=True
            )
            return list(results), time.perf_counter() - t0, gw.calls.get("read_work_pool", 0)

    results, seconds, reads = asyncio.run(main())
    assert all(isinstance(r, PrefectUnavailable) for r in results)
    assert reads == 1, f"{reads} callers tried Prefect themselves"
    assert seconds < 5
