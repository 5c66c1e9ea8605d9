"""The only module that talks to Prefect.

Wraps the official ``prefect`` client. Every Prefect failure leaves here as an
``ExternalError``: transient for connection errors, timeouts and 5xx (retry later),
terminal for 4xx (the request itself is wrong; retrying it unchanged cannot help).
Deployments are read back as ``ObservedDeployment``: Prefect's deployment projected onto
the same ``DeploymentSpec`` the reconciler builds, so comparing them is comparing hashes.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import httpx
from pydantic import ValidationError

from conveyor.errors import ExternalError
from conveyor.sync.spec import (
    FLOW_NAME,
    OWNER_TAG,
    PARAMETER_SCHEMA,
    CronSpec,
    DeploymentSpec,
    connector_tag,
)

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

log = logging.getLogger("conveyor.sync.gateway")

PAGE_SIZE = 200  # the Prefect server's maximum page size
# A process worker without a limit starts every queued run at once (see design.md).
DEFAULT_POOL_CONCURRENCY = 4
READ_CALLS = frozenset({"list_deployments", "flow_run_states", "read_work_pool", "read_flow"})
# A PATCH answered with one of these cannot be applied as sent (the deployment is gone,
# or its schedules were replaced in Prefect by ones a PATCH may not touch): upsert instead.
PATCH_FALLBACK = frozenset({404, 409, 422})
T = TypeVar("T")
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})


class PrefectUnavailable(ExternalError):
    """Prefect could not be reached or did not answer in time."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, hint="is the Prefect server running?", transient=True)


