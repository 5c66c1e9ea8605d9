"""Flow runs started and cancelled from synchronous code (web requests, the flow, the
watchdog): each call opens its own short-lived ``SyncPrefectClient``, with the Prefect API
auth string the gateway uses too. Every Prefect failure leaves as an ``ExternalError``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from conveyor.sync.prefect_errors import prefect_errors

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient


def api_auth_string() -> str | None:
    """Prefect's ``PREFECT_API_AUTH_STRING`` ("user:password" for a server started with
    ``PREFECT_SERVER_API_AUTH_STRING``): clients built with ``api=`` do not read it."""
    from prefect.settings import PREFECT_API_AUTH_STRING

    value = PREFECT_API_AUTH_STRING.value()
    if value is None:
        return None
    return value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)


@contextmanager
def _client(api_url: str, doing: str) -> Iterator[SyncPrefectClient]:
    """A short-lived client (two retries, 15 s timeout); its failures as ``ExternalError``
    saying what was being done."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    with (
        temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 2}),
        prefect_errors(doing),
        SyncPrefectClient(
            api=api_url, auth_string=api_auth_string(), httpx_settings={"timeout": 15.0}
        ) as client,
    ):
        yield client


def create_flow_run(
    api_url: str,
    deployment_id: str,
    *,
    tags: list[str],
    scheduled_at: datetime | None = None,
    idempotency_key: str | None = None,
) -> str:
    """Create a flow run of a deployment, now or Scheduled at ``scheduled_at`` (synchronous:
    web requests and the flow call it); its id.

    The idempotency key makes the client's retry of a request the server did carry out
    return the same flow run instead of starting a second one; a caller that may ask twice
    on purpose (a retry's attempt: the flow and the watchdog's backstop) passes its own.
    """
    from uuid import UUID, uuid4

    from prefect.states import Scheduled

    state: Any = Scheduled(scheduled_time=scheduled_at) if scheduled_at is not None else None

    from conveyor.sync.run_tags import drop_inherited_schedule_tag

    with _client(api_url, f"start a run of deployment {deployment_id}") as client:
        run = client.create_flow_run_from_deployment(
            UUID(deployment_id),
            tags=tags,
            state=state,
            idempotency_key=idempotency_key or uuid4().hex,
        )
        drop_inherited_schedule_tag(client, run, tags)  # not a scheduled run (run_tags.py)
    return str(run.id)


def cancel_flow_run(api_url: str, flow_run_id: str, *, message: str) -> str:
    """Cancel a flow run (synchronous: web requests call it); the state type it is left in.

    One that has not started (Scheduled, Late, AwaitingRetry, Paused) goes to CANCELLED at
    once; one that has (Pending, Running) goes to CANCELLING, and its worker kills the flow
    process, runs the flow's on_cancellation hook and marks it CANCELLED. A final one is left
    as it is; "GONE" if Prefect no longer has it.
    """
    from uuid import UUID

    from prefect.client.schemas.objects import State
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Cancelled, Cancelling

    with _client(api_url, f"cancel flow run {flow_run_id}") as client:
        try:
            state = client.read_flow_run(UUID(flow_run_id)).state
        except ObjectNotFound:
            return "GONE"
        if state is None or state.is_final():
            return state.type.value if state is not None else "GONE"
        started = not (state.is_scheduled() or state.is_paused())
        new: State[Any] = Cancelling(message=message) if started else Cancelled(message=message)
        result = client.set_flow_run_state(UUID(flow_run_id), new, force=not started)
    return result.state.type.value if result.state is not None else new.type.value


def newer_scheduled_runs(
    api_url: str, deployment_id: str, flow_run_id: str, after: datetime, until: datetime
) -> int:
    """How many auto-scheduled flow runs of the deployment, other than ``flow_run_id``, were
    due after ``after`` and by ``until`` and not cancelled (catch-up's ``latest``: a newer one
    stands for an older one only when Prefect has it; after an outage longer than Prefect's
    scheduling horizon the missed times past it have no flow run)."""
    from uuid import UUID

    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
    )

    with _client(api_url, f"read the flow runs of deployment {deployment_id}") as client:
        found = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[UUID(deployment_id)])),
            flow_run_filter=FlowRunFilter(
                # Prefect's DateTime is a datetime subclass; pydantic takes a plain one.
                expected_start_time=FlowRunFilterExpectedStartTime(
                    after_=after,  # type: ignore[arg-type]
                    before_=until,  # type: ignore[arg-type]
                )
            ),
        )
    gone = ("CANCELLED", "CANCELLING")
    return sum(
        1
        for r in found
        if r.auto_scheduled
        and str(r.id) != flow_run_id
        and r.expected_start_time is not None
        and r.expected_start_time > after
        and not (r.state is not None and r.state.type.value in gone)
    )
