"""A committed load is a succeeded run, whatever happens to the worker (invariant 8 of
docs/design.md).

The flow writes ``committed_at`` and what it moved onto the record the moment the data has
committed at the destination (``mark_committed``), before anything else can fail. Every
closer that would otherwise record a crash, a cancellation or a failure — Prefect's crash
hook, the watchdog, the next run finding a silent record — asks ``settle`` first: a record
with ``committed_at`` closes as succeeded with its rows, and a note that the worker was lost
after the commit. (Measured: with only the worker killed, the flow process finished its load
and was then aborted by a SystemExit; Prefect's crash hook recorded the run crashed.)
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from conveyor.db.base import utcnow
from conveyor.db.models import ConnectorRun
from conveyor.db.session import session_scope
from conveyor.domain.vocabulary import OPEN_RUN_STATUSES
from conveyor.settings import Settings

NOTE = "The worker was lost after the data committed: recorded as succeeded with its rows."


def mark_committed(run_id: int, *, settings: Settings, stats: Any) -> None:
    """The data of the run has committed: keep that, with rows, bytes and tables."""
    with session_scope(settings.effective_database_url) as session:
        run = session.get(ConnectorRun, run_id)
        if run is None:
            return
        run.committed_at = utcnow()
        run.rows_loaded = stats.total_rows
        run.bytes_loaded = stats.bytes
        run.table_stats = {t: {"rows": n} for t, n in sorted(stats.rows.items())}
        run.schema_changes = stats.schema_changes


def settle(run: ConnectorRun) -> bool:
    """Close an open record whose data committed as succeeded; whether it did."""
    if run.committed_at is None or run.status not in OPEN_RUN_STATUSES:
        return False
    run.status = "succeeded"
    run.finished_at = utcnow()
    run.error = None
    run.failure_class = run.failure_side = None
    run.waiting_reason = run.next_attempt_at = None
    run.log_summary = NOTE
    return True


def settle_if_open(session: Session, run_id: int) -> int:
    """``settle`` as one conditional UPDATE (the watchdog's way); 1 if it closed the run."""
    result = session.execute(
        update(ConnectorRun)
        .where(
            ConnectorRun.id == run_id,
            ConnectorRun.status.in_(OPEN_RUN_STATUSES),
            ConnectorRun.committed_at.is_not(None),
        )
        .values(
            status="succeeded",
            finished_at=utcnow(),
            error=None,
            failure_class=None,
            failure_side=None,
            waiting_reason=None,
            next_attempt_at=None,
            log_summary=NOTE,
        )
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
