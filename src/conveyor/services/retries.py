"""Retries: a transiently failed attempt is tried again automatically, and "Retry now".

Automatic retries keep ONE run record: the failed attempt is appended to ``attempts``, the
record becomes ``retrying`` with the next attempt's number, time and a waiting reason, and
a new flow run of the connector's deployment is created in Prefect, Scheduled at that
time, tagged with the record (``run-record:<id>``) so that its ``open_run`` adopts the same
record. The record change commits before Prefect is called (invariant 6): when Prefect
cannot be reached the record stays ``retrying`` and the watchdog's pass creates the flow
run later (``schedule_due``). Both ask Prefect with the same idempotency key per attempt,
so they never make two flow runs of one attempt.

Only ``transient`` failures are retried; ``config``, ``data`` and ``internal`` ones close
the record as failed at once. A retry is a normal run of the connector: dlt restores its
state from the destination, so it resumes from the last committed load.

"Retry now" (``retry_now``) of a closed failed, crashed or cancelled run starts a new
record (trigger ``retry``, ``retry_of`` the old one) through Prefect like "Run now".
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import select, update

from conveyor.db.base import utcnow
from conveyor.db.models import Connector, ConnectorRun
from conveyor.db.session import session_scope
from conveyor.domain.retry_policy import effective
from conveyor.domain.vocabulary import (
    FAILURE_TRANSIENT,
    OPEN_RUN_STATUSES,
    TRIGGER_RETRY,
    FailureClass,
    run_record_tag,
)
from conveyor.errors import Conflict, ConveyorError
from conveyor.services import run_commit, run_events, runs
from conveyor.services.authz import Actor
from conveyor.settings import Settings

log = logging.getLogger("conveyor.services.retries")

RETRY_TAG = f"trigger:{TRIGGER_RETRY}"  # on every flow run that retries a run
RETRYABLE_STATUSES = ("failed", "crashed", "cancelled")  # "Retry now" takes these
# The flow schedules its own retry right after committing the record; the watchdog only
# steps in when that has not happened this long after the attempt was due.
BACKSTOP_GRACE = timedelta(seconds=30)


class ScheduleFlowRun(Protocol):
    """Creates a flow run of a deployment, now or Scheduled at ``scheduled_at``; its id
    (``sync.flow_runs.create_flow_run``)."""

    def __call__(
        self,
        api_url: str,
        deployment_id: str,
        *,
        tags: list[str],
        scheduled_at: datetime | None = None,
        idempotency_key: str | None = None,
    ) -> str: ...


class Failure(Protocol):
    """What the flow knows of a failed attempt (``pipelines.explain.Explanation``)."""

    @property
    def message(self) -> str: ...
    @property
    def detail(self) -> str: ...
    @property
    def failure_class(self) -> FailureClass: ...
    @property
    def side(self) -> str | None: ...


@dataclass(frozen=True)
class NextAttempt:
    """A retry the record is waiting for: which attempt, when, of which deployment."""

    run_id: int
    attempt: int
    at: datetime
    deployment_id: str


# --- automatic retries ---------------------------------------------------------------


def after_failure(
    run_id: int, why: Failure, *, settings: Settings, start: ScheduleFlowRun | None
) -> str:
    """Record a failed attempt: ``retrying`` (and the next attempt scheduled in Prefect) when
    it is transient, the run came through Prefect (``start`` given) and the connector's
    policy has attempts left; else ``failed`` with its class. The record's status after."""
    with session_scope(settings.effective_database_url) as session:
        run = session.get(ConnectorRun, run_id)
        if run is None or run.status not in OPEN_RUN_STATUSES:
            return run.status if run is not None else "failed"
        if run_commit.settle(run):  # its data committed before the failure (invariant 8)
            run_events.closed(session, run, settings=settings)
            return "succeeded"
        connector = session.get(Connector, run.connector_id)
        policy = effective(connector.retry_policy if connector else None)
        attempt = run.attempt or 1
        now = utcnow()
        run.error = why.message
        run.log_summary = why.detail
        run.failure_class = why.failure_class
        run.failure_side = why.side
        retry = (
            why.failure_class == FAILURE_TRANSIENT
            and start is not None
            and bool(settings.prefect_api_url)
            and run.prefect_flow_run_id is not None
            and connector is not None
            and connector.is_active
            and bool(connector.prefect_deployment_id)
            and attempt < policy.max_attempts
        )
        if not retry:
            run.status = "failed"
            run.finished_at = now
            run.waiting_reason = None
            run.next_attempt_at = None
            run_events.closed(session, run, settings=settings)  # terminal: run.failed
            return "failed"
        assert start is not None and connector is not None and connector.prefect_deployment_id
        wait = policy.backoff_after(attempt)
        run.attempts = [*(run.attempts or []), _attempt_entry(run, attempt, now)]
        run.status = "retrying"
        run.attempt = attempt + 1
        run.max_attempts = policy.max_attempts
        run.next_attempt_at = now + timedelta(seconds=wait)
        run.waiting_reason = (
            f"retrying in {wait} s: attempt {attempt + 1} of {policy.max_attempts} — {why.message}"
        )
        run.prefect_flow_run_id = None  # the failed attempt's flow run is in ``attempts``
        run.heartbeat_at = None
        due = NextAttempt(run_id, attempt + 1, run.next_attempt_at, connector.prefect_deployment_id)
    log.info("run %s: attempt %s failed transiently; retry at %s", run_id, attempt, due.at)
    schedule(due, settings=settings, start=start)
    return "retrying"


