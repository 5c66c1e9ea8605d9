"""Test-wide set-up. Fixtures live in tests/fixtures/, one module per component."""

from __future__ import annotations

import os
import socket
import tempfile


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Importing prefect with no PREFECT_API_URL can start a throwaway server of its own, so
# every test process points Prefect at the port its session server will use, before any
# test module imports prefect. The server itself starts only when a test asks for it.
if "CONVEYOR_TEST_PREFECT_API_URL" not in os.environ:
    os.environ["CONVEYOR_TEST_PREFECT_API_URL"] = f"http://127.0.0.1:{_free_port()}/api"
os.environ["PREFECT_API_URL"] = os.environ["CONVEYOR_TEST_PREFECT_API_URL"]
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="conveyor-test-prefect-home-"))
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
]
