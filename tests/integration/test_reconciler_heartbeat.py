"""`conveyor reconcile --check-heartbeat`: the chart's liveness probe for the reconciler.

A real `conveyor reconcile` process (SQLite, Prefect unreachable: the loop backs off and
goes round); the check passes while its loop turns, and fails once the process is frozen
(SIGSTOP: a hung loop), or before any loop ever ran.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.fixtures.db import migrated_sqlite_url

CONVEYOR = [sys.executable, "-m", "conveyor.cli"]


def _env(home: Path, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "PREFECT_"))}
    env.update(
        CONVEYOR_HOME=str(home),
        CONVEYOR_DATABASE_URL=url,
        PREFECT_HOME=str(home / ".prefect"),
        PREFECT_API_URL="http://127.0.0.1:9/api",  # nothing listens: Prefect is "down"
        CONVEYOR_SECRET_KEY="Y2FuYXJ5LWZlcm5ldC1rZXktY2FuYXJ5LWZlcm5ldC0=",
    )
    return env


def _check(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CONVEYOR, "reconcile", "--check-heartbeat", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return False


def test_check_heartbeat_follows_the_reconciler_loop(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = _env(home, migrated_sqlite_url(tmp_path / "conveyor.db"))

    never = _check(env)
    assert never.returncode == 1
    assert "no reconciler heartbeat yet" in never.stdout

    proc = subprocess.Popen(
        [*CONVEYOR, "reconcile"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        # Prefect is unreachable, yet the loop goes round: alive, no restart for an outage.
        assert _until(lambda: _check(env, "--max-age", "30").returncode == 0, 30)
        ok = _check(env, "--max-age", "30")
        assert "reconciler loop alive" in ok.stdout

        proc.send_signal(signal.SIGSTOP)  # the loop hangs
        try:
            assert _until(lambda: _check(env, "--max-age", "2").returncode == 1, 15)
            stale = _check(env, "--max-age", "2")
            assert "reconciler loop silent for" in stale.stdout and "limit 2 s" in stale.stdout
        finally:
            proc.send_signal(signal.SIGCONT)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