class ServerBusy(ExternalError):
    """Prefect took the request but did not answer in time."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, hint="the Prefect server is overloaded", transient=True)


@dataclass(frozen=True)
class ObservedDeployment:
    """A Conveyor-tagged deployment as Prefect has it."""

    id: str
    name: str
    spec: DeploymentSpec

    @property
    def connector_id(self) -> int | None:
        return self.spec.connector_id

    @property
    def hash(self) -> str:
        return self.spec.hash


@dataclass(frozen=True)
class FlowRunState:
    type: str  # Prefect StateType: SCHEDULED, PENDING, RUNNING, COMPLETED, FAILED, ...
    name: str | None
    message: str | None

    @property
    def is_final(self) -> bool:
        return self.type in FINAL_STATES


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


# --- errors -----------------------------------------------------------------------


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        if isinstance(detail, list):  # FastAPI validation errors
            return "; ".join(
                f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}"
                for d in detail
                if isinstance(d, dict)
            ) or str(detail)
        return str(detail)
    return str(body)[:300]


def translate(exc: BaseException, doing: str) -> ExternalError | None:
    """The Conveyor error for a Prefect client failure, or None if it is not one."""
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    if isinstance(exc, ExternalError):
        return exc
    if isinstance(exc, ObjectNotFound | ObjectAlreadyExists):
        inner = exc.http_exc
        if isinstance(inner, httpx.HTTPStatusError):
            return translate(inner, doing)
        return ExternalError(f"Prefect refused to {doing}: {exc}")
    if isinstance(exc, httpx.HTTPStatusError):
        code = exc.response.status_code
        reason = f"Prefect answered {code} to {doing}: {_detail(exc.response)}"
        return ExternalError(reason, transient=code >= 500 or code in (408, 429))
    if isinstance(exc, httpx.ConnectTimeout):
        return PrefectUnavailable(f"cannot reach Prefect to {doing}: connection timed out")
    if isinstance(exc, httpx.TimeoutException):
        # Connected but no answer: an overloaded server, not a missing one.
        return ServerBusy(f"Prefect did not answer in time to {doing}")
    if isinstance(exc, httpx.TransportError):
        return PrefectUnavailable(f"cannot reach Prefect to {doing}: {exc or type(exc).__name__}")
    if isinstance(exc, ValidationError):
        # The client validates schedules itself (e.g. a cron expression it rejects).
        why = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        return ExternalError(f"Prefect rejected the request to {doing}: {why}")
    if isinstance(exc, ValueError):
        return ExternalError(f"Prefect rejected the request to {doing}: {exc}")
    return None


@contextmanager
def prefect_errors(doing: str) -> Iterator[None]:
    """Re-raise Prefect client failures as ``ExternalError``."""
    try:
        yield
    except Exception as exc:
        err = translate(exc, doing)
        if err is None or err is exc:
            raise
        raise err from exc


def _status(exc: ExternalError) -> int | None:
    cause = exc.__cause__
    if isinstance(cause, httpx.HTTPStatusError):
        return cause.response.status_code
    http_exc = getattr(cause, "http_exc", None)
    if isinstance(http_exc, httpx.HTTPStatusError):
        return http_exc.response.status_code
    return None


# --- projection -------------------------------------------------------------------


def observe(data: dict[str, Any], flow_id: str | None) -> ObservedDeployment:
    """Project a deployment as the Prefect API returns it (JSON) onto a DeploymentSpec."""
    schedules = []
    for s in data.get("schedules") or []:
        sched = s.get("schedule") or {}
        if "cron" in sched:
            schedules.append(
                CronSpec(
                    cron=sched["cron"],
                    timezone=sched.get("timezone") or "UTC",
                    active=bool(s.get("active")),
                    day_or=bool(sched.get("day_or", True)),
                    parameters=dict(s.get("parameters") or {}),
                )
            )
        else:  # an interval or rrule schedule added in Prefect's UI: never ours
            schedules.append(CronSpec(cron=f"<{sorted(sched)}>", timezone="", active=False))
    limit = data.get("global_concurrency_limit") or {}
    options = data.get("concurrency_options") or {}
    spec = DeploymentSpec(
        name=data["name"],
        flow_name=FLOW_NAME if str(data.get("flow_id")) == flow_id else f"flow:{data['flow_id']}",
        entrypoint=data.get("entrypoint"),
        version=data.get("version"),
        description=data.get("description"),
        work_pool_name=data.get("work_pool_name"),
        work_queue_name=data.get("work_queue_name"),
        parameters=dict(data.get("parameters") or {}),
        tags=tuple(sorted(set(data.get("tags") or []))),
        schedules=tuple(schedules),
        paused=bool(data.get("paused")),
        concurrency_limit=limit.get("limit") if limit else data.get("concurrency_limit"),
        collision_strategy=options.get("collision_strategy"),
    )
    return ObservedDeployment(id=str(data["id"]), name=data["name"], spec=spec)


# --- requests -------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _schedule(cron: str, timezone: str, day_or: bool) -> dict[str, Any]:
    """A cron schedule as the client sends it, validated by the client's own model (it
    rejects some cron strings and timezones); cached, since most connectors share a few."""
    from prefect.client.schemas.schedules import CronSchedule

    return CronSchedule(cron=cron, timezone=timezone, day_or=day_or).model_dump(mode="json")


def _schedules(spec: DeploymentSpec) -> list[dict[str, Any]]:
    return [
        {
            "schedule": dict(_schedule(s.cron, s.timezone, s.day_or)),
            "active": s.active,
            "max_scheduled_runs": None,
            "parameters": dict(s.parameters),
            "slug": None,
            "replaces": None,
        }
        for s in spec.schedules
    ]


def _concurrency_options(spec: DeploymentSpec) -> dict[str, Any] | None:
    if not spec.collision_strategy:
        return None
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy

    ConcurrencyLimitStrategy(spec.collision_strategy)  # the client's check
    return {"collision_strategy": spec.collision_strategy}


def create_payload(flow_id: str, spec: DeploymentSpec) -> dict[str, Any]:
    """The JSON body of ``PrefectClient.create_deployment`` for ``spec``: an upsert on
    (flow, name). Raises the client's ``ValidationError`` for a schedule it rejects."""
    payload: dict[str, Any] = {
        "name": spec.name,
        "flow_id": flow_id,
        "paused": spec.paused,
        "schedules": _schedules(spec),
        "concurrency_limit": spec.concurrency_limit,
        "concurrency_options": _concurrency_options(spec),
        "enforce_parameter_schema": True,
        "parameter_openapi_schema": PARAMETER_SCHEMA,
        "parameters": dict(spec.parameters),
        "tags": list(spec.tags),
        "labels": {},
        "work_queue_name": spec.work_queue_name,
        "storage_document_id": None,
        "infrastructure_document_id": None,
        "description": spec.description,
        "path": None,
        "entrypoint": spec.entrypoint,
        "job_variables": {},
        "version": spec.version,
    }
    if spec.work_pool_name is not None:
        payload["work_pool_name"] = spec.work_pool_name
    return payload


def update_payload(old: DeploymentSpec, new: DeploymentSpec) -> dict[str, Any] | None:
    """The body of ``PATCH /deployments/{id}`` that turns a deployment matching ``old``
    into one matching ``new``: only the fields that differ, so Prefect does only the work
    they need (a schedule change costs the server about half an upsert). None when a
    PATCH cannot do it: another name or flow is another deployment.

    Schedules go without slugs, which makes Prefect replace all of the deployment's
    schedules with these (Prefect answers 422 if every schedule there has a slug: then
    the caller upserts). Raises the client's ``ValidationError`` for a schedule it rejects.
    """
    if old.name != new.name or old.flow_name != new.flow_name:
        return None
    body: dict[str, Any] = {}
    if old.schedules != new.schedules:
        body["schedules"] = _schedules(new)
    for name in ("paused", "version", "description", "entrypoint"):
        if getattr(old, name) != getattr(new, name):
            body[name] = getattr(new, name)
    if old.tags != new.tags:
        body["tags"] = list(new.tags)
    if old.parameters != new.parameters:
        body["parameters"] = dict(new.parameters)
    if (old.work_pool_name, old.work_queue_name) != (new.work_pool_name, new.work_queue_name):
        body["work_pool_name"] = new.work_pool_name
        body["work_queue_name"] = new.work_queue_name
    if (old.concurrency_limit, old.collision_strategy) != (
        new.concurrency_limit,
        new.collision_strategy,
    ):
        body["concurrency_limit"] = new.concurrency_limit
        body["concurrency_options"] = _concurrency_options(new)
    return body


