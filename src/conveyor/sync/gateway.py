"""The only module that talks to Prefect.

Wraps the official ``prefect`` client (work pools: ``pools``; one-shot synchronous flow run
calls: ``flow_runs``). Every Prefect failure leaves here as an
``ExternalError`` (``prefect_errors``). Deployments are read back as
``ObservedDeployment`` (``payloads``); how many calls are in flight is ``limit``'s policy.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import datetime
from time import monotonic
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import httpx

from conveyor.domain.vocabulary import FLOW_NAME, OWNER_TAG, connector_tag
from conveyor.errors import ExternalError
from conveyor.sync.flow_runs import api_auth_string
from conveyor.sync.limit import AdaptiveLimit
from conveyor.sync.payloads import (
    FlowRunState,
    ObservedDeployment,
    create_payload,
    observe,
    update_payload,
)
from conveyor.sync.pools import PoolInfo, read_or_create_pool
from conveyor.sync.prefect_errors import (
    PrefectUnavailable,
    ServerBusy,
    prefect_errors,
    status_code,
)
from conveyor.sync.spec import DeploymentSpec

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

log = logging.getLogger("conveyor.sync.gateway")

PAGE_SIZE = 200  # the Prefect server's maximum page size
READ_CALLS = frozenset({"list_deployments", "flow_run_states", "read_work_pool", "read_flow"})
# A PATCH answered with one of these cannot be applied as sent (the deployment is gone,
# or its schedules were replaced in Prefect by ones a PATCH may not touch): upsert instead.
PATCH_FALLBACK = frozenset({404, 409, 422})
T = TypeVar("T")
# Seconds a set-up call's "Prefect unreachable" answers the callers queued behind it.
SETUP_FAILURE_MEMORY = 2.0


class Gateway(Protocol):
    """What the reconciler needs from Prefect (a fake implements it in unit tests)."""

    async def ensure_work_pool(self, name: str) -> None: ...
    async def list_deployments(self) -> list[ObservedDeployment]: ...
    async def find_deployments(self, connector_id: int) -> list[ObservedDeployment]: ...
    async def upsert(self, spec: DeploymentSpec) -> str: ...
    async def update(self, deployment_id: str, old: DeploymentSpec, new: DeploymentSpec) -> str: ...
    async def set_paused(self, deployment_id: str, paused: bool) -> None: ...
    async def delete(self, deployment_id: str) -> bool: ...
    async def flow_run_states(self, flow_run_ids: list[str]) -> dict[str, FlowRunState]: ...
    async def crash_flow_run(self, flow_run_id: str, message: str) -> bool: ...
    async def stale_flow_runs(self, states: tuple[str, ...], before: datetime) -> list[str]: ...
    async def delete_flow_run(self, flow_run_id: str) -> bool: ...


class PrefectGateway:
    """``Gateway`` over ``PrefectClient``; use as ``async with PrefectGateway(url) as gw``.

    The client's own retries back off for up to a minute per call; here a call that the
    server answered with 5xx/429 (a SQLite-backed server says 503 when its database is
    busy) is retried a few times within a second or two, and a server that cannot be
    reached fails at once: the reconciler then backs off per connector.
    """

    def __init__(
        self,
        api_url: str,
        *,
        timeout: float = 60.0,
        retries: int = 5,
        retry_delay: float = 0.25,
        pool_type: str = "process",
        pool_concurrency: int | None = None,
        owned_pool: str | None = None,
        max_in_flight: int = 16,
    ) -> None:
        self.api_url = api_url
        self.timeout = timeout
        self.retries = retries
        self.retry_delay = retry_delay
        # The configured pool (settings work_pool_type / work_pool_concurrency): a missing
        # pool is created so, never otherwise; ``owned_pool`` (the default pool, which
        # Conveyor's workers poll) must have that type.
        self.pool_type = pool_type
        self.pool_concurrency = pool_concurrency
        self.owned_pool = owned_pool
        self._client: PrefectClient | None = None
        self._settings_ctx: Any = None
        self._flow_id: str | None = None
        self._pools: dict[str, PoolInfo] = {}
        self._setup_lock = asyncio.Lock()
        self._setup_failed: tuple[PrefectUnavailable, float] | None = None
        self.in_flight = AdaptiveLimit(max_in_flight)
        self.calls: dict[str, int] = {}  # calls per kind, retries not counted (benchmarks, tests)
        self.retried: dict[str, int] = {}  # retries per kind after a busy answer

    async def __aenter__(self) -> PrefectGateway:
        from prefect.client.orchestration import PrefectClient
        from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

        self._settings_ctx = temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 0})
        self._settings_ctx.__enter__()
        self._client = PrefectClient(
            api=self.api_url,
            auth_string=api_auth_string(),
            httpx_settings={"timeout": self.timeout},
        )
        await self._client.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._client is not None:
                await self._client.__aexit__(exc_type, exc, tb)
        finally:
            self._client = None
            if self._settings_ctx is not None:
                self._settings_ctx.__exit__(exc_type, exc, tb)
                self._settings_ctx = None

    @property
    def client(self) -> PrefectClient:
        if self._client is None:
            raise RuntimeError("PrefectGateway used outside 'async with'")
        return self._client

    @property
    def write_calls(self) -> int:
        return sum(n for k, n in self.calls.items() if k not in READ_CALLS)

    async def _call(self, kind: str, doing: str, call: Callable[[], Awaitable[T]]) -> T:
        """Count, translate errors, retry what the server refused for being busy."""
        attempt = 0
        self.calls[kind] = self.calls.get(kind, 0) + 1
        while True:
            busy = False
            await self.in_flight.acquire()
            try:
                with prefect_errors(doing):
                    return await call()
            except ExternalError as exc:
                busy = isinstance(exc, ServerBusy) or (
                    exc.transient and status_code(exc) is not None
                )
                if not busy or attempt >= self.retries:
                    raise
            finally:
                await self.in_flight.release(busy=busy)
            attempt += 1
            self.retried[kind] = self.retried.get(kind, 0) + 1
            await asyncio.sleep(self.retry_delay * 2**attempt * random.uniform(0.5, 1.0))

    async def ensure_work_pool(self, name: str) -> None:
        """Create the work pool if missing, with the configured type and limit (none unless
        one was configured); a pool that exists keeps its type and limit. The owned pool of
        another type is an error (non-transient) that says what to do, never changed."""
        await self.work_pool(name)

    async def work_pool(self, name: str, *, fresh: bool = False) -> PoolInfo:
        """The pool's type and job variables (read once, then cached; ``fresh`` reads again)."""
        if fresh:
            self._pools.pop(name, None)
        if name not in self._pools:
            async with self._setup_lock:
                self._raise_recent_setup_failure()
                if name not in self._pools:
                    try:
                        self._pools[name] = await self._ensure_work_pool(name)
                    except PrefectUnavailable as exc:
                        self._setup_failed = (exc, monotonic())
                        raise
        info = self._pools[name]
        if name == self.owned_pool and info.type != self.pool_type:
            self._pools.pop(name, None)  # read again next time: it may be fixed by then
            raise ExternalError(
                f"work pool '{name}' is a {info.type!r} pool, but Conveyor is configured for "
                f"{self.pool_type!r} (CONVEYOR_WORK_POOL_TYPE; the chart's worker.type)",
                hint=f"delete the pool (`prefect work-pool delete {name}`) so that it is "
                "created again with the configured type, or configure that type",
            )
        return info

    async def check_job_variables(self, spec: DeploymentSpec) -> None:
        """Refuse (non-transient) job variables the deployment's pool does not take, naming
        them; read the pool again first when its cached template lacks one (a worker may
        have put its template on it since)."""
        if not spec.job_variables or not spec.work_pool_name:
            return
        from conveyor.domain.job_variables import accepted_problems

        info = await self.work_pool(spec.work_pool_name)
        if not set(spec.job_variables) <= info.variables:
            info = await self.work_pool(spec.work_pool_name, fresh=True)
        problems = accepted_problems(
            spec.job_variables, info.variables, pool=spec.work_pool_name, pool_type=info.type
        )
        if problems:
            raise ExternalError("; ".join(str(p) for p in problems))

    async def _ensure_work_pool(self, name: str) -> PoolInfo:
        return await read_or_create_pool(
            self._call,
            self.client,
            name,
            pool_type=self.pool_type,
            concurrency=self.pool_concurrency,
        )

    async def _flow(self) -> str:
        if self._flow_id is None:
            async with self._setup_lock:
                self._raise_recent_setup_failure()
                if self._flow_id is None:
                    try:
                        self._flow_id = await self._call(
                            "read_flow", f"register flow '{FLOW_NAME}'", self._read_or_create_flow
                        )
                    except PrefectUnavailable as exc:
                        self._setup_failed = (exc, monotonic())
                        raise
        return self._flow_id

    def _raise_recent_setup_failure(self) -> None:
        """Callers queued behind a set-up call that just found Prefect unreachable get
        that answer at once instead of each trying again (a batch of 250 changes waited
        1.5 s apiece behind the lock while Prefect was down)."""
        if self._setup_failed is not None:
            exc, at = self._setup_failed
            if monotonic() - at < SETUP_FAILURE_MEMORY:
                raise exc
            self._setup_failed = None

    async def _read_or_create_flow(self) -> str:
        # Read first: registering is an upsert, a write a no-op pass should not make.
        try:
            return str((await self.client.read_flow_by_name(FLOW_NAME)).id)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 404:
                raise
        self.calls["create_flow"] = self.calls.get("create_flow", 0) + 1
        return str(await self.client.create_flow_from_name(FLOW_NAME))

    async def _list(self, tags: list[str]) -> list[ObservedDeployment]:
        """Every page, in order, with the next page already asked for while one is read:
        the server (whose listing is most of a full pass) never waits for this client."""
        flow_id = await self._flow()
        seen: dict[str, ObservedDeployment] = {}

        async def page_of(offset: int) -> list[dict[str, Any]]:
            body = {
                "deployments": {"tags": {"all_": tags}},
                "sort": "NAME_ASC",
                "limit": PAGE_SIZE,
                "offset": offset,
            }
            # Raw JSON: validating 1,000 full DeploymentResponse models costs more than
            # the whole comparison, and only a handful of fields matter here.
            response = await self.client.request("POST", "/deployments/filter", json=body)
            return list(response.json())

        offsets = itertools.count(0, PAGE_SIZE)

        def ask() -> asyncio.Task[list[dict[str, Any]]]:
            offset = next(offsets)
            return asyncio.create_task(
                self._call(
                    "list_deployments", "list Conveyor's deployments", lambda: page_of(offset)
                )
            )

        # One page first (most installations fit in it), then always one page ahead.
        asked = [ask()]
        try:
            while True:
                page = await asked.pop(0)
                full = len(page) == PAGE_SIZE
                while full and len(asked) < 2:
                    asked.append(ask())
                for item in page:
                    obs = observe(item, flow_id)
                    seen[obs.id] = obs
                if not full:
                    return list(seen.values())
        finally:
            for task in asked:
                task.cancel()
            await asyncio.gather(*asked, return_exceptions=True)

    async def list_deployments(self) -> list[ObservedDeployment]:
        """Every deployment tagged ``conveyor``, all pages."""
        return await self._list([OWNER_TAG])

    async def find_deployments(self, connector_id: int) -> list[ObservedDeployment]:
        """The deployments tagged as belonging to one connector."""
        return await self._list([OWNER_TAG, connector_tag(connector_id)])

    async def upsert(self, spec: DeploymentSpec) -> str:
        """Create or replace the deployment (Prefect upserts on flow + name); its id."""
        try:
            return await self._upsert(spec)
        except ExternalError as exc:
            if exc.transient or status_code(exc) not in (404, 409):
                raise
            # The flow or work pool we cached may be gone (a reset Prefect database).
            self._flow_id = None
            self._pools.clear()
            return await self._upsert(spec)

    async def _upsert(self, spec: DeploymentSpec) -> str:
        if spec.work_pool_name:
            await self.ensure_work_pool(spec.work_pool_name)
            await self.check_job_variables(spec)
        flow_id = await self._flow()
        doing = f"apply deployment '{spec.name}'"
        with prefect_errors(doing):
            payload = create_payload(flow_id, spec)

        async def call() -> str:
            # The body PrefectClient.create_deployment sends (a unit test holds them equal),
            # built without its pydantic round trip: on a two-core machine the client's CPU
            # is taken from the Prefect server it waits for.
            response = await self.client.request("POST", "/deployments/", json=payload)
            deployment_id = response.json().get("id")
            if not deployment_id:
                raise ExternalError(f"Prefect answered without a deployment id to {doing}")
            return str(deployment_id)

        return await self._call("upsert", doing, call)

    async def update(self, deployment_id: str, old: DeploymentSpec, new: DeploymentSpec) -> str:
        """Turn the deployment, which matches ``old``, into one matching ``new`` with a PATCH
        of the fields that differ; an upsert when a PATCH cannot (see ``update_payload``),
        including when the deployment is gone. Its id."""
        doing = f"update deployment '{new.name}'"
        with prefect_errors(doing):
            body = update_payload(old, new)
        if body is None:
            return await self.upsert(new)
        if not body:
            return deployment_id
        if new.work_pool_name and "work_pool_name" in body:
            await self.ensure_work_pool(new.work_pool_name)
        if "work_pool_name" in body or "job_variables" in body:
            await self.check_job_variables(new)

        async def call() -> None:
            await self.client.request(
                "PATCH", "/deployments/{id}", path_params={"id": deployment_id}, json=body
            )

        try:
            await self._call("update", doing, call)
        except ExternalError as exc:
            if exc.transient or status_code(exc) not in PATCH_FALLBACK:
                raise
            return await self.upsert(new)
        return deployment_id

    async def set_paused(self, deployment_id: str, paused: bool) -> None:
        """Pause or resume with the client's own calls (schedules stay as they are)."""
        if paused:
            await self._call(
                "pause",
                f"pause deployment {deployment_id}",
                lambda: self.client.pause_deployment(deployment_id),
            )
        else:
            await self._call(
                "resume",
                f"resume deployment {deployment_id}",
                lambda: self.client.resume_deployment(deployment_id),
            )

    async def delete(self, deployment_id: str) -> bool:
        """Delete a deployment; False if it was already gone."""
        from uuid import UUID

        from prefect.exceptions import ObjectNotFound

        async def call() -> bool:
            try:
                await self.client.delete_deployment(UUID(deployment_id))
            except ObjectNotFound:
                return False
            return True

        return await self._call("delete", f"delete deployment {deployment_id}", call)

    async def flow_run_states(self, flow_run_ids: list[str]) -> dict[str, FlowRunState]:
        """Current state of each flow run that still exists."""
        from uuid import UUID

        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        states: dict[str, FlowRunState] = {}
        for start in range(0, len(flow_run_ids), PAGE_SIZE):
            chunk = [UUID(i) for i in flow_run_ids[start : start + PAGE_SIZE]]
            flow_runs = await self._call(
                "flow_run_states",
                "read flow runs",
                lambda chunk=chunk: self.client.read_flow_runs(  # type: ignore[misc]
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)),
                    limit=PAGE_SIZE,
                ),
            )
            for run in flow_runs:
                if run.state is not None:
                    states[str(run.id)] = FlowRunState(
                        type=run.state.type.value, name=run.state.name, message=run.state.message
                    )
        return states

    async def stale_flow_runs(self, states: tuple[str, ...], before: datetime) -> list[str]:
        """Ids of Conveyor's flow runs (its flow's) in one of ``states`` (Prefect state
        types) since before ``before``; at most one page, the oldest first."""
        from prefect.client.schemas.filters import (
            FlowFilter,
            FlowFilterName,
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType
        from prefect.client.schemas.sorting import FlowRunSort

        flow_runs = await self._call(
            "stale_flow_runs",
            "read flow runs",
            lambda: self.client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType(s) for s in states])
                    )
                ),
                sort=FlowRunSort.START_TIME_ASC,
                limit=PAGE_SIZE,
            ),
        )
        return [
            str(r.id)
            for r in flow_runs
            if r.state is not None and r.state.timestamp is not None and r.state.timestamp < before
        ]

    async def crash_flow_run(self, flow_run_id: str, message: str) -> bool:
        """Force the flow run to Crashed (frees its deployment's concurrency slot)."""
        from prefect.exceptions import ObjectNotFound
        from prefect.states import Crashed

        async def call() -> bool:
            try:
                await self.client.set_flow_run_state(
                    flow_run_id, Crashed(message=message), force=True
                )
            except ObjectNotFound:
                return False
            return True

        return await self._call("crash_flow_run", f"mark flow run {flow_run_id} crashed", call)

    async def delete_flow_run(self, flow_run_id: str) -> bool:
        """Delete a flow run (retention); False if Prefect no longer had it."""
        from uuid import UUID

        from prefect.exceptions import ObjectNotFound

        async def call() -> bool:
            try:
                await self.client.delete_flow_run(UUID(flow_run_id))
            except ObjectNotFound:
                return False
            return True

        return await self._call("delete_flow_run", f"delete flow run {flow_run_id}", call)
