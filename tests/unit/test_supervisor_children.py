"""Process groups: a stubborn child and a grandchild in its own session are still stopped."""

from __future__ import annotations

import socket
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from conveyor.supervisor.children import Child, ChildSpec, stop_all
from conveyor.supervisor.ports import PortTaken, choose_port

# Ignores SIGTERM, and starts a grandchild in a new session (as flow runs may be).
STUBBORN = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                     start_new_session=True)
    print("started", flush=True)
    time.sleep(600)
    """
)


def _child(tmp_path: Path, code: str, name: str = "stubborn") -> Child:
    env = {"PATH": "/usr/bin:/bin", "CONVEYOR_TEST_MARK": str(tmp_path)}
    spec = ChildSpec(name, name, [sys.executable, "-c", code], env, tmp_path / f"{name}.log")
    return Child(spec)


def _wait_started(child: Child) -> None:
    deadline = time.monotonic() + 20
    while "started" not in child.spec.log_path.read_text():
        assert time.monotonic() < deadline, child.spec.log_path.read_text()
        time.sleep(0.1)


def test_stop_all_kills_stubborn_child_and_escaped_grandchild(tmp_path: Path) -> None:
    child = _child(tmp_path, STUBBORN)
    child.start()
    _wait_started(child)
    child.remember_descendants()
    family = list(child.known.values())
    assert len(family) == 2
    started = time.monotonic()
    killed = stop_all([child], timeout=1.0, marker=("CONVEYOR_TEST_MARK", str(tmp_path)))
    assert time.monotonic() - started < 5
    assert set(killed) == {p.pid for p in family}
    assert not [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_restart_backoff_doubles_and_resets(tmp_path: Path) -> None:
    child = _child(tmp_path, "pass", "quick")
    child.started_at = time.monotonic()
    assert [child.schedule_restart() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    child.started_at = time.monotonic() - 120  # it had been up for two minutes
    assert child.schedule_restart() == 1


def test_log_tail_shows_the_exception(tmp_path: Path) -> None:
    child = _child(tmp_path, "raise SystemExit(3)", "failing")
    child.spec.log_path.write_text(
        "old run\n=== 2026 start ===\nbooting\nTraceback (most recent call last):\n"
        '  File "x.py", line 1\nValueError: port is not a number\nstopped\n'
    )
    assert child.log_tail().splitlines() == ["ValueError: port is not a number", "stopped"]


def test_choose_port_default_moves_on_explicit_fails() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        assert choose_port("127.0.0.1", None, taken, "web app", "--port", set()) != taken
        with pytest.raises(PortTaken, match=f"web app: port {taken} on 127.0.0.1"):
            choose_port("127.0.0.1", taken, 8000, "web app", "--port", set())


def test_a_stop_request_whose_raise_was_lost_still_stops_start_up_and_supervising(
    tmp_path: Path,
) -> None:
    """A signal handled inside logging's at-fork hook raises where Python ignores it; the
    start-up and supervising loops see the request anyway."""
    import io

    from rich.console import Console

    from conveyor.settings import Settings
    from conveyor.supervisor.config import make_plan
    from conveyor.supervisor.report import Reporter
    from conveyor.supervisor.startup import StopRequested, Supervisor

    settings = Settings(home=tmp_path)
    plan = make_plan(settings, host="127.0.0.1", port=None, prefect_port=None, worker_limit=1)
    sup = Supervisor(plan, Reporter(Console(file=io.StringIO())))
    with pytest.raises(StopRequested):
        sup.request_stop(15)  # as the handler does; suppose this raise was swallowed
    with pytest.raises(StopRequested):
        sup.wait_all({"part": lambda: None}, 60, {"part": "Part"})
    with pytest.raises(StopRequested):
        sup.start("worker")
    assert sup.children == {}  # nothing started after the request
    with pytest.raises(StopRequested):
        sup.supervise()
