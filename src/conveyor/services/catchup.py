"""Catch-up: what a scheduled flow run does when it starts long after its time.

Prefect's scheduler creates a deployment's flow runs ahead of time; when the worker (or the
whole platform) was down across some of them, the worker starts every Late one as soon as
it is back. The connector's ``catch_up`` policy decides here, in the flow, before anything
moves: ``skip`` runs none of the missed times, ``latest`` (the default) runs only the
newest Prefect has, ``all`` runs each in order, at most ``CATCH_UP_MAX``. A flow run that
does not run leaves a ``skipped`` record saying why and ends Completed in Prefect (it did
what the policy asked).

Only first attempts of auto-scheduled flow runs are judged: "Run now", "Retry now" and a
flow-run retry of an attempt (whose expected start time stays the original) always run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from conveyor.db.base import utcnow
from conveyor.db.models import Connector, ConnectorRun
from conveyor.db.session import session_scope
from conveyor.domain.schedule import next_runs
from conveyor.domain.vocabulary import (
    CATCH_UP_MAX,
    MANUAL_RUN_TAG,
    TRIGGER_SCHEDULE,
    run_record_id_from_tags,
)
from conveyor.settings import Settings

log = logging.getLogger("conveyor.services.catchup")


@dataclass(frozen=True)
class Decision:
    """``skip`` is None when the run goes ahead, else the reason (the record's summary)."""

    scheduled_for: datetime
    skip: str | None


def decide(
    *,
    policy: str,
    scheduled_for: datetime,
    started: datetime,
    later_due: int,
    grace: float,
    timezone: str = "UTC",
) -> Decision:
    """The policy's verdict for a flow run due at ``scheduled_for`` starting at ``started``;
    ``later_due``: how many later times of the connector's cron have come by ``started``."""
    if started - scheduled_for <= timedelta(seconds=grace):
        return Decision(scheduled_for, None)  # on time: not a missed run
    when = _local(scheduled_for, timezone)
    missed = f"missed at {when} while no worker ran"
    if policy == "skip":
        return Decision(scheduled_for, f"{missed}; catch_up=skip")
    if policy == "all":
        if later_due >= CATCH_UP_MAX:
            return Decision(
                scheduled_for,
                f"{missed}; catch_up=all runs only the newest {CATCH_UP_MAX} missed times",
            )
        return Decision(scheduled_for, None)
    if later_due > 0:  # latest: a later time has come, so a newer run stands for this one
        return Decision(scheduled_for, f"{missed}; catch_up=latest runs only the newest")
    return Decision(scheduled_for, None)


def _local(at: datetime, timezone: str) -> str:
    try:
        tz = ZoneInfo(timezone)
    except Exception:
        tz = ZoneInfo("UTC")
    local = at.astimezone(tz)
    today = utcnow().astimezone(tz).date()
    shown = f"{local:%H:%M}" if local.date() == today else f"{local:%Y-%m-%d %H:%M}"
    return f"{shown} {timezone}"


def later_due(expr: str | None, timezone: str, scheduled_for: datetime, now: datetime) -> int:
    """How many times of the cron after ``scheduled_for`` have come by ``now`` (capped)."""
    if not expr:
        return 0
    later = next_runs(expr, timezone, CATCH_UP_MAX, after=scheduled_for)
    return sum(1 for t in later if t <= now)


def _newer_in_prefect(
    newer_runs: NewerRuns, scheduled_for: datetime, now: datetime, *, fallback: int
) -> int:
    """The newer due flow runs Prefect has; the cron's count when Prefect cannot say."""
    try:
        return newer_runs(scheduled_for, now)
    except Exception as exc:
        log.warning("catch-up: could not read the newer flow runs from Prefect: %s", exc)
        return fallback


def is_judged(flow_run: Any) -> bool:
    """Whether a flow run is an auto-scheduled first attempt (the only kind catch-up judges)."""
    tags = list(getattr(flow_run, "tags", None) or [])
    if not getattr(flow_run, "auto_scheduled", False):
        return False
    if MANUAL_RUN_TAG in tags or run_record_id_from_tags(tags) is not None:
        return False
    if (getattr(flow_run, "run_count", 0) or 0) > 1:
        return False  # a flow-run retry of an attempt that already went ahead
    return getattr(flow_run, "expected_start_time", None) is not None


# How many newer auto-scheduled flow runs of the same deployment Prefect has that were due
# in (after, until] (``sync.flow_runs.newer_scheduled_runs`` with the flow run bound).
NewerRuns = Callable[[datetime, datetime], int]


def gate(
    connector_id: int,
    flow_run: Any,
    *,
    settings: Settings,
    newer_runs: NewerRuns | None = None,
) -> dict[str, Any] | None:
    """Called by the flow first. For an auto-scheduled flow run: record it with its scheduled
    time (``open_run`` then finds that record); if the policy skips it, close the record as
    ``skipped`` and return the flow's result. None: go ahead.

    ``latest`` skips a missed time only when Prefect holds a newer due flow run to stand for
    it (``newer_runs``): after an outage of the whole platform longer than Prefect's
    scheduling horizon, the later cron times have no flow run, and the newest one Prefect
    made before the outage is the one that runs."""
    if not is_judged(flow_run):
        return None
    flow_run_id = str(flow_run.id)
    now = utcnow()
    with session_scope(settings.effective_database_url) as session:
        if session.scalars(
            select(ConnectorRun.id).where(ConnectorRun.prefect_flow_run_id == flow_run_id)
        ).first():
            return None  # already recorded: a later attempt of this flow run
        connector = session.get(Connector, connector_id)
        if connector is None:
            return None  # open_run reports it
        scheduled_for = flow_run.expected_start_time
        policy = connector.catch_up or "latest"
        later = later_due(connector.schedule, connector.timezone, scheduled_for, now)
        if policy == "latest" and later and newer_runs is not None:
            later = _newer_in_prefect(newer_runs, scheduled_for, now, fallback=later)
        verdict = decide(
            policy=policy,
            scheduled_for=scheduled_for,
            started=now,
            later_due=later,
            grace=settings.catch_up_grace,
            timezone=connector.timezone,
        )
        run = ConnectorRun(
            connector_id=connector_id,
            prefect_flow_run_id=flow_run_id,
            trigger=TRIGGER_SCHEDULE,
            status="scheduled",
            scheduled_for=scheduled_for,
        )
        if verdict.skip is not None:
            run.status = "skipped"
            run.started_at = run.finished_at = now
            run.log_summary = f"Skipped: {verdict.skip}."
        session.add(run)
        session.flush()
        run_id = int(run.id)
    if verdict.skip is None:
        return None
    log.info("connector %s: run %s skipped: %s", connector_id, run_id, verdict.skip)
    return {"run_id": run_id, "status": "skipped", "reason": verdict.skip}
