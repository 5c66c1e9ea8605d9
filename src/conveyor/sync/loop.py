"""The reconciler's loop: take the lock, then outbox passes every ``poll_interval`` and a
full pass every ``CONVEYOR_RECONCILE_INTERVAL`` seconds, until stopped or the lock is lost;
the run watchdog (``sync/watchdog.py``), run retention (``services/retention.py``) and the
freshness loop (``services/freshness.py``: connector.stale, sync.error) and notification
delivery (``services/notify_delivery.py``) loop beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from time import monotonic

from conveyor.errors import ConfigurationError, Conflict, ExternalError
from conveyor.services import freshness, notify_delivery, retention
from conveyor.settings import Settings
from conveyor.sync import heartbeat, watchdog
from conveyor.sync.gateway import Gateway, PrefectGateway
from conveyor.sync.lock import Lock, make_lock
from conveyor.sync.reconciler import Backoff, LeadershipLost, PassReport, Reconciler

log = logging.getLogger("conveyor.sync.loop")


@contextlib.asynccontextmanager
async def open_gateway(settings: Settings) -> AsyncIterator[Gateway]:
    if not settings.prefect_api_url:
        raise ConfigurationError(
            "PREFECT_API_URL is not set", hint="point it at the Prefect server's /api URL"
        )
    async with PrefectGateway(
        settings.prefect_api_url,
        max_in_flight=settings.reconcile_concurrency,
        pool_type=settings.work_pool_type,
        pool_concurrency=settings.work_pool_concurrency,
        owned_pool=settings.default_work_pool,
    ) as gateway:
        yield gateway


class _Leadership:
    """Renews the lock in the background; ``held`` turns False once it is lost."""

    def __init__(self, lock: Lock) -> None:
        self.lock = lock
        self.held = True
        self._task: asyncio.Task[None] | None = None

    def __call__(self) -> bool:
        return self.held

    async def _renew(self) -> None:
        while self.held:
            await asyncio.sleep(self.lock.ttl / 3)
            try:
                self.held = await asyncio.to_thread(self.lock.renew)
            except Exception:
                log.warning("could not renew the reconciler lock", exc_info=True)
                self.held = False
        log.warning("reconciler lock lost; stopping work")

    def start(self) -> None:
        self._task = asyncio.create_task(self._renew())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def run_once(
    settings: Settings, *, gateway: Gateway | None = None, lock: Lock | None = None
) -> PassReport:
    """One full pass, if no other reconciler is acting (else ``Conflict``)."""
    lock = lock or make_lock(settings.effective_database_url)
    if not await asyncio.to_thread(lock.try_acquire):
        raise Conflict(
            "another reconciler is running",
            hint="it already keeps Prefect in step; see `conveyor sync status`",
        )
    try:
        if gateway is not None:
            return await _full_pass_then_watchdog(settings, gateway)
        async with open_gateway(settings) as gw:
            return await _full_pass_then_watchdog(settings, gw)
    finally:
        await asyncio.to_thread(lock.release)


async def _full_pass_then_watchdog(settings: Settings, gateway: Gateway) -> PassReport:
    # `conveyor reconcile --once` is also how cron-style setups close stale runs.
    report = await Reconciler(settings, gateway).full_pass()
    if report.error is None:
        try:
            report.stale_runs_closed = await watchdog.one_pass(settings=settings, gateway=gateway)
        except ExternalError as exc:
            report.note(report.errors, connector_id=None, error=f"stale runs: {exc}")
        # One batch of retention too: `reconcile --once` from cron keeps old runs in check.
        old = await retention.one_pass(settings=settings, delete_flow_run=gateway.delete_flow_run)
        report.old_runs_deleted = old.deleted
        # And the freshness SLAs and unsynced connectors (services/freshness.py).
        await asyncio.to_thread(freshness.one_pass, settings)
    return report


async def run_forever(
    settings: Settings,
    *,
    stop: asyncio.Event,
    gateway: Gateway | None = None,
    poll_interval: float = 1.0,
    lease_ttl: float = 30.0,
    backoff: Backoff | None = None,
) -> None:
    """Wait for the lock, then reconcile until ``stop`` is set; wait again if it is lost.

    The run watchdog runs beside it, a loop of its own (it needs no lock: its closes are
    conditional on a record still being open).
    """
    lock = make_lock(settings.effective_database_url, ttl=lease_ttl)
    backoff = backoff or Backoff()
    if gateway is not None:
        await _both(settings, gateway, lock, stop, poll_interval, backoff)
        return
    async with open_gateway(settings) as gw:
        await _both(settings, gw, lock, stop, poll_interval, backoff)


async def _both(
    settings: Settings,
    gateway: Gateway,
    lock: Lock,
    stop: asyncio.Event,
    poll_interval: float,
    backoff: Backoff,
) -> None:
    async with asyncio.TaskGroup() as tg:
        tg.create_task(watchdog.run_forever(settings, stop=stop, gateway=gateway))
        # Old runs deleted in both systems, their daily summaries kept (no lock needed).
        tg.create_task(
            retention.run_forever(settings, stop=stop, delete_flow_run=gateway.delete_flow_run)
        )
        # Freshness SLAs and connectors left unsynced: connector.stale, sync.error.
        tg.create_task(freshness.run_forever(settings, stop=stop))
        # Notifications delivered from their outbox (claims per row: no lock needed).
        tg.create_task(notify_delivery.run_forever(settings, stop=stop))
        tg.create_task(_lead_while_held(settings, gateway, lock, stop, poll_interval, backoff))


async def _lead_while_held(
    settings: Settings,
    gateway: Gateway,
    lock: Lock,
    stop: asyncio.Event,
    poll_interval: float,
    backoff: Backoff,
) -> None:
    waiting_logged = False
    while not stop.is_set():
        heartbeat.beat(settings.heartbeat_file)
        try:
            got = await asyncio.to_thread(lock.try_acquire)
        except Exception:
            log.warning("cannot reach the database to take the reconciler lock", exc_info=True)
            got = False
        if not got:
            if not waiting_logged:
                log.info("another reconciler holds the lock; waiting to take over")
                waiting_logged = True
            await _sleep(stop, min(2.0, lock.ttl / 3))
            continue
        waiting_logged = False
        log.info("reconciler %s took the lock", lock.holder)
        leadership = _Leadership(lock)
        leadership.start()
        try:
            await _lead(settings, gateway, leadership, stop, poll_interval, backoff)
        finally:
            await leadership.stop()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(lock.release)


async def _lead(
    settings: Settings,
    gateway: Gateway,
    leadership: _Leadership,
    stop: asyncio.Event,
    poll_interval: float,
    backoff: Backoff,
) -> None:
    reconciler = Reconciler(
        settings, gateway, is_leader=leadership, backoff=backoff, poll_interval=poll_interval
    )
    next_full = 0.0
    failures = 0
    while not stop.is_set() and leadership.held:
        heartbeat.beat(settings.heartbeat_file)
        try:
            if monotonic() >= next_full:
                report = await reconciler.full_pass()
                next_full = monotonic() + settings.reconcile_interval
                log.info(
                    "full pass: %d connectors, %d deployments, %d changed, %d failed in %.2fs%s",
                    report.connectors,
                    report.deployments or 0,
                    report.changed,
                    report.failed,
                    report.seconds,
                    f" ({report.error})" if report.error else "",
                )
            else:
                report = await reconciler.outbox_pass()
                if report.connectors:
                    log.info(
                        "outbox: %d connectors, %d changed, %d failed in %.2fs",
                        report.connectors,
                        report.changed,
                        report.failed,
                        report.seconds,
                    )
            failures = 0
        except LeadershipLost:
            return
        except Exception:
            # The database is unreachable, or a bug: keep the loop alive, back off.
            failures += 1
            log.exception("reconcile pass failed")
            await _sleep(stop, min(60.0, 2.0**failures))
            continue
        await _sleep(stop, poll_interval)
