"""`make up`: time to the ready line, resident memory of the idle process tree, stop time.

Baseline, measured in the same run: a bare ``prefect server start`` (SQLite, fresh home)
until ``/api/health`` answers, and its memory: the floor any Prefect-based platform pays.

Runs ``make -o .venv/.installed-stamp up`` (the ``.venv`` is taken as ready, as the issue
asks) in a fresh temporary CONVEYOR_HOME, then a second start on the same home.
Memory is summed over ``make`` and every descendant: RSS (counts shared pages once per
process, so it overstates) and PSS (shared pages split between processes).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).parent))
from _common import free_port, machine

REPO = Path(__file__).resolve().parents[1]
IDLE_SECONDS = 30
READY = "Conveyor is ready"


class Run:
    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.t0 = time.monotonic()
        self.lines: list[tuple[float, str]] = []
        self.proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.monotonic() - self.t0, line.rstrip()))

    def wait_for(self, pattern: str, timeout: float = 300) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, line in self.lines:
                if re.search(pattern, line):
                    return at
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise SystemExit(f"no {pattern!r}:\n" + "\n".join(line for _, line in self.lines))

    def tree(self) -> list[psutil.Process]:
        root = psutil.Process(self.proc.pid)
        return [root, *root.children(recursive=True)]

    def stop(self) -> float:
        t = time.monotonic()
        for p in self.tree():  # Ctrl-C in a terminal reaches make and conveyor up alike
            if "conveyor" in " ".join(p.cmdline()) and " up" in " ".join(p.cmdline()):
                p.send_signal(signal.SIGINT)
        self.proc.wait(timeout=30)
        return time.monotonic() - t


def memory(procs: list[psutil.Process]) -> tuple[float, float, list[tuple[str, float]]]:
    rss = pss = 0.0
    parts = []
    for p in procs:
        try:
            info = p.memory_full_info()
            cmd = " ".join(p.cmdline()[1:5])
        except psutil.Error:
            continue
        rss += info.rss
        pss += info.pss
        parts.append((cmd, info.rss / 2**20))
    return rss / 2**20, pss / 2**20, parts


def baseline() -> tuple[float, float]:
    """Seconds until a bare Prefect server answers, and its RSS in MiB."""
    home = tempfile.mkdtemp(prefix="bench-prefect-")
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": home,
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        seconds = time.monotonic() - t0
        time.sleep(IDLE_SECONDS / 3)
        rss = psutil.Process(proc.pid).memory_info().rss / 2**20
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    return seconds, rss


def main() -> int:
    home = tempfile.mkdtemp(prefix="bench-up-home-")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "PREFECT_"))}
    env["CONVEYOR_HOME"] = home
    argv = ["make", "-s", "-o", ".venv/.installed-stamp", "up"]

    base_s, base_rss = baseline()

    first = Run(argv, env)
    ready1 = first.wait_for(READY)
    demo = first.wait_for(r"Demo run \d+ succeeded", 120)
    time.sleep(IDLE_SECONDS)
    rss, pss, parts = memory(first.tree())
    stop1 = first.stop()

    second = Run(argv, env)
    ready2 = second.wait_for(READY)
    time.sleep(IDLE_SECONDS / 3)
    rss2, pss2, _ = memory(second.tree())
    stop2 = second.stop()

    print(f"machine: {machine()}; load average at end {os.getloadavg()[0]:.1f}")
    print()
    print("| measure | `make up` | bare `prefect server start` | ratio |")
    print("|---|---|---|---|")
    ratio1 = ready1 / base_s
    print(f"| first start → ready line | {ready1:.1f} s | {base_s:.1f} s | {ratio1:.1f}x |")
    print(f"| second start → ready line | {ready2:.1f} s | | {ready2 / base_s:.1f}x |")
    print(f"| first start → demo run succeeded | {demo:.1f} s | | |")
    print(
        f"| idle RSS, whole tree ({len(parts)} processes) | {rss:.0f} MiB | {base_rss:.0f} MiB"
        f" | {rss / base_rss:.1f}x |"
    )
    print(f"| idle PSS, whole tree | {pss:.0f} MiB | | |")
    print(f"| idle RSS after second start | {rss2:.0f} MiB (PSS {pss2:.0f}) | | |")
    print(f"| Ctrl-C → every process gone | {stop1:.1f} s / {stop2:.1f} s | | |")
    print()
    print("| process | RSS MiB |")
    print("|---|---|")
    for cmd, mib in sorted(parts, key=lambda x: -x[1]):
        print(f"| `{cmd}` | {mib:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
