"""What a closed run means for the connector: events, the failure count, auto-pause.

``closed`` is called by every closer of a run record (``services/runs.py``, ``retries.py``,
``cancel.py``; the watchdog closes through ``runs.close_if_open``) in the transaction that
closed it, so the outcome, the connector's counters and the events commit together:

- succeeded: ``run.succeeded``; ``run.recovered`` too when failed runs came before it
  (``consecutive_failures`` > 0); the count goes back to 0 and ``stale_since`` is cleared.
- failed or crashed: ``run.failed`` (a run that goes ``retrying`` is not closed and says
  nothing; its retries count once), ``consecutive_failures`` + 1, and when that reaches
  the connector's ``auto_pause_after_failures`` the system pauses it
  (``connectors.pause_for``, audited) and ``connector.auto_paused`` fires.
- cancelled, skipped: nothing.

Each event's key names the run (``run.failed:run-42``): a second call for the same run
stores nothing and changes no counter. The counters are written with a Core UPDATE that
leaves ``version`` and ``updated_at`` alone (they are not edits: an open edit form or a
reconciler pass must not see the connector as changed).
"""

from __future__ import annotations

import logging

from sqlalchemy import update
from sqlalchemy.orm import Session

from conveyor.db.models import Connector, ConnectorRun
from conveyor.secrets import SecretBox
from conveyor.services import connectors, notify
from conveyor.settings import Settings

log = logging.getLogger("conveyor.services.run_events")

FAILED_STATUSES = ("failed", "crashed")  # both are a failed run for events and counts


def closed(session: Session, run: ConnectorRun, *, settings: Settings) -> None:
    """The record ``run`` was just closed in ``session``'s transaction: fire its events."""
    if run.status == "succeeded":
        _succeeded(session, run)
    elif run.status in FAILED_STATUSES:
        _failed(session, run, settings)


def closed_by_id(session: Session, run_id: int, *, settings: Settings) -> None:
    """``closed`` for a record closed by a Core UPDATE (read back first)."""
    run = session.get(ConnectorRun, run_id, populate_existing=True)
    if run is not None:
        closed(session, run, settings=settings)


def _connector(session: Session, connector_id: int) -> Connector | None:
    c = session.get(Connector, connector_id)
    if c is not None:  # the counters may have moved under a Core UPDATE
        session.refresh(c, ["consecutive_failures", "stale_since", "is_active"])
    return c


def _set(session: Session, connector_id: int, **values: object) -> None:
    session.execute(
        update(Connector)
        .where(Connector.id == connector_id)
        .values(updated_at=Connector.updated_at, **values)
        .execution_options(synchronize_session=False)
    )


def _succeeded(session: Session, run: ConnectorRun) -> None:
    c = _connector(session, run.connector_id)
    if c is None:
        return
    if (
        notify.emit(
            session, "run.succeeded", key=f"run.succeeded:run-{run.id}", connector=c, run=run
        )
        is None
    ):
        return  # this run's success was handled already
    failures = c.consecutive_failures or 0
    if failures > 0:
        notify.emit(
            session,
            "run.recovered",
            key=f"run.recovered:run-{run.id}",
            connector=c,
            run=run,
            details={"failed_runs_before": failures},
        )
    if failures or c.stale_since is not None:
        _set(session, c.id, consecutive_failures=0, stale_since=None)
        session.refresh(c, ["consecutive_failures", "stale_since"])


def _failed(session: Session, run: ConnectorRun, settings: Settings) -> None:
    c = _connector(session, run.connector_id)
    if c is None:
        return
    if (
        notify.emit(session, "run.failed", key=f"run.failed:run-{run.id}", connector=c, run=run)
        is None
    ):
        return  # counted already
    _set(session, c.id, consecutive_failures=Connector.consecutive_failures + 1)
    session.refresh(c, ["consecutive_failures"])
    count = c.consecutive_failures
    limit = c.auto_pause_after_failures
    if not limit or count < limit or not c.is_active:
        return
    reason = (
        f"after {count} failed run{'s' if count != 1 else ''} in a row "
        f"(last: {run.failure_class or run.status})"
    )
    try:
        with session.begin_nested():  # a pause that cannot be made must not lose the close
            connectors.pause_for(
                c.id, reason, session=session, box=SecretBox(settings.secret_keys())
            )
            notify.emit(
                session,
                "connector.auto_paused",
                key=f"connector.auto_paused:run-{run.id}",
                connector=c,
                run=run,
                details={"reason": reason, "consecutive_failures": count},
            )
    except Exception:
        log.exception("connector %s: could not pause it after %s failed runs", c.id, count)
        return
    log.warning("connector %s %s", c.id, reason)
