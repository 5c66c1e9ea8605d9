"""Start every part in order, wait until all are healthy, then supervise until stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import select

from conveyor.db.models import Connector, ConnectorRun
from conveyor.db.session import session_scope
from conveyor.errors import ConveyorError
from conveyor.services import health
from conveyor.settings import Settings
from conveyor.supervisor import bootstrap
from conveyor.supervisor.children import Child, ChildSpec, stop_all
from conveyor.supervisor.config import MARKER, Plan, conveyor_argv
from conveyor.supervisor.report import Reporter, Summary

PREFECT_TIMEOUT = 120.0
PART_TIMEOUT = 90.0
SYNC_TIMEOUT = 90.0
POLL = 0.3
FINAL_RUN_STATUSES = {"succeeded", "failed", "crashed", "cancelled"}


class StartFailed(ConveyorError):
    """One part could not start: which, why, and the end of its log."""

    def __init__(self, part: str, reason: str, *, log_tail: str = "", log_path: Path | None = None):
        hint = f"full log: {log_path}" if log_path else None
        super().__init__(f"{part}: {reason}", hint)
        self.part = part
        self.detail = reason
        self.log_tail = log_tail


class StopRequested(BaseException):
    """SIGINT or SIGTERM arrived (a BaseException so no ``except Exception`` swallows it)."""


@dataclass
class Options:
    demo: bool = True
    demo_dir: Path | None = None


@dataclass
class Supervisor:
    plan: Plan
    reporter: Reporter
    options: Options = field(default_factory=Options)
    children: dict[str, Child] = field(default_factory=dict)
    demo_runs: dict[int, int] = field(default_factory=dict)  # run id -> connector id
    started: float = field(default_factory=time.monotonic)
    stop_signal: int | None = None  # set by ``request_stop``

    def request_stop(self, signum: int) -> None:
        """What the SIGINT/SIGTERM handler calls: remember the request, then raise it.

        The raise alone can be lost: a signal that lands while a child is being forked
        runs the handler inside logging's at-fork hook, where Python ignores exceptions
        (a clean-clone CI run saw ``conveyor up`` start every part after SIGTERM). So the
        start-up and supervising loops also check the flag (``_check_stop``).
        """
        self.stop_signal = signum
        raise StopRequested(signum)

    def _check_stop(self) -> None:
        if self.stop_signal is not None:
            raise StopRequested(self.stop_signal)

    @property
    def settings(self) -> Settings:
        return self.plan.settings

    # --- children ---------------------------------------------------------------------

    def specs(self) -> dict[str, ChildSpec]:
        p, base = self.plan, self.plan.base_env()
        logs = p.logs_dir

        def spec(name: str, label: str, argv: list[str], **extra: str) -> ChildSpec:
            return ChildSpec(name, label, argv, {**base, **extra}, logs / f"{name}.log")

        return {
            "prefect-server": spec(
                "prefect-server",
                "Prefect server",
                conveyor_argv(
                    "prefect-server", "--host", p.prefect_host, "--port", str(p.prefect_port)
                ),
                PREFECT_UI_API_URL=p.prefect_ui_url + "/api",
            ),
            "worker": spec(
                "worker",
                "Prefect worker",
                conveyor_argv(
                    "worker",
                    "--pool",
                    self.settings.default_work_pool,
                    "--limit",
                    str(p.worker_limit),
                    "--healthcheck-port",
                    str(p.worker_health_port),
                ),
                PREFECT_WORKER_WEBSERVER_HOST="127.0.0.1",
            ),
            "reconciler": spec("reconciler", "Reconciler", conveyor_argv("reconcile")),
            "web": spec(
                "web", "Web app", conveyor_argv("web", "--host", p.host, "--port", str(p.web_port))
            ),
        }

    def start(self, name: str) -> Child:
        self._check_stop()
        child = self.children.get(name) or Child(self.specs()[name])
        self.children[name] = child
        child.start()
        return child

    def _check_alive(self) -> None:
        for child in self.children.values():
            code = child.poll()
            if code is not None:
                raise StartFailed(
                    child.spec.label,
                    f"exited with code {code} while starting",
                    log_tail=child.log_tail(),
                    log_path=child.spec.log_path,
                )

    def wait_all(
        self, checks: dict[str, Callable[[], str | None]], timeout: float, labels: dict[str, str]
    ) -> None:
        """Poll every check until each returns a detail (done) or ``timeout`` passes.

        Any started child that exits meanwhile fails the start at once.
        """
        pending = dict(checks)
        deadline = time.monotonic() + timeout
        while pending:
            self._check_stop()
            self._check_alive()
            for key, check in list(pending.items()):
                detail = check()
                if detail is not None:
                    self.reporter.done(key, detail)
                    del pending[key]
            if not pending:
                return
            if time.monotonic() > deadline:
                key = next(iter(pending))
                child = self.children.get(key)
                raise StartFailed(
                    labels.get(key, key),
                    f"not ready after {timeout:.0f} s",
                    log_tail=child.log_tail() if child else "",
                    log_path=child.spec.log_path if child else None,
                )
            time.sleep(POLL)

    def stop(self) -> list[int]:
        return stop_all(
            self.children.values(), timeout=8.0, marker=(MARKER, self.plan.supervisor_id)
        )

    # --- checks -----------------------------------------------------------------------

    def _prefect_settings(self) -> Settings:
        return self.settings.model_copy(update={"prefect_api_url": self.plan.prefect_api_url})

    def _prefect_ready(self) -> str | None:
        try:
            ok = httpx.get(self.plan.prefect_api_url + "/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return None
        return f"Prefect server at {self.plan.prefect_ui_url}" if ok else None

    def _worker_ready(self) -> str | None:
        c = health.check_worker(self._prefect_settings())
        if not c.ok:
            return None
        return (
            f"Prefect worker for pool '{self.settings.default_work_pool}' "
            f"(up to {self.plan.worker_limit} runs at once)"
        )

    def _reconciler_ready(self) -> str | None:
        return "Reconciler" if health.check_reconciler(self.settings).ok else None

    def _web_ready(self) -> str | None:
        try:
            resp = httpx.get(self.plan.web_url + "/api/v1/health", timeout=2)
        except httpx.HTTPError:
            return None
        return f"Web app at {self.plan.web_url}" if resp.status_code in (200, 503) else None

    def _all_healthy(self) -> str | None:
        try:
            resp = httpx.get(self.plan.web_url + "/api/v1/health", timeout=5)
        except httpx.HTTPError:
            return None
        if resp.status_code == 200 and resp.json().get("status") == "ok":
            return "Every part healthy (database, Prefect, work pool, worker, reconciler)"
        return None

    # --- the sequence -----------------------------------------------------------------

    def run_startup(self) -> Summary:
        r, s = self.reporter, self.settings
        r.begin("database", "Database: migrations")
        revision = bootstrap.prepare_database(s)
        r.done("database", f"Database at schema {revision}")

        r.begin("admin", "Admin user")
        admin = bootstrap.ensure_admin(s)
        r.done("admin", f"Admin user '{admin.username}'" + (" created" if admin.password else ""))
        try:
            return self._start_parts(admin)
        except BaseException:
            if admin.password:  # the only copy: never lose it, even when start-up fails
                r.note(
                    f"Admin user '{admin.username}' was created with password "
                    f"{admin.password} (shown once)",
                    style="yellow",
                )
            raise

    def _start_parts(self, admin: bootstrap.Admin) -> Summary:
        r, s, p = self.reporter, self.settings, self.plan
        demo = bootstrap.Demo(False, reason="--no-demo")
        if self.options.demo:
            r.begin("demo", "Demo connector")
            directory = self.options.demo_dir or bootstrap.default_demo_dir()
            demo = bootstrap.apply_demo(s, directory)
            if demo.applied:
                r.done("demo", f"Demo content applied from {directory}")
            else:
                r.skip("demo", f"Demo content not applied: {demo.reason}")

        r.begin("prefect-server", f"Prefect server on port {p.prefect_port} (first start ~15 s)")
        self.start("prefect-server")
        self.wait_all(
            {"prefect-server": self._prefect_ready},
            PREFECT_TIMEOUT,
            {"prefect-server": "Prefect server"},
        )

        labels = {"worker": "Prefect worker", "reconciler": "Reconciler", "web": "Web app"}
        for name in ("worker", "reconciler", "web"):
            r.begin(name, f"{labels[name]}: starting")
            self.start(name)
        self.wait_all(
            {
                "worker": self._worker_ready,
                "reconciler": self._reconciler_ready,
                "web": self._web_ready,
            },
            PART_TIMEOUT,
            labels,
        )

        if demo.applied and demo.connector_ids:
            self._first_runs(demo.connector_ids)

        r.begin("health", "Health check")
        self.wait_all({"health": self._all_healthy}, PART_TIMEOUT, {"health": "Health check"})
        r.close()
        return Summary(
            web_url=p.web_url,
            prefect_url=p.prefect_ui_url,
            admin=admin.username,
            admin_password=admin.password,
            data=bootstrap.data_location(s, demo.connector_ids),
            logs=f"{p.logs_dir}/",
            pid=os.getpid(),
            seconds=time.monotonic() - self.started,
        )

    def _first_runs(self, connector_ids: list[int]) -> None:
        """Wait for the demo connectors' deployments, then start their first runs."""
        r = self.reporter
        r.begin("first-run", "Demo deployment in Prefect")

        def synced() -> str | None:
            with session_scope(self.settings.effective_database_url) as session:
                rows = session.execute(
                    select(Connector.id, Connector.sync_status, Connector.sync_error).where(
                        Connector.id.in_(connector_ids)
                    )
                ).all()
            errors = [f"connector {cid}: {err}" for cid, status, err in rows if status == "error"]
            if errors:
                raise StartFailed("Demo deployment", "; ".join(errors))
            if all(status == "synced" for _cid, status, _err in rows):
                return f"Demo deployment in Prefect ({len(rows)} connector(s))"
            return None

        self.wait_all({"first-run": synced}, SYNC_TIMEOUT, {"first-run": "Demo deployment"})
        r.begin("trigger", "First run of the demo connector")
        proc = subprocess.run(
            [sys.executable, "-m", "conveyor.supervisor.firstrun", *map(str, connector_ids)],
            env=self.plan.base_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        started = []
        for line in proc.stdout.splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if "run_id" in item:
                self.demo_runs[int(item["run_id"])] = int(item["connector_id"])
                started.append(str(item["run_id"]))
            else:
                r.note(f"could not start the demo run: {item.get('error')}", style="yellow")
        if started:
            r.done("trigger", f"First run started (run {', '.join(started)})")
        else:
            tail = (proc.stderr or "").strip().splitlines()[-3:]
            r.skip("trigger", "First run not started " + " ".join(tail))

    # --- after start-up ---------------------------------------------------------------

    def supervise(self) -> None:
        """Restart children that die (with backoff) and report demo runs, until stopped."""
        last_runs_check = last_scan = 0.0
        while True:
            self._check_stop()
            now = time.monotonic()
            for child in self.children.values():
                code = child.poll()
                if code is not None and child.restart_at is None:
                    delay = child.schedule_restart()
                    self.reporter.note(
                        f"! {child.spec.label} exited with code {code}; restarting in "
                        f"{delay:.0f} s (restart {child.restarts}) — log: {child.spec.log_path}",
                        style="yellow",
                    )
                elif child.restart_at is not None and now >= child.restart_at:
                    try:
                        child.start()
                    except OSError as exc:  # e.g. the log directory vanished
                        delay = child.schedule_restart()
                        self.reporter.note(
                            f"! {child.spec.label} could not be started ({exc}); "
                            f"trying again in {delay:.0f} s",
                            style="yellow",
                        )
                        continue
                    self.reporter.note(f"  {child.spec.label} restarted (pid {child.pid})")
                elif code is None and now - last_scan > 10:
                    child.remember_descendants()
            if now - last_scan > 10:
                last_scan = now
            if self.demo_runs and now - last_runs_check > 2:
                last_runs_check = now
                self._report_demo_runs()
            time.sleep(0.5)

    def _report_demo_runs(self) -> None:
        with session_scope(self.settings.effective_database_url) as session:
            runs = session.scalars(
                select(ConnectorRun).where(ConnectorRun.id.in_(list(self.demo_runs)))
            ).all()
            for run in runs:
                if run.status not in FINAL_RUN_STATUSES:
                    continue
                del self.demo_runs[run.id]
                took = (
                    f" in {(run.finished_at - run.started_at).total_seconds():.1f} s"
                    if run.finished_at and run.started_at
                    else ""
                )
                if run.status == "succeeded":
                    self.reporter.note(
                        f"✓ Demo run {run.id} succeeded: "
                        f"{run.rows_loaded or 0:,} rows loaded{took}",
                        style="green",
                    )
                else:
                    self.reporter.note(
                        f"✗ Demo run {run.id} {run.status}{took}: {run.error or 'no reason given'}",
                        style="red",
                    )
