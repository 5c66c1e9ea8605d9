"""`conveyor up` facing bad input and faults: it names the part and the reason, stops what
it started, exits non-zero, and leaves no process behind."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.up_process import UpProcess, processes_using, up_env


def _failed(up: UpProcess, timeout: float = 120) -> str:
    code = up.finish(timeout)
    assert code != 0, up.output
    assert not processes_using(up.home), f"left behind: {processes_using(up.home)}"
    return up.output


def test_unknown_setting_value_is_named(tmp_path: Path) -> None:
    home = tmp_path / "home"
    up = UpProcess(home, env=up_env(home, CONVEYOR_ENV="staging"))
    out = _failed(up, 60)
    assert "CONVEYOR_ENV='staging'" in out
    assert "Input should be 'local' or 'production'" in out
    assert "Traceback" not in out


def test_bad_log_level_is_named(tmp_path: Path) -> None:
    home = tmp_path / "home"
    up = UpProcess(home, env=up_env(home, CONVEYOR_LOG_LEVEL="LOUD"))
    out = _failed(up, 60)
    assert "CONVEYOR_LOG_LEVEL='LOUD'" in out


@contextlib.contextmanager
def _listening() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_port_taken(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with _listening() as port:
        up = UpProcess(home, "--port", str(port))  # the later --port wins
        out = _failed(up, 60)
    assert f"web app: port {port} on 127.0.0.1 is already in use" in out
    assert "--port" in out
    assert not (home / "prefect").exists()  # nothing was started


def test_prefect_port_taken(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with _listening() as port:
        up = UpProcess(home, "--prefect-port", str(port))
        out = _failed(up, 60)
    assert f"Prefect server: port {port} on 127.0.0.1 is already in use" in out


@pytest.mark.prefect
def test_prefect_failing_to_start(tmp_path: Path) -> None:
    home = tmp_path / "home"
    # A database Prefect cannot open: the server exits during its start-up.
    env = up_env(
        home, PREFECT_SERVER_DATABASE_CONNECTION_URL="sqlite+aiosqlite:////proc/nowhere/p.db"
    )
    up = UpProcess(home, env=env)
    out = _failed(up)
    assert "Prefect server failed to start: exited with code" in out
    assert "unable to open database file" in out  # the end of its log, shown
    assert str(home / "logs" / "prefect-server.log") in out
    assert "Stopping what was started" in out
    # The admin was created before the failure: its only copy of the password is shown.
    assert "was created with password" in out


def _make_read_only(path: Path) -> None:
    if os.geteuid() != 0:
        path.chmod(0o444)
        return
    # root ignores file modes; the immutable attribute stops root too.
    if not shutil.which("chattr"):
        pytest.skip("running as root without chattr: cannot make a file read-only")
    res = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"chattr +i not permitted here: {res.stderr.strip()}")


def _undo_read_only(path: Path) -> None:
    if os.geteuid() == 0 and shutil.which("chattr"):
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    path.chmod(0o644)


def test_database_file_not_writable(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    db = home / "conveyor.db"
    db.touch()
    _make_read_only(db)
    try:
        up = UpProcess(home)
        out = _failed(up, 60)
    finally:
        _undo_read_only(db)
    assert "cannot migrate and write to sqlite:///" in out
    assert "readonly database" in out
    assert "not writable" in out  # the hint says what to do
    assert not (home / "prefect").exists()


def test_second_up_on_the_same_home_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with open(home / "up.pid", "w") as fh:
        fh.write("4242")
        fh.flush()
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running `conveyor up` holds it
        up = UpProcess(home)
        out = _failed(up, 60)
    assert "another `conveyor up` (pid 4242) is already running" in out


@pytest.mark.prefect
def test_sigterm_while_starting_stops_everything(tmp_path: Path) -> None:
    home = tmp_path / "home"
    up = UpProcess(home)
    try:
        up.wait_for(r"Prefect server at http", 180)  # the other parts are starting now
        up.proc.send_signal(signal.SIGTERM)
        # The stop is bounded at about 10 s (8 s of grace, then SIGKILL); 45 s leaves room
        # for a slow machine. On a timeout the output shows why: it once showed a SIGTERM
        # lost in a fork (see Supervisor.request_stop).
        try:
            code = up.finish(45)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running 45 s after SIGTERM; its output:\n{up.output}")
    finally:
        up.kill_all()
    assert code == 130, up.output
    assert "Stopping" in up.output
    assert "Conveyor is ready" not in up.output
    assert "was created with password" in up.output  # its only copy, before stopping
    assert not processes_using(home)