# --- the real gateway -------------------------------------------------------------


class LimitPolicy:
    """How many Prefect calls to keep in flight: more while the server keeps up, fewer
    as soon as it says it is busy.

    The Prefect server is one Python process whose best concurrency depends on what is
    behind it (bench/sync.py, 1,000 schedule changes): a PostgreSQL-backed server did them
    15-20 % faster with 16 in flight than with 4 and never answered 503; a SQLite-backed
    one serialises writes, answers 503 when they pile up (measured at 4 in flight: 2 % of
    schedule changes, 18 % of creates; more at 16) and was 15-30 % slower at 8 or 16 than
    at 4. So:

    - the limit starts at ``floor`` and goes up one level (4, 6, 8, 12, 16, ...) after
      ``patience`` windows of completions with no busy answer, up to ``maximum``. Only
      completions while every slot was taken count: then the limit, not the caller, set
      the pace;
    - a busy answer (503/429/5xx) halves it at once, never below ``floor``, and doubles
      ``patience`` (up to 32); each step up halves it again. A server that says busy even
      at the floor stays near it; one that said busy once, during a restart say, is back
      at the maximum after a few steps.

    Creates on a SQLite-backed server are the unsettled case: in one run the raw loops at
    8 and 16 in flight created 1,000 deployments in 144 s against 185 s at 4 (run 10),
    while later probes of this gateway held at 2, 4 and 8 found 4 the fastest and
    steadiest (600 creates: 100-108 s at 4, 112-162 s at 8, 127-194 s at 2; 8 doubled the
    503s). Identical passes there vary by up to 60 % (docs/benchmarks.md).

    Measuring throughput instead (hill-climbing on completions per second) was tried and
    dropped: one-second windows on a real server varied by ±30 % (its scheduler wakes every
    5 s), far more than the 15 % it had to tell apart, and the limit wandered (bench notes
    in docs/benchmarks.md).
    """

    LEVELS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)

    def __init__(self, maximum: int, floor: int = 4, *, window: int = 16) -> None:
        maximum = max(1, maximum)
        self.levels = [n for n in self.LEVELS if n < maximum] + [maximum]
        self._floor = self._level_at_most(floor)
        self._at = self._floor
        self.window = window
        self.patience = 1
        self.changes: list[int] = [self.limit]  # the limits it has had, in order
        self._clean = 0  # completions with every slot taken since the last change

    @property
    def limit(self) -> int:
        return self.levels[self._at]

    def completed(self, *, saturated: bool, busy: bool = False) -> None:
        """One call finished; ``saturated``: every slot was taken when it did."""
        if busy:
            self.patience = min(self.patience * 2, 32)
            self._move(max(self._floor, self._level_at_most(self.limit // 2)))
            return
        if not saturated:
            return
        self._clean += 1
        if self._clean >= self.patience * max(self.window, 2 * self.limit):
            self.patience = max(1, self.patience // 2)
            self._move(min(self._at + 1, len(self.levels) - 1))

    def _level_at_most(self, n: int) -> int:
        return max((i for i, level in enumerate(self.levels) if level <= n), default=0)

    def _move(self, at: int) -> None:
        self._clean = 0
        if at == self._at:
            return
        log.debug("Prefect calls in flight: %d -> %d", self.limit, self.levels[at])
        self._at = at
        self.changes.append(self.limit)
        if len(self.changes) > 1000:  # a reconciler runs for weeks: keep the recent path
            del self.changes[:500]


class AdaptiveLimit:
    """A semaphore whose size a ``LimitPolicy`` sets; ``release`` reports each call."""

    def __init__(self, maximum: int, floor: int = 4) -> None:
        self.policy = LimitPolicy(maximum, floor)
        self._in_flight = 0
        self._waiting = 0
        self._cond = asyncio.Condition()

    @property
    def limit(self) -> int:
        return self.policy.limit

    async def acquire(self) -> None:
        async with self._cond:
            self._waiting += 1
            try:
                await self._cond.wait_for(lambda: self._in_flight < self.limit)
            finally:
                self._waiting -= 1
            self._in_flight += 1

    async def release(self, *, busy: bool) -> None:
        async with self._cond:
            saturated = self._in_flight + self._waiting >= self.limit
            self._in_flight -= 1
            self.policy.completed(saturated=saturated, busy=busy)
            self._cond.notify_all()


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
        pool_concurrency: int = DEFAULT_POOL_CONCURRENCY,
        max_in_flight: int = 16,
    ) -> None:
        self.api_url = api_url
        self.timeout = timeout
        self.retries = retries
        self.retry_delay = retry_delay
        self.pool_concurrency = pool_concurrency
        self._client: PrefectClient | None = None
        self._settings_ctx: Any = None
        self._flow_id: str | None = None
        self._pools: set[str] = set()
        self._setup_lock = asyncio.Lock()
        self.in_flight = AdaptiveLimit(max_in_flight)
        self.calls: dict[str, int] = {}  # calls per kind, retries not counted (benchmarks, tests)
        self.retried: dict[str, int] = {}  # retries per kind after a busy answer

    async def __aenter__(self) -> PrefectGateway:
        from prefect.client.orchestration import PrefectClient
        from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

        self._settings_ctx = temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 0})
        self._settings_ctx.__enter__()
        self._client = PrefectClient(api=self.api_url, httpx_settings={"timeout": self.timeout})
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
                busy = isinstance(exc, ServerBusy) or (exc.transient and _status(exc) is not None)
                if not busy or attempt >= self.retries:
                    raise
            finally:
                await self.in_flight.release(busy=busy)
            attempt += 1
            self.retried[kind] = self.retried.get(kind, 0) + 1
            await asyncio.sleep(self.retry_delay * 2**attempt * random.uniform(0.5, 1.0))

    async def ensure_work_pool(self, name: str) -> None:
        """Create the work pool (type ``process``, with a concurrency limit) if missing."""
        if name in self._pools:
            return
        async with self._setup_lock:
            if name not in self._pools:
                await self._ensure_work_pool(name)
                self._pools.add(name)

    async def _ensure_work_pool(self, name: str) -> None:
        from prefect.client.schemas.actions import WorkPoolCreate
        from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
        from prefect.workers.process import ProcessWorker

        async def read() -> bool:
            try:
                await self.client.read_work_pool(name)
            except ObjectNotFound:
                return False
            return True

        if await self._call("read_work_pool", f"read work pool '{name}'", read):
            return
        pool = WorkPoolCreate(
            name=name,
            type="process",
            base_job_template=ProcessWorker.get_default_base_job_template(),
            concurrency_limit=self.pool_concurrency,
        )

        async def create() -> None:
            try:
                await self.client.create_work_pool(pool)
                log.info("created work pool %s (limit %s)", name, pool.concurrency_limit)
            except ObjectAlreadyExists:
                pass  # created meanwhile by someone else: fine

        await self._call("create_work_pool", f"create work pool '{name}'", create)

    async def _flow(self) -> str:
        if self._flow_id is None:
            async with self._setup_lock:
                if self._flow_id is None:
                    self._flow_id = await self._call(
                        "read_flow", f"register flow '{FLOW_NAME}'", self._read_or_create_flow
                    )
        return self._flow_id

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
            if exc.transient or _status(exc) not in (404, 409):
                raise
            # The flow or work pool we cached may be gone (a reset Prefect database).
            self._flow_id = None
            self._pools.clear()
            return await self._upsert(spec)

    async def _upsert(self, spec: DeploymentSpec) -> str:
        if spec.work_pool_name:
            await self.ensure_work_pool(spec.work_pool_name)
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

        async def call() -> None:
            await self.client.request(
                "PATCH", "/deployments/{id}", path_params={"id": deployment_id}, json=body
            )

        try:
            await self._call("update", doing, call)
        except ExternalError as exc:
            if exc.transient or _status(exc) not in PATCH_FALLBACK:
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


def create_flow_run(api_url: str, deployment_id: str, *, tags: list[str]) -> str:
    """Create a flow run of a deployment now (synchronous: web requests call it); its id.

    The idempotency key makes the client's retry of a request the server did carry out
    return the same flow run instead of starting a second one.
    """
    from uuid import UUID, uuid4

    from prefect.client.orchestration import SyncPrefectClient
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    with (
        temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 2}),
        prefect_errors(f"start a run of deployment {deployment_id}"),
        SyncPrefectClient(api=api_url, httpx_settings={"timeout": 15.0}) as client,
    ):
        run = client.create_flow_run_from_deployment(
            UUID(deployment_id), tags=tags, idempotency_key=uuid4().hex
        )
    return str(run.id)
