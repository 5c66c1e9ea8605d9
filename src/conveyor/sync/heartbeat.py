"""The reconciler loop's own heartbeat: a file it touches each time round.

The lease row's heartbeat is written by a background task that renews the lock, and only
by the leader; it says a reconciler holds the lock, not that its loop still turns. This
file is touched by the loop itself, leader (each pass) and standby (each try for the
lock) alike, and a database or Prefect outage does not stop it (the loop backs off and
goes round again). ``conveyor reconcile --check-heartbeat`` reads its age: the chart's
liveness probe, so a hung loop is restarted while an outage restarts nothing.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

# Writes at most this often (the leader's loop goes round every poll interval).
MIN_SPACING = 5.0

_last: dict[Path, float] = {}


def beat(path: Path) -> None:
    """Touch ``path`` (created with its folder), at most every ``MIN_SPACING`` seconds."""
    now = time.monotonic()
    if now - _last.get(path, float("-inf")) < MIN_SPACING:
        return
    with contextlib.suppress(OSError):  # a read-only home only costs the probe its signal
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        _last[path] = now


def age(path: Path) -> float | None:
    """Seconds since the last beat, or None when the file does not exist."""
    try:
        return max(0.0, time.time() - path.stat().st_mtime)
    except FileNotFoundError:
        return None
