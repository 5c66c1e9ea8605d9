"""Run ``conveyor up`` as a real subprocess in a temporary home, on free ports."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from conveyor.supervisor.report import READY_LINE
from tests.fixtures.net import free_port as free_port  # re-exported

CONVEYOR = [sys.executable, "-m", "conveyor.cli"]


def up_env(home: Path, **extra: str) -> dict[str, str]:
    """The test's environment minus what points at the test session's own servers."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CONVEYOR_", "PREFECT_")) and k != "PYTEST_CURRENT_TEST"
    }
    env.update(CONVEYOR_HOME=str(home), **extra)
    return env


def processes_using(home: Path) -> list[psutil.Process]:
    """Processes (other than this one) whose environment has CONVEYOR_HOME=home."""
    found = []
    for p in psutil.process_iter():
        if p.pid == os.getpid():
            continue
        try:
            if p.environ().get("CONVEYOR_HOME") == str(home):
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


class UpProcess:
    """``conveyor up`` with its output collected line by line."""

    def __init__(self, home: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.web_port = free_port()
        self.prefect_port = free_port()
        argv = [*CONVEYOR, "up", "--port", str(self.web_port)]
        argv += ["--prefect-port", str(self.prefect_port), *args]
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            argv,
            env=env or up_env(home),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def prefect_url(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}"

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.output)
            if m:
                return m
            if self.proc.poll() is not None:
                self._reader.join(timeout=5)
                m = re.search(pattern, self.output)
                if m:
                    return m
                raise AssertionError(
                    f"conveyor up exited ({self.proc.returncode}) before {pattern!r}:\n"
                    + self.output
                )
            time.sleep(0.2)
        raise AssertionError(f"no {pattern!r} after {timeout} s:\n{self.output}")

    def wait_ready(self, timeout: float = 240) -> None:
        """Until the whole ready block is read: its last row is "Stop".

        The block arrives line by line; returning at the ready line alone let a test read
        the output before the "Admin login" row had come in.
        """
        self.wait_for(READY_LINE + r"[\s\S]*\n +Stop +", timeout)

    def tree(self) -> list[psutil.Process]:
        root = psutil.Process(self.proc.pid)
        return [root, *root.children(recursive=True)]

    def child_pid(self, needle: str) -> int:
        for p in psutil.Process(self.proc.pid).children():
            if needle in " ".join(p.cmdline()):
                return p.pid
        raise AssertionError(f"no child running {needle!r}")

    def interrupt(self, timeout: float = 20) -> float:
        """SIGINT, as Ctrl-C does; seconds until the process exited."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return time.monotonic() - started

    def finish(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def kill_all(self) -> None:
        """Last-resort cleanup for a failed test: nothing may outlive it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for p in processes_using(self.home):
            with contextlib.suppress(psutil.Error):
                p.kill()


def conveyor(home: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """Run a ``conveyor`` command against the same home."""
    return subprocess.run(
        [*CONVEYOR, *args],
        env=up_env(home, **extra_env),
        capture_output=True,
        text=True,
        timeout=120,
    )
