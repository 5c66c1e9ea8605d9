"""Test-wide set-up. Fixtures live in tests/fixtures/, one module per component."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

import pytest

from tests.fixtures.net import free_port

# What this file chose itself (rather than found set by the caller). pytest-xdist workers
# inherit the controlling process's environment, so a worker makes its own choice of each:
# every worker runs its own Prefect server on its own port, with its own homes.
_CHOSEN = "CONVEYOR_TEST_CHOSEN_ENV"
_chosen_by_parent = set(filter(None, os.environ.get(_CHOSEN, "").split(",")))
_chosen: set[str] = set()


def _choose(name: str, make: Callable[[], str]) -> None:
    if name not in os.environ or name in _chosen_by_parent:
        os.environ[name] = make()
        _chosen.add(name)


# Importing prefect with no PREFECT_API_URL can start a throwaway server of its own, so
# every test process points Prefect at the port its session server will use, before any
# test module imports prefect. The server itself starts only when a test asks for it.
_choose("CONVEYOR_TEST_PREFECT_API_URL", lambda: f"http://127.0.0.1:{free_port()}/api")
_choose("PREFECT_HOME", lambda: tempfile.mkdtemp(prefix="conveyor-test-prefect-home-"))
os.environ[_CHOSEN] = ",".join(sorted(_chosen))
os.environ["PREFECT_API_URL"] = os.environ["CONVEYOR_TEST_PREFECT_API_URL"]
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["RUNTIME__LOG_LEVEL"] = "WARNING"  # dlt
# Never touch the developer's real ~/.conveyor.
os.environ["CONVEYOR_HOME"] = tempfile.mkdtemp(prefix="conveyor-test-home-")
# Tests keep their files in pytest's tmp_path, load the example deployment with its data/,
# and the deployment-format tests name made-up folders (/srv/deploy, /data): all are
# admin-listed roots here (each test's own home, database and key inside them stay out of
# reach all the same; tests/integration/test_security_paths.py sets its own roots).
os.environ.setdefault(
    "CONVEYOR_ALLOWED_PATHS",
    os.pathsep.join(
        [
            tempfile.gettempdir(),
            os.path.join(os.path.dirname(__file__), "..", "deployments"),
            "/srv/deploy",
            "/data",
        ]
    ),
)

pytest_plugins = [
    "tests.fixtures.db",
    "tests.fixtures.prefect",
    "tests.fixtures.web",
    "tests.fixtures.servers",
    "tests.fixtures.pipelines",
    "tests.fixtures.worker",
    "tests.fixtures.recorders",
    "tests.fixtures.sync",
    "tests.fixtures.ui",
    "tests.fixtures.notify",
    "tests.fixtures.mariadb",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``--dist loadgroup`` (``make test`` runs ``-n 3 --dist loadgroup``), tests that
    share one thing outside the test process run on one worker: the k8s tests share the
    loopback kube-apiserver (a fixed port, started and stopped by tests/chart/conftest.py).
    Each browser module stays on one worker, so its module-scoped browser starts once.
    Everything else (Prefect tests included: each worker has its own server) is spread."""
    for item in items:
        if item.get_closest_marker("k8s"):
            item.add_marker(pytest.mark.xdist_group("k8s"))
        elif item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


# CONVEYOR_TEST_CPU_REPORT=<file>: append each test's CPU seconds (this process, and the
# child processes it waited for: servers, workers, flow runs, CLIs) and wall seconds, tab
# separated, to <file>.<xdist worker>; finding what to cut when `make test` nears its budget.
_CPU_REPORT = os.environ.get("CONVEYOR_TEST_CPU_REPORT")

if _CPU_REPORT:
    import resource
    import time
    from collections.abc import Generator

    def _cpu() -> tuple[float, float]:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
        (me0, kids0), wall0 = _cpu(), time.monotonic()
        yield
        (me1, kids1), wall1 = _cpu(), time.monotonic()
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        with open(f"{_CPU_REPORT}.{worker}", "a") as out:
            out.write(f"{item.nodeid}\t{me1 - me0:.1f}\t{kids1 - kids0:.1f}\t{wall1 - wall0:.1f}\n")
