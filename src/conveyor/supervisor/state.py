"""What a running ``conveyor up`` tells other commands of the same ``CONVEYOR_HOME``.

``up`` chooses its ports at start (the defaults move to the next free port) and hands the
Prefect URL to its children through their environment only, so a second shell knew
nothing of it: ``conveyor doctor`` said "PREFECT_API_URL is not set" while every part was
healthy (issue 22). ``up`` now holds ``up.pid`` locked for its whole life and writes
``up.json`` next to it (its pid, the web app's and Prefect's URLs, the work pool); both
go at a clean stop. A reader trusts ``up.json`` only while ``up.pid`` is still locked, so
the files of a killed ``up`` mislead nobody.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

PID_FILE = "up.pid"
STATE_FILE = "up.json"


@dataclass(frozen=True)
class UpState:
    pid: int
    web_url: str
    prefect_api_url: str
    prefect_ui_url: str
    work_pool: str


def write(home: Path, state: UpState) -> None:
    """Write ``up.json`` (readable by the owner only, like the rest of the home)."""
    path = home / STATE_FILE
    tmp = path.with_suffix(".json.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(state), fh)
    tmp.replace(path)


def remove(home: Path) -> None:
    """Remove ``up.json`` and ``up.pid`` (called by ``up`` itself while it holds the lock)."""
    for name in (STATE_FILE, PID_FILE):
        with contextlib.suppress(FileNotFoundError):
            (home / name).unlink()


def running(home: Path) -> UpState | None:
    """The state of the ``conveyor up`` running with ``home`` now, or None."""
    if not _locked(home / PID_FILE):
        return None
    try:
        data = json.loads((home / STATE_FILE).read_text())
        return UpState(
            pid=int(data["pid"]),
            web_url=str(data["web_url"]),
            prefect_api_url=str(data["prefect_api_url"]),
            prefect_ui_url=str(data["prefect_ui_url"]),
            work_pool=str(data["work_pool"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # starting (no state yet) or unreadable: as if unknown


def _locked(pid_file: Path) -> bool:
    """Whether some process holds ``pid_file``'s lock (``up`` does, for its whole life)."""
    try:
        fh = open(pid_file)  # noqa: SIM115 - closed below
    except OSError:
        return False
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False
