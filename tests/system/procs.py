"""The soak's platform: PostgreSQL scratch databases and the parts `conveyor up` runs.

Every part is started with the same command line and environment as `conveyor up` gives it
(``Supervisor.specs()``), each in a process group of its own; this module adds what the
chaos loop needs: SIGKILL a part (or a flow-run process) and start it again, and notice a
part that died on its own and start it again, as a supervisor would.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import psycopg
from psycopg import sql

PARTS = ("prefect-server", "worker", "reconciler", "web")
FLOW_RUN = "flow-run"
COMPONENTS = (*PARTS, FLOW_RUN)


# --- scratch databases -----------------------------------------------------------------


def admin_url() -> str:
    return os.environ.get(
        "CONVEYOR_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )


def db_url(name: str, driver: str = "postgresql") -> str:
    """The URL of database ``name`` on the test server (same user, host and port)."""
    from sqlalchemy.engine import make_url

    return (
        make_url(admin_url())
        .set(drivername=driver, database=name)
        .render_as_string(hide_password=False)
    )


def create_databases(names: list[str]) -> None:
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        for name in names:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_databases(names: list[str]) -> None:
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        for name in names:
            with contextlib.suppress(psycopg.Error):
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


# --- the parts -------------------------------------------------------------------------


@dataclass
class Platform:
    """The four parts of `conveyor up`, started and killed at will; flow runs found by env."""

    home: Path
    web_port: int
    prefect_port: int
    children: dict[str, object] = field(default_factory=dict)  # name -> supervisor Child
    kills: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COMPONENTS, 0))
    exits: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PARTS, 0))
    supervisor_id: str = ""

    def __post_init__(self) -> None:
        # The plan and specs of `conveyor up` itself: same argv, same environment.
        from rich.console import Console

        from conveyor.cli.worker import default_limit
        from conveyor.supervisor.config import load_settings, make_plan
        from conveyor.supervisor.report import Reporter
        from conveyor.supervisor.startup import Supervisor

        settings = load_settings()
        plan = make_plan(
            settings,
            host="127.0.0.1",
            port=self.web_port,
            prefect_port=self.prefect_port,
            worker_limit=default_limit(),
        )
        plan.settings = settings.model_copy(
            update={
                "home": plan.home,
                "prefect_api_url": plan.prefect_api_url,
                "prefect_ui_url": plan.prefect_ui_url,
            }
        )
        self.plan = plan
        self.supervisor_id = plan.supervisor_id
        self._sup = Supervisor(plan, Reporter(Console(file=io.StringIO())))
        self.specs = self._sup.specs()

    @property
    def worker_limit(self) -> int:
        return int(self.plan.worker_limit)

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def prefect_api(self) -> str:
        return str(self.plan.prefect_api_url)

    def env(self) -> dict[str, str]:
        return dict(self.plan.base_env())

    def conveyor(self, *args: str, stdin: str | None = None) -> str:
        """Run a `conveyor` command with the platform's environment; its stdout."""
        from conveyor.supervisor.config import conveyor_argv

        proc = subprocess.run(
            conveyor_argv(*args),
            env=self.env(),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"conveyor {' '.join(args)} failed: {proc.stderr[-2000:]}")
        return proc.stdout

    def start(self, name: str) -> None:
        from conveyor.supervisor.children import Child

        child = self.children.get(name)
        if child is None:
            child = Child(self.specs[name])
            self.children[name] = child
        assert isinstance(child, Child)
        child.start()

    def running(self, name: str) -> bool:
        child = self.children.get(name)
        return bool(child is not None and child.running)  # type: ignore[attr-defined]

    def uptime(self, name: str) -> float:
        child = self.children.get(name)
        return child.uptime() if child is not None and child.running else 0.0  # type: ignore[attr-defined]

    def kill(self, name: str) -> bool:
        """SIGKILL a part's process group (no hook, no cleanup); False if it was not up."""
        child = self.children.get(name)
        if child is None or not child.running:  # type: ignore[attr-defined]
            return False
        proc = child.proc  # type: ignore[attr-defined]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        self.kills[name] += 1
        return True

    def flow_runs(self) -> list[psutil.Process]:
        """Live flow-run processes (the worker starts each in a session of its own)."""
        found = []
        for p in psutil.process_iter(["pid"]):
            try:
                env = p.environ()
            except (psutil.Error, OSError):
                continue
            if env.get("CONVEYOR_SUPERVISOR_ID") == self.supervisor_id and env.get(
                "PREFECT__FLOW_RUN_ID"
            ):
                found.append(p)
        return found

    def kill_flow_run(self, choose: object) -> bool:
        """SIGKILL one flow-run process (``choose`` picks from the list) and its children."""
        procs = self.flow_runs()
        if not procs:
            return False
        # The top of a run's tree: its parent is not itself a flow-run process.
        pids = {p.pid for p in procs}
        tops = [p for p in procs if _ppid(p) not in pids]
        victim = choose(sorted(tops or procs, key=lambda p: p.pid))  # type: ignore[operator]
        try:
            tree = [victim, *victim.children(recursive=True)]
        except psutil.Error:
            return False
        for p in tree:
            with contextlib.suppress(psutil.Error):
                p.kill()
        self.kills[FLOW_RUN] += 1
        return True

    def stop(self) -> None:
        from conveyor.supervisor.children import stop_all
        from conveyor.supervisor.config import MARKER

        stop_all(self.children.values(), timeout=8.0, marker=(MARKER, self.supervisor_id))  # type: ignore[arg-type]

    def log_tails(self, lines: int = 25) -> str:
        out = []
        for spec in self.specs.values():
            try:
                text = spec.log_path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            out.append(f"--- {spec.log_path} (last {lines} lines)\n" + "\n".join(text))
        return "\n".join(out)


def _ppid(p: psutil.Process) -> int:
    try:
        return p.ppid()
    except psutil.Error:
        return -1


def wait_http(url: str, timeout: float, ok: tuple[int, ...] = (200,)) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=3).status_code in ok:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


def python() -> str:
    return sys.executable
