"""Child processes: each in its own process group, logging to a file, stopped as a group.

A child is started with ``start_new_session`` so that a terminal's Ctrl-C reaches only
the supervisor, which then stops the children in its own order and time; and so that a
child's own children (uvicorn, flow-run processes) are stopped with it. On Linux each
child also gets SIGTERM if the supervisor dies without cleaning up (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil

LOG_ROTATE_BYTES = 10 * 1024 * 1024
MAX_BACKOFF = 30.0
STABLE_AFTER = 60.0  # a child up this long has its restart backoff reset


def _pdeathsig() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return None
    prctl = ctypes.CDLL(libc_name, use_errno=True).prctl
    pr_set_pdeathsig = 1
    sigterm = int(signal.SIGTERM)

    def set_pdeathsig() -> None:  # runs in the child between fork and exec
        prctl(pr_set_pdeathsig, sigterm, 0, 0, 0)

    return set_pdeathsig


_PREEXEC = _pdeathsig()


@dataclass
class ChildSpec:
    """How to run one part."""

    name: str  # short, used for the log file: "prefect-server"
    label: str  # for people: "Prefect server"
    argv: list[str]
    env: dict[str, str]
    log_path: Path


@dataclass
class Child:
    """One supervised process (restarted with backoff when it dies)."""

    spec: ChildSpec
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = 1.0
    restart_at: float | None = None
    known: dict[int, psutil.Process] = field(default_factory=dict)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        """Start the process, appending its output to its log file."""
        path = self.spec.log_path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size > LOG_ROTATE_BYTES:
            path.replace(path.with_suffix(path.suffix + ".1"))
        with open(path, "ab") as log:
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            log.write(f"\n=== {stamp} conveyor up starts {self.spec.label} ===\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.spec.argv,
                env=self.spec.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_PREEXEC,
                close_fds=True,
            )
        self.started_at = time.monotonic()
        self.restart_at = None
        self.known = {}
        self.remember_descendants()

    def poll(self) -> int | None:
        """The exit code if the process has ended, else None."""
        if self.proc is None:
            return None
        return self.proc.poll()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def remember_descendants(self) -> None:
        """Note the child and its descendants, so that none is missed at stop time."""
        if not self.running or self.proc is None:
            return
        try:
            root = psutil.Process(self.proc.pid)
            for p in [root, *root.children(recursive=True)]:
                self.known.setdefault(p.pid, p)
        except psutil.Error:
            pass

    def uptime(self) -> float:
        return time.monotonic() - self.started_at

    def schedule_restart(self) -> float:
        """Plan the next start after a crash; the delay in seconds."""
        if self.uptime() > STABLE_AFTER:
            self.backoff = 1.0
        delay = self.backoff
        self.backoff = min(MAX_BACKOFF, self.backoff * 2)
        self.restart_at = time.monotonic() + delay
        self.restarts += 1
        return delay

    def log_tail(self, lines: int = 8) -> str:
        """The telling end of this child's current log: from its last error line on."""
        try:
            text = self.spec.log_path.read_text(errors="replace")
        except OSError:
            return ""
        text = text.rsplit("\n=== ", 1)[-1].split("\n", 1)[-1]  # only the latest start
        kept = [line for line in text.splitlines() if line.strip()]
        # A Python exception line names the cause best; a logged ERROR line next best.
        raised = [i for i, line in enumerate(kept) if _EXCEPTION_LINE.match(line)]
        logged = [i for i, line in enumerate(kept) if _ERROR_LINE.search(line)]
        start = (raised or logged or [len(kept) - lines])[-1]
        return "\n".join(kept[max(0, start) :][:lines])


_EXCEPTION_LINE = re.compile(r"^\s*[\w.]*(Error|Exception)(\s*:|$)")
_ERROR_LINE = re.compile(r"\b(ERROR|CRITICAL)\b|\berror:")


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def marked_processes(marker: str, value: str) -> list[psutil.Process]:
    """Every process of this user whose environment carries ``marker=value``."""
    me = os.getpid()
    found = []
    for p in psutil.process_iter(["pid"]):
        if p.pid == me:
            continue
        try:
            if p.environ().get(marker) == value:
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


def stop_all(
    children: Iterable[Child],
    *,
    timeout: float = 8.0,
    marker: tuple[str, str] | None = None,
) -> list[int]:
    """SIGTERM every child's group, SIGKILL what is left after ``timeout``; pids killed.

    Also ends processes that left their group (e.g. flow runs started in a new session):
    every descendant seen while running, and any process carrying ``marker``.
    """
    children = list(children)
    targets: dict[int, psutil.Process] = {}
    for child in children:
        child.remember_descendants()
        targets.update(child.known)
        if child.running and child.proc is not None:
            _signal_group(child.proc.pid, signal.SIGTERM)
    if marker is not None:
        for p in marked_processes(*marker):
            targets.setdefault(p.pid, p)
    for p in targets.values():
        with contextlib.suppress(psutil.Error):
            p.terminate()
    alive = list(targets.values())
    _gone, alive = psutil.wait_procs(alive, timeout=timeout)
    killed = []
    for child in children:
        if child.running and child.proc is not None:
            _signal_group(child.proc.pid, signal.SIGKILL)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
            killed.append(p.pid)
    psutil.wait_procs(alive, timeout=2)
    for child in children:
        if child.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(timeout=2)
    return killed
