"""What a run's page says about it: its failure class in words, what to do next, and where.

Plain functions over a run (``RunOut``) and its connector's endpoints, so the wording can be
tested without a browser. The failure class and side come from the flow (issue 17); the
words here only explain them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from conveyor.domain.models import RunOut
from conveyor.domain.vocabulary import OPEN_RUN_STATUSES

# Runs a person may start again with "Retry" (a new run record, trigger "retry").
RETRYABLE_STATUSES = frozenset({"failed", "crashed", "cancelled"})
# Runs "Cancel" applies to.
CANCELLABLE_STATUSES = frozenset(OPEN_RUN_STATUSES)

CLASS_TITLES = {
    "transient": "Temporary failure",
    "config": "Settings problem",
    "data": "Data problem",
    "internal": "Internal error",
}


@dataclass(frozen=True)
class Link:
    href: str
    text: str


@dataclass(frozen=True)
class Advice:
    """The failure explained: a title, what it means and what to do, and where to do it."""

    failure_class: str
    title: str
    text: str
    link: Link | None = None


@dataclass(frozen=True)
class Endpoints:
    """The run's connector's source and destination, for the link to the one at fault."""

    source_id: int
    source_name: str
    destination_id: int
    destination_name: str

    def link(self, side: str | None) -> Link | None:
        if side == "source":
            return Link(f"/sources/{self.source_id}", f"Open the source “{self.source_name}”")
        if side == "destination":
            return Link(
                f"/destinations/{self.destination_id}",
                f"Open the destination “{self.destination_name}”",
            )
        return None


def _side_words(side: str | None) -> str:
    return {"source": "the source", "destination": "the destination"}.get(
        side or "", "the source or the destination"
    )


def _transient(run: RunOut, when: str | None) -> str:
    side = _side_words(run.failure_side)
    text = (
        f"This usually passes on its own: {side} could not be reached, timed out, was busy "
        "or locked."
    )
    if run.status in OPEN_RUN_STATUSES and run.attempt > 1:
        # A retrying run's ``attempt`` is already the one to come (services/retries.py).
        text += f" Conveyor retries it: attempt {run.attempt} of {run.max_attempts}"
        text += f", next at {when}." if when else "."
    elif run.max_attempts > 1 and run.attempt >= run.max_attempts:
        text += (
            f" Conveyor tried {run.max_attempts} times; when {side} is back, press Retry "
            "(the retry resumes from the last committed load)."
        )
    else:
        text += " Press Retry when it is back (the retry resumes from the last committed load)."
    return text


def _config(run: RunOut) -> str:
    if run.failure_side == "source":
        return (
            "The source refused the connection settings, or what the connector copies is "
            "missing there (a table, a folder). Check them on the source's page, test the "
            "connection, then Retry. Conveyor does not retry this on its own."
        )
    if run.failure_side == "destination":
        return (
            "The destination refused the connection settings or cannot be written "
            "(permission, a missing path or schema). Check them on the destination's page, "
            "test the connection, then Retry. Conveyor does not retry this on its own."
        )
    return (
        "The connector's settings need a person: check the connector, its source and its "
        "destination, then Retry. Conveyor does not retry this on its own."
    )


def _data() -> str:
    return (
        "The data did not fit: a type, a constraint or a schema conflict. The error and the "
        "log below name the table and column; fix the data at the source, or change the "
        "connector's write mode, then Retry. Conveyor does not retry this on its own."
    )


def _internal() -> str:
    return (
        "This looks like a bug in Conveyor or a library it uses, not in your settings. The "
        "full log below has the details: please report it with the log. Retry may pass if "
        "the cause was passing."
    )


def advice(run: RunOut, endpoints: Endpoints, next_attempt: str | None = None) -> Advice | None:
    """The run's failure in words (None when it has no failure class)."""
    cls = run.failure_class
    if cls is None:
        return None
    if cls == "transient":
        text = _transient(run, next_attempt)
    elif cls == "config":
        text = _config(run)
    elif cls == "data":
        text = _data()
    else:
        text = _internal()
    return Advice(cls, CLASS_TITLES.get(cls, cls), text, endpoints.link(run.failure_side))


def waiting(run: RunOut) -> str | None:
    """Why an open run is not moving, as a sentence ("Waiting for the DuckDB file held by
    another process, attempt 2 of 5"; "Retrying in 60 s: ..."), else None."""
    if run.status not in OPEN_RUN_STATUSES or not run.waiting_reason:
        return None
    text = run.waiting_reason.strip()
    if run.max_attempts > 1 and "attempt" not in text.lower():
        text += f", attempt {run.attempt} of {run.max_attempts}"
    return text[:1].upper() + text[1:]


def _when(value: object) -> datetime | None:
    """A time from the attempts JSON (an ISO string, or a datetime before it was stored)."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def attempt_rows(run: RunOut) -> list[dict[str, Any]]:
    """Earlier attempts (the ``attempts`` list), oldest first, times parsed for display."""
    rows = [
        {**a, "started_at": _when(a.get("started_at")), "finished_at": _when(a.get("finished_at"))}
        for a in run.attempts
        if isinstance(a, dict)
    ]
    return sorted(rows, key=lambda a: int(a.get("attempt") or 0))
