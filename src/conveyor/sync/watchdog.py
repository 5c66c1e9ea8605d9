"""The watchdog: a small loop that closes run records nobody else will close (invariant 6
of docs/design.md) — the flow run ended in Prefect without writing its result, the flow run
is gone, the worker stopped sending heartbeats, or Prefect never took the run.

``one_pass`` does one look and can be called once in a test; ``run_forever`` repeats it
every ``CONVEYOR_WATCHDOG_INTERVAL`` seconds unless ``CONVEYOR_WATCHDOG_ENABLED=false``.
Every close is conditional on the record still being open, so several watchdogs, or a
flow finishing at the same moment, never overwrite a result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

from conveyor.db.base import utcnow
from conveyor.errors import ExternalError
from conveyor.services import retries, runs
from conveyor.services.cancel import close_cancelled
from conveyor.settings import Settings
from conveyor.sync.flow_runs import create_flow_run
from conveyor.sync.gateway import Gateway
from conveyor.sync.payloads import FlowRunState

log = logging.getLogger("conveyor.sync.watchdog")

# Prefect's final state → the run's status. A flow run Prefect calls Completed whose
# record is still open never wrote its result: that is a crash as far as the record goes.
CLOSED_AS = {"FAILED": "failed", "CRASHED": "crashed", "CANCELLED": "cancelled"}
HEARTBEAT_REASON = "worker stopped sending heartbeats"
GONE_REASON = "the flow run no longer exists in Prefect"
NEVER_STARTED_REASON = "Prefect never confirmed a flow run for this run"
ORPHAN_REASON = (
    "the flow run's process is gone: its worker died before starting it, or it died before"
    " reaching Conveyor"
)
# A flow run Prefect holds Pending (a worker claimed it) or Running with nobody reporting
# on it keeps a slot of the work pool's concurrency limit, and of its deployment's, forever.
HELD_STATES = ("PENDING", "RUNNING")
# ... judged after the heartbeat timeout, and never sooner than this: a flow process on a
# busy machine takes seconds to import before it opens its record.
HELD_AFTER = 60.0


async def one_pass(*, settings: Settings, gateway: Gateway, now: datetime | None = None) -> int:
    """Close the open records whose flow run ended or whose worker went silent; the count."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=settings.run_heartbeat_timeout)
    # Retries whose flow could not reach Prefect get their flow run now (services/retries).
    await asyncio.to_thread(retries.schedule_due, settings=settings, start=create_flow_run)
    open_runs = await asyncio.to_thread(runs.open_runs, settings=settings)
    closed = 0
    # "Run now" commits its record before calling Prefect; one left without a flow run
    # long after is a request that died in between (a retry's waits for the backstop above).
    for run in open_runs:
        if (
            run.prefect_flow_run_id is None
            and run.status != "retrying"
            and run.last_sign_of_life < cutoff
        ):
            closed += await _close(settings, run.id, "failed", NEVER_STARTED_REASON)
    tracked = [r for r in open_runs if r.prefect_flow_run_id is not None]
    if tracked:
        states = await gateway.flow_run_states(
            [r.prefect_flow_run_id for r in tracked if r.prefect_flow_run_id]
        )
        for run in tracked:
            closed += await _judge(
                settings, gateway, run, states.get(run.prefect_flow_run_id or ""), cutoff
            )
    held_cutoff = now - timedelta(seconds=max(settings.run_heartbeat_timeout, HELD_AFTER))
    return closed + await _release_held(settings, gateway, open_runs, held_cutoff)


async def _release_held(
    settings: Settings, gateway: Gateway, open_runs: list[runs.OpenRun], cutoff: datetime
) -> int:
    """Crash Conveyor's flow runs Pending or Running since before ``cutoff`` that no running
    record answers for (its heartbeat is judged above): a worker SIGKILLed between claiming
    a flow run and starting its process leaves it Pending, a flow process killed before it
    opened its record leaves it Running, and either holds a work-pool slot forever (seen in
    the chaos soak: the pool's limit filled with them and no run started). Closes the
    record of such a flow run when it has one; the count of records closed."""
    running = {r.prefect_flow_run_id for r in open_runs if r.status == "running"}
    by_flow_run = {r.prefect_flow_run_id: r for r in open_runs if r.prefect_flow_run_id}
    closed = 0
    for flow_run_id in await gateway.stale_flow_runs(HELD_STATES, before=cutoff):
        if flow_run_id in running:
            continue
        try:
            await gateway.crash_flow_run(flow_run_id, ORPHAN_REASON)
        except ExternalError as exc:
            log.warning("flow run %s: cannot mark it crashed: %s", flow_run_id, exc)
            continue
        log.warning("flow run %s: %s; marked crashed", flow_run_id, ORPHAN_REASON)
        run = by_flow_run.get(flow_run_id)
        if run is not None:
            closed += await _close(settings, run.id, "crashed", ORPHAN_REASON)
    return closed


async def _judge(
    settings: Settings,
    gateway: Gateway,
    run: runs.OpenRun,
    state: FlowRunState | None,
    cutoff: datetime,
) -> int:
    if state is None:
        return await _close(settings, run.id, "crashed", GONE_REASON)
    if state.is_final and state.type == "CANCELLED" and run.prefect_flow_run_id:
        # The cancel hook never ran: close it as the hook would, naming who asked.
        closed = await asyncio.to_thread(
            close_cancelled, run.prefect_flow_run_id, settings=settings, state=state
        )
        return int(closed)
    if state.is_final:
        why = state.message or f"Prefect reports the flow run {state.name or state.type}"
        if state.type == "COMPLETED":
            why = "the flow run completed in Prefect but never recorded its result"
        return await _close(settings, run.id, CLOSED_AS.get(state.type, "crashed"), why)
    if run.status != "running" or run.last_sign_of_life >= cutoff:
        return 0
    if await asyncio.to_thread(runs.heartbeat_since, run.id, cutoff, settings=settings):
        return 0
    assert run.prefect_flow_run_id is not None
    try:
        await gateway.crash_flow_run(run.prefect_flow_run_id, HEARTBEAT_REASON)
    except ExternalError as exc:
        # Leave the record open: the next pass retries, and the flow run must be
        # crashed in Prefect too or it keeps the connector's concurrency slot.
        log.warning("run %s: cannot mark the flow run crashed: %s", run.id, exc)
        return 0
    return await _close(settings, run.id, "crashed", HEARTBEAT_REASON, stale_before=cutoff)


async def _close(
    settings: Settings,
    run_id: int,
    status: str,
    reason: str,
    *,
    stale_before: datetime | None = None,
) -> int:
    return await asyncio.to_thread(
        runs.close_if_open, run_id, status, reason, settings=settings, stale_before=stale_before
    )


async def run_forever(settings: Settings, *, stop: asyncio.Event, gateway: Gateway) -> None:
    """One pass every ``watchdog_interval`` seconds until ``stop`` is set (off: returns)."""
    if not settings.watchdog_enabled:
        log.info("run watchdog is off (CONVEYOR_WATCHDOG_ENABLED=false)")
        return
    while not stop.is_set():
        try:
            closed = await one_pass(settings=settings, gateway=gateway)
            if closed:
                log.info("watchdog closed %d run record(s)", closed)
        except ExternalError as exc:
            log.warning("watchdog pass stopped: %s", exc)
        except Exception:  # the database is unreachable, or a bug: keep watching
            log.exception("watchdog pass failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.watchdog_interval)
