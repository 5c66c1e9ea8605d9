"""Browser tests: Debian's Chromium driven by Playwright against a real Conveyor web server.

The web app (and, for the sync tests, the reconciler and a Prefect process worker) run as
child processes on free loopback ports, configured only by CONVEYOR_* variables, as in
production. Screenshots of the main pages are taken into docs/screenshots/ only when
CONVEYOR_UPDATE_SCREENSHOTS=1 is set.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from conveyor.settings import Settings
from tests.fixtures.db import migrated_sqlite_url
from tests.fixtures.net import free_port, wait_for
from tests.fixtures.ui import PASSWORD, make_user

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# The README's screenshots are refreshed with CONVEYOR_UPDATE_SCREENSHOTS=1.
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@dataclass
class Child:
    """A child process in its own process group, with its output in a log file."""

    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.args,
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        import psutil

        # A worker's flow runs sit in sessions of their own: signal them too, not only the
        # group, or they linger until the timeout.
        tree = psutil.Process(self.proc.pid).children(recursive=True)
        os.killpg(self.proc.pid, signal.SIGTERM)
        for child in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        _, alive = psutil.wait_procs(tree, timeout=5)
        for child in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


@dataclass
class Platform:
    """Settings shared by every process, and the processes started for one test."""

    settings: Settings
    env: dict[str, str]
    tmp: Path
    base_url: str = ""
    children: list[Child] = field(default_factory=list)

    def spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> Child:
        child = Child(name, list(args), {**self.env, **(env or {})}, self.tmp / f"{name}.log")
        child.start()
        self.children.append(child)
        return child

    def start_web(self) -> Child:
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        web = self.spawn("web", sys.executable, "-m", "conveyor.cli", "web", "--port", str(port))

        def up() -> bool:
            if web.proc and web.proc.poll() is not None:
                raise AssertionError(f"web server exited:\n{web.tail()}")
            try:
                return httpx.get(self.base_url + "/login", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 60, "the web server")
        return web

    def start_reconciler(self) -> Child:
        return self.spawn(
            "reconciler", sys.executable, "-m", "conveyor.cli", "reconcile", "--poll", "0.5"
        )

    def start_worker(self) -> Child:
        return self.spawn(
            "worker",
            sys.executable,
            "-m",
            "prefect",
            "worker",
            "start",
            "--pool",
            self.settings.default_work_pool,
            "--type",
            "process",
            "--limit",
            "2",
            env={"PREFECT_WORKER_QUERY_SECONDS": "1"},
        )

    def logs(self) -> str:
        return "\n".join(f"--- {c.name} ---\n{c.tail()}" for c in self.children)

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()


def _platform(tmp_path: Path, prefect_api_url: str | None) -> Platform:
    home = tmp_path / "home"
    home.mkdir()
    db = migrated_sqlite_url(tmp_path / "conveyor.db")
    key = Fernet.generate_key().decode()
    pool = f"e2e-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        home=home,
        database_url=db,
        secret_key=key,
        prefect_api_url=prefect_api_url,
        default_work_pool=pool,
    )
    env = {
        "CONVEYOR_HOME": str(home),
        "CONVEYOR_DATABASE_URL": db,
        "CONVEYOR_SECRET_KEY": key,
        "CONVEYOR_DEFAULT_WORK_POOL": pool,
        "CONVEYOR_LOG_LEVEL": "WARNING",
        "RUNTIME__LOG_LEVEL": "WARNING",
    }
    if prefect_api_url:
        env["PREFECT_API_URL"] = prefect_api_url
    else:
        # A web app with no Prefect: the UI must still work (runs cannot start).
        env["PREFECT_API_URL"] = f"http://127.0.0.1:{free_port()}/api"
    for username, role in (("alice", "admin"), ("victor", "viewer")):
        make_user(settings, username, role)
    return Platform(settings, env, tmp_path)


@pytest.fixture
def web_only(tmp_path: Path) -> Iterator[Platform]:
    """Conveyor's web server alone (no Prefect): for pages, roles, keyboard, layout."""
    platform = _platform(tmp_path, None)
    platform.start_web()
    try:
        yield platform
    finally:
        platform.stop()


@pytest.fixture
def full_platform(tmp_path: Path, prefect_api_url: str) -> Iterator[Platform]:
    """Web server, reconciler and a Prefect process worker against the real Prefect server."""
    platform = _platform(tmp_path, prefect_api_url)
    platform.start_web()
    platform.start_reconciler()
    try:
        yield platform
    finally:
        platform.stop()


# Module scope: a live sync_playwright() keeps an event loop running in this thread, which
# would break asyncio.run() in every test collected after the browser tests.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def new_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """Pages in fresh browser contexts (own cookies); closed after the test."""
    contexts: list[Any] = []

    def make(viewport: dict[str, int] | None = None, **options: Any) -> Any:
        options.setdefault("locale", "en-GB")
        ctx = browser.new_context(viewport=viewport or LAPTOP, **options)
        ctx.set_default_timeout(15_000)
        contexts.append(ctx)
        return ctx.new_page()

    yield make
    for ctx in contexts:
        ctx.close()


def login(page: Any, base_url: str, username: str, password: str = PASSWORD) -> None:
    page.goto(base_url + "/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(base_url + "/connectors")


def screenshot(page: Any, name: str, full_page: bool = True) -> None:
    # Encoding full-page PNGs is CPU the suite's time budget needs: only when refreshing.
    if os.environ.get("CONVEYOR_UPDATE_SCREENSHOTS") != "1":
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)
