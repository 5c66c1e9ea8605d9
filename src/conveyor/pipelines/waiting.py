"""Waiting says why: a step that waits (a DuckDB file held by another process) reports the
reason, and the flow that installed a reporter writes it on the run record.

A module-level reporter rather than a parameter: the runner's steps run inside Prefect
tasks and the types' code, none of which knows the run record; one flow run runs per
process, and without a reporter (checks, discovery, tests) ``report`` does nothing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

log = logging.getLogger("conveyor.pipelines.waiting")

Reporter = Callable[[str | None], None]

_lock = threading.Lock()
_reporter: Reporter | None = None


@contextlib.contextmanager
def reporting(reporter: Reporter | None) -> Iterator[None]:
    """Send ``report`` calls to ``reporter`` while the block runs."""
    global _reporter
    with _lock:
        previous, _reporter = _reporter, reporter
    try:
        yield
    finally:
        with _lock:
            _reporter = previous


def report(reason: str | None) -> None:
    """Say why the run waits (None: it no longer does). Never raises: a reason that cannot
    be written is not worth failing the run."""
    reporter = _reporter
    if reporter is None:
        return
    try:
        reporter(reason)
    except Exception as exc:
        log.warning("could not record why the run waits: %s", exc)
