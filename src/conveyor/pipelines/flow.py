"""The Prefect flow that runs one connector and keeps its run record.

Entrypoint for deployments: ``conveyor.pipelines.flow:run_connector_pipeline``. The same
work runs without Prefect through ``run_connector(connector_id)`` (or
``run_connector_pipeline.fn(connector_id)``) for debugging.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext

from conveyor.db.session import session_scope
from conveyor.domain.vocabulary import FLOW_NAME, MANUAL_RUN_TAG
from conveyor.errors import ConveyorError
from conveyor.pipelines import destination_slot, lost_worker, runner, waiting
from conveyor.pipelines.explain import Explanation, explain
from conveyor.secrets import MASKING_FILTER, SecretBox
from conveyor.services import catchup, connectors, retries, run_commit, runs
from conveyor.services.cancel import close_cancelled
from conveyor.services.run_logs import LogCapture, flush_current
from conveyor.settings import Settings
from conveyor.sync.flow_runs import create_flow_run, newer_scheduled_runs

log = logging.getLogger("conveyor.pipelines.flow")
T = TypeVar("T")

MANUAL_TAG = MANUAL_RUN_TAG


class RunFailed(ConveyorError):
    """The connector run failed; the message is already in words and masked."""


# --- run records (kept by services.runs) -------------------------------------------

open_run = runs.open_run
close_run = runs.close
heartbeat = runs.heartbeat


class Heartbeat:
    """A daemon thread renewing ``heartbeat_at`` every ``interval`` seconds."""

    def __init__(self, run_id: int, settings: Settings, interval: float | None = None) -> None:
        self.run_id = run_id
        self.settings = settings
        self.interval = interval or min(30.0, settings.run_heartbeat_timeout / 3)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"conveyor-heartbeat-{run_id}", daemon=True
        )

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                heartbeat(self.run_id, settings=self.settings)
            except Exception as exc:  # a missed beat is not worth failing the run
                log.warning("heartbeat of run %s failed: %s", self.run_id, exc)


# --- the work ----------------------------------------------------------------------


def load_connector(connector_id: int, *, settings: Settings) -> runner.ResolvedConnector:
    """Read the connector; decrypt its configs in memory only."""
    box = SecretBox(settings.secret_keys())
    with session_scope(settings.effective_database_url) as session:
        resolved = runner.resolve(connectors.get(connector_id, session=session), box)
    MASKING_FILTER.register(*resolved.secrets)
    _install_masking()
    return resolved


def _install_masking() -> None:
    # Handler-level filters see records from every logger that propagates to them.
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs", "dlt"):
        for handler in logging.getLogger(name).handlers:
            if MASKING_FILTER not in handler.filters:
                handler.addFilter(MASKING_FILTER)


class StepFailed(RunFailed):
    """A step failed; carries the explanation. Raised ``from None`` so neither Prefect's
    task logging nor a traceback shows the original (possibly secret-bearing) error."""

    def __init__(self, why: Explanation, *, pause: bool = False) -> None:
        super().__init__(why.message)
        self.why = why
        self.pause = pause  # the connector's schema change policy asks to pause it


def guarded(
    fn: Callable[..., T],
    *args: Any,
    secrets: tuple[str, ...] = (),
    types_of: runner.ResolvedConnector | None = None,
    **kw: Any,
) -> T:
    """Run a step; turn any error into a masked, explained StepFailed (its class and side
    asked of ``types_of``'s source type first, then its destination type)."""
    try:
        return fn(*args, **kw)
    except Exception as exc:
        src, dst = (types_of.source_info, types_of.destination_info) if types_of else (None, None)
        why = explain(exc, secrets, source=src, destination=dst)
        _logger().error("%s", why.detail)
        pause = isinstance(exc, runner.SchemaChangeRefused)
        raise StepFailed(why, pause=pause) from None


def _pause(connector_id: int, reason: str, settings: Settings) -> None:
    """Pause the connector for its schema change policy (the reconciler pauses its
    deployment); the run still closes failed whatever happens here."""
    try:
        box = SecretBox(settings.secret_keys())
        with session_scope(settings.effective_database_url) as session:
            connectors.pause_for(connector_id, reason, session=session, box=box)
        _logger().warning("connector %s paused: %s", connector_id, reason)
    except Exception as exc:
        log.warning("could not pause connector %s: %s", connector_id, exc)


def _logger() -> Any:
    """Prefect's run logger inside a flow run (shown in its UI), else the module logger."""
    if FlowRunContext.get() is not None:
        from prefect import get_run_logger

        return get_run_logger()
    return log


def execute(
    connector_id: int,
    *,
    settings: Settings,
    run_id: int,
    steps: Any = None,
) -> dict[str, Any]:
    """Load, move, close: the body shared by the flow and direct calls."""
    steps = steps or _PlainSteps
    started = time.monotonic()
    with Heartbeat(run_id, settings), waiting.reporting(retries.waiting_reporter(run_id, settings)):
        try:
            resolved = steps.load(connector_id, settings=settings)
            stats = steps.move(resolved, settings)
            run_commit.mark_committed(run_id, settings=settings, stats=stats)  # invariant 8
        except StepFailed as exc:
            # Failed with its class, or "retrying" with the next attempt scheduled in Prefect;
            # this flow run ends Failed either way.
            start = create_flow_run if FlowRunContext.get() is not None else None
            flush_current()  # the whole log is stored before the record says how it ended
            if exc.pause:
                _pause(connector_id, exc.why.message, settings)
            retries.after_failure(run_id, exc.why, settings=settings, start=start)
            raise RunFailed(exc.why.message) from None
        except BaseException:
            if steps is _PlainSteps:  # no Prefect hooks to close it (e.g. Ctrl-C)
                close_run(
                    run_id,
                    settings=settings,
                    status="cancelled",
                    error="The run was interrupted.",
                    only_if_open=True,
                )
            raise
    seconds = time.monotonic() - started
    text = runner.summary(stats, seconds)
    _logger().info("connector %s: %s", connector_id, text)
    flush_current()  # the whole log is stored before the record says how it ended
    close_run(run_id, settings=settings, status="succeeded", stats=stats, summary=text)
    return {
        "run_id": run_id,
        "status": "succeeded",
        "rows_loaded": stats.total_rows,
        "bytes_loaded": stats.bytes,
        "tables": dict(stats.rows),
    }


class _PlainSteps:
    @staticmethod
    def load(connector_id: int, *, settings: Settings) -> runner.ResolvedConnector:
        return guarded(load_connector, connector_id, settings=settings)

    @staticmethod
    def move(connector: runner.ResolvedConnector, settings: Settings) -> runner.RunStats:
        return guarded(  # holding a slot of the destination's cap (max_concurrent_runs)
            destination_slot.run_capped,
            runner.run,
            connector,
            settings,
            secrets=connector.secrets,
            types_of=connector,
        )


def run_connector(
    connector_id: int,
    *,
    settings: Settings | None = None,
    flow_run_id: str | None = None,
    tags: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run a connector in this process, without Prefect (debugging, tests, the CLI)."""
    settings = settings or Settings()
    run_id = open_run(connector_id, settings=settings, flow_run_id=flow_run_id, tags=tags)
    with LogCapture(run_id, settings=settings):  # the full log, kept with the run
        return execute(connector_id, settings=settings, run_id=run_id)


# --- Prefect -----------------------------------------------------------------------


@task(name="open-run-record", cache_policy=NO_CACHE, persist_result=False)
def open_run_task(connector_id: int, flow_run_id: str, tags: list[str]) -> int:
    return open_run(connector_id, settings=Settings(), flow_run_id=flow_run_id, tags=tags)


@task(name="read-connector", cache_policy=NO_CACHE, persist_result=False)
def load_connector_task(connector_id: int) -> runner.ResolvedConnector:
    return _PlainSteps.load(connector_id, settings=Settings())


@task(name="move-data", cache_policy=NO_CACHE, persist_result=False)
def move_data_task(connector: runner.ResolvedConnector) -> runner.RunStats:
    return _PlainSteps.move(connector, Settings())


class _TaskSteps:
    @staticmethod
    def load(connector_id: int, *, settings: Settings) -> runner.ResolvedConnector:
        return load_connector_task(connector_id)

    @staticmethod
    def move(connector: runner.ResolvedConnector, settings: Settings) -> runner.RunStats:
        return move_data_task(connector)


def _close_from_hook(flow_run: Any, status: str, state: Any) -> None:
    try:
        message = getattr(state, "message", None) or ""
        runs.close_flow_run(
            str(flow_run.id),
            settings=Settings(),
            status=status,
            error=(
                "The run was cancelled."
                if status == "cancelled"
                else "The run crashed: the worker process ended unexpectedly."
            ),
            summary=f"Prefect state {state.type.value}: {message}",
        )
    except Exception as exc:  # a hook must not raise; the watchdog is the backstop
        log.warning("could not close run of flow run %s: %s", flow_run.id, exc)


def _on_crashed(flow: Any, flow_run: Any, state: Any) -> None:
    _close_from_hook(flow_run, "crashed", state)


def _on_cancellation(flow: Any, flow_run: Any, state: Any) -> None:
    try:  # closed as cancelled, naming who asked (services/cancel.py)
        close_cancelled(str(flow_run.id), settings=Settings(), state=state)
    except Exception as exc:  # a hook must not raise; the watchdog is the backstop
        log.warning("could not close run of flow run %s: %s", flow_run.id, exc)


def _newer_runs(flow_run: Any, settings: Settings) -> catchup.NewerRuns | None:
    """Catch-up's question to Prefect: its newer due flow runs of this deployment."""
    api_url, deployment = settings.prefect_api_url, flow_run.deployment_id
    if not api_url or deployment is None:
        return None
    return lambda after, until: newer_scheduled_runs(
        api_url, str(deployment), str(flow_run.id), after, until
    )


@flow(
    name=FLOW_NAME,
    on_crashed=[_on_crashed],
    on_cancellation=[_on_cancellation],
    persist_result=False,
    log_prints=True,
)
def run_connector_pipeline(connector_id: int) -> dict[str, Any]:
    """Move one connector's data with dlt and record the run."""
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return run_connector(connector_id)
    flow_run = ctx.flow_run
    lost_worker.survive()  # a dead worker's closed pipe must not abort the load
    settings = Settings()
    skipped = catchup.gate(  # missed times
        connector_id, flow_run, settings=settings, newer_runs=_newer_runs(flow_run, settings)
    )
    if skipped is not None:
        return skipped
    run_id = open_run_task(connector_id, str(flow_run.id), list(flow_run.tags or []))
    with LogCapture(run_id, settings=settings):  # the full log, kept with the run
        return execute(connector_id, settings=settings, run_id=run_id, steps=_TaskSteps)
