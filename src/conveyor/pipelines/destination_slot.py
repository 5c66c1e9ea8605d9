"""A destination's cap on runs writing to it at once (``max_concurrent_runs``), enforced
with a Prefect global concurrency limit named ``destination_limit_name(id)``.

The flow keeps the limit in step itself, just before it moves data: it creates the limit, or
updates its value, from the destination's cap (so a cap set while Prefect was down, or a
limit deleted in Prefect, heals on the next run), then holds one slot around the data
movement. A run that has to wait says so on its record ("waiting: destination busy (…)")
until it gets its slot. Slots are leases: a run whose process dies frees its slot when the
lease runs out (``LEASE_SECONDS``) instead of holding it forever. A destination without a
cap takes no slot (a limit left from an earlier cap is then ignored).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from conveyor.db.session import session_scope
from conveyor.domain.vocabulary import destination_limit_name
from conveyor.pipelines import waiting
from conveyor.pipelines.resolved import ResolvedConnector, RunStats
from conveyor.services import connectors
from conveyor.settings import Settings

log = logging.getLogger("conveyor.pipelines.destination_slot")

LEASE_SECONDS = 120.0  # a dead run's slot comes back after at most this long
NOTICE_AFTER = 0.5  # a slot not granted by then is worth a word on the record


@dataclass(frozen=True)
class Cap:
    destination_id: int
    destination_name: str
    limit: int

    @property
    def name(self) -> str:
        return destination_limit_name(self.destination_id)

    @property
    def busy(self) -> str:
        return (
            f"waiting: destination busy ({self.limit} of {self.limit} runs writing to "
            f"{self.destination_name})"
        )


def cap_of(connector_id: int, settings: Settings) -> Cap | None:
    """The cap of the connector's destination, None if it has none."""
    with session_scope(settings.effective_database_url) as session:
        d = connectors.get(connector_id, session=session).destination
        if d.max_concurrent_runs is None:
            return None
        return Cap(int(d.id), d.name, int(d.max_concurrent_runs))


def ensure_limit(cap: Cap) -> None:
    """Create or update the destination's global concurrency limit (active, at the cap)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    with get_client(sync_client=True) as c:
        try:
            c.upsert_global_concurrency_limit_by_name(cap.name, cap.limit)
        except Exception as exc:
            # Two runs of the destination starting at once both found no limit and both
            # created it: the loser's create is a 409. The limit exists now: update it.
            if not _conflict(exc):
                raise
            c.upsert_global_concurrency_limit_by_name(cap.name, cap.limit)
        if not c.read_global_concurrency_limit_by_name(cap.name).active:
            c.update_global_concurrency_limit(cap.name, GlobalConcurrencyLimitUpdate(active=True))


def _conflict(exc: BaseException) -> bool:
    from prefect.exceptions import ObjectAlreadyExists

    response = getattr(exc, "response", None)
    return isinstance(exc, ObjectAlreadyExists) or getattr(response, "status_code", None) == 409


@contextlib.contextmanager
def held(cap: Cap | None) -> Iterator[None]:
    """Hold one of the destination's slots for the block (none to hold without a cap)."""
    if cap is None:
        yield
        return
    from prefect.concurrency.sync import concurrency

    ensure_limit(cap)
    lock = threading.Lock()
    state = {"granted": False, "said": False}

    def say_busy() -> None:
        with lock:
            if not state["granted"]:
                state["said"] = True
                waiting.report(cap.busy)

    timer = threading.Timer(NOTICE_AFTER, say_busy)
    timer.daemon = True
    timer.start()
    try:
        with concurrency(
            cap.name,
            occupy=1,
            lease_duration=LEASE_SECONDS,
            strict=True,  # the limit must exist (ensured above), else the cap is not applied
            raise_on_lease_renewal_failure=False,  # a blip in Prefect must not kill a load
        ):
            with lock:
                state["granted"] = True
                timer.cancel()
                if state["said"]:
                    waiting.report(None)  # the slot is ours: no longer waiting
            yield
    finally:
        timer.cancel()


def run_capped(
    move: Callable[[ResolvedConnector, Settings], RunStats],
    connector: ResolvedConnector,
    settings: Settings,
) -> RunStats:
    """``move(connector, settings)`` holding a slot of the destination's cap, if it has one;
    outside Prefect (``run_connector``, debugging) without one."""
    from prefect.context import FlowRunContext, TaskRunContext

    in_prefect = FlowRunContext.get() is not None or TaskRunContext.get() is not None
    with held(cap_of(connector.id, settings) if in_prefect else None):
        return move(connector, settings)