def _attempt_entry(run: ConnectorRun, attempt: int, now: datetime) -> dict[str, object]:
    return {
        "attempt": attempt,
        "prefect_flow_run_id": run.prefect_flow_run_id,
        "started_at": _iso(run.started_at),
        "finished_at": _iso(now),
        "status": "failed",
        "failure_class": run.failure_class,
        "failure_side": run.failure_side,
        "error": run.error,
    }


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def schedule(due: NextAttempt, *, settings: Settings, start: ScheduleFlowRun) -> str | None:
    """Create the attempt's flow run in Prefect and link it to the record; its id, or None
    when Prefect could not be reached (the record stays ``retrying`` for the backstop).

    One idempotency key per (record, attempt): asked twice, Prefect returns the same flow
    run. The link is a conditional UPDATE, so a record closed meanwhile stays closed."""
    assert settings.prefect_api_url
    try:
        flow_run_id = start(
            settings.prefect_api_url,
            due.deployment_id,
            tags=[RETRY_TAG, run_record_tag(due.run_id)],
            scheduled_at=due.at,
            idempotency_key=f"conveyor-run-{due.run_id}-attempt-{due.attempt}",
        )
    except ConveyorError as exc:
        log.warning("run %s: retry not scheduled in Prefect yet: %s", due.run_id, exc)
        return None
    with session_scope(settings.effective_database_url) as session:
        session.execute(
            update(ConnectorRun)
            .where(
                ConnectorRun.id == due.run_id,
                ConnectorRun.status == "retrying",
                ConnectorRun.attempt == due.attempt,
                ConnectorRun.prefect_flow_run_id.is_(None),
            )
            .values(prefect_flow_run_id=flow_run_id)
            .execution_options(synchronize_session=False)
        )
    return flow_run_id


def due_without_flow_run(*, settings: Settings, now: datetime | None = None) -> list[NextAttempt]:
    """Records ``retrying`` past their time (and a grace) with no flow run: the flow could not
    reach Prefect when it scheduled them. Those of a paused or unsynced connector are closed
    as failed (nothing would run them)."""
    cutoff = (now or utcnow()) - BACKSTOP_GRACE
    out: list[NextAttempt] = []
    with session_scope(settings.effective_database_url) as session:
        rows = session.scalars(
            select(ConnectorRun).where(
                ConnectorRun.status == "retrying",
                ConnectorRun.prefect_flow_run_id.is_(None),
                ConnectorRun.next_attempt_at < cutoff,
            )
        )
        for run in rows:
            c = session.get(Connector, run.connector_id)
            if c is None or not c.is_active or not c.prefect_deployment_id:
                run.status = "failed"
                run.finished_at = utcnow()
                run.waiting_reason = None
                run.error = (
                    f"{run.error or 'The run failed'} (not retried: the connector is paused "
                    "or not synced to Prefect)"
                )
                run_events.closed(session, run, settings=settings)
                continue
            assert run.next_attempt_at is not None
            out.append(
                NextAttempt(run.id, run.attempt, run.next_attempt_at, c.prefect_deployment_id)
            )
    return out


def schedule_due(*, settings: Settings, start: ScheduleFlowRun) -> int:
    """The watchdog's backstop: create the flow runs of retries the flow could not; how many."""
    if not settings.prefect_api_url:
        return 0
    made = 0
    for due in due_without_flow_run(settings=settings):
        if schedule(due, settings=settings, start=start) is not None:
            made += 1
    return made


# --- Retry now -----------------------------------------------------------------------


def retry_now(
    run_id: int, *, settings: Settings, actor: Actor, start: runs.StartFlowRun
) -> ConnectorRun:
    """Start a new run of a failed, crashed or cancelled run's connector now: a new record
    (trigger ``retry``, ``retry_of`` the run), committed before Prefect is called. 409 when
    the run is not closed that way, or the connector is paused or not synced."""
    with session_scope(settings.effective_database_url) as session:
        old = runs.get(run_id, session=session)
        connector_id = old.connector_id
        runs._runnable_deployment(connector_id, session=session, actor=actor)
        if old.status not in RETRYABLE_STATUSES:
            raise Conflict(
                f"run {run_id} is {old.status}; only a failed, crashed or cancelled run can be "
                "retried",
                hint="wait for it to end, or use Run now on the connector",
            )
    return runs.trigger(
        connector_id,
        settings=settings,
        actor=actor,
        start=start,
        kind=TRIGGER_RETRY,
        tag=RETRY_TAG,
        retry_of=run_id,
    )


# --- waiting reasons -----------------------------------------------------------------


def set_waiting(run_id: int, reason: str | None, *, settings: Settings) -> None:
    """Say on a running record why it waits (None: it moves again)."""
    with session_scope(settings.effective_database_url) as session:
        session.execute(
            update(ConnectorRun)
            .where(ConnectorRun.id == run_id, ConnectorRun.status == "running")
            .values(waiting_reason=reason)
            .execution_options(synchronize_session=False)
        )


def waiting_reporter(run_id: int, settings: Settings) -> Callable[[str | None], None]:
    """A ``pipelines.waiting`` reporter writing on run ``run_id``'s record."""

    def write(reason: str | None) -> None:
        set_waiting(run_id, reason, settings=settings)

    return write
