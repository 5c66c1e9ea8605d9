"""What ``conveyor up`` will run: checked settings, ports, URLs, paths, each child's env."""

from __future__ import annotations

import logging
import os
import socket
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from conveyor.errors import ConfigurationError
from conveyor.settings import Settings
from conveyor.supervisor.ports import choose_port, ephemeral_port

WILDCARDS = {"0.0.0.0", "::", ""}
# Every child carries this variable; at shutdown any process still holding it is ours.
MARKER = "CONVEYOR_SUPERVISOR_ID"


def load_settings() -> Settings:
    """The settings from the environment, or a ``ConfigurationError`` naming the variable."""
    try:
        s = Settings()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field_name = ".".join(str(p) for p in err["loc"])
            var = "PREFECT_API_URL" if field_name == "prefect_api_url" else f"CONVEYOR_{field_name}"
            problems.append(f"{var.upper()}={err.get('input')!r}: {err['msg']}")
        raise ConfigurationError(
            "invalid setting " + "; ".join(problems),
            hint="fix the value or unset the variable (see docs/operations.md)",
        ) from None
    if not isinstance(logging.getLevelName(s.log_level.upper()), int):
        raise ConfigurationError(
            f"invalid setting CONVEYOR_LOG_LEVEL={s.log_level!r}",
            hint="use DEBUG, INFO, WARNING or ERROR",
        )
    return s


def conveyor_argv(*args: str) -> list[str]:
    """The command line that runs ``conveyor ARGS`` with this interpreter."""
    return [sys.executable, "-m", "conveyor.cli", *args]


@dataclass
class Plan:
    """Ports, URLs and paths of one ``conveyor up``."""

    settings: Settings
    host: str
    web_port: int
    prefect_host: str
    prefect_port: int
    worker_health_port: int
    worker_limit: int
    supervisor_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def home(self) -> Path:
        return self.settings.home.resolve()

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def public_host(self) -> str:
        """The host name to print in URLs (a wildcard bind is not an address to visit)."""
        return socket.gethostname() if self.host in WILDCARDS else self.host

    @property
    def web_url(self) -> str:
        return f"http://{_url_host(self.public_host)}:{self.web_port}"

    @property
    def prefect_api_url(self) -> str:
        """What clients on this machine use (always loopback)."""
        return f"http://127.0.0.1:{self.prefect_port}/api"

    @property
    def prefect_ui_url(self) -> str:
        host = self.public_host if self.prefect_host != "127.0.0.1" else "127.0.0.1"
        return f"http://{_url_host(host)}:{self.prefect_port}"

    def base_env(self) -> dict[str, str]:
        """Environment every child gets: settings, Prefect's home and API, the marker."""
        env = dict(os.environ)
        env.update(
            {
                MARKER: self.supervisor_id,
                "CONVEYOR_HOME": str(self.home),
                "PREFECT_HOME": str(self.prefect_home),
                "PREFECT_API_URL": self.prefect_api_url,
                "CONVEYOR_PREFECT_UI_URL": self.prefect_ui_url,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PYTHONUNBUFFERED": "1",
            }
        )
        # Connectors may not reach the web app: every child (the worker above all) knows
        # where it listens (conveyor.pipelines.network).
        env["CONVEYOR_WEB_ADDRESS"] = web_addresses(
            env.get("CONVEYOR_WEB_ADDRESS"), self.host, self.web_port
        )
        # A worker polls every 10 s by default; 1 s (as `conveyor worker`) makes "Run now"
        # start at once and is still light for the embedded server.
        env.setdefault("PREFECT_WORKER_QUERY_SECONDS", "1")
        # The work pool's limit is configured, never invented (issue 20): `up` sizes it to
        # the machine, for whichever of the worker and the reconciler creates the pool.
        env.setdefault("CONVEYOR_WORK_POOL_CONCURRENCY", str(self.worker_limit))
        return env


def web_addresses(existing: str | None, host: str, port: int) -> str:
    """``CONVEYOR_WEB_ADDRESS`` with ``host:port`` added (comma-separated, no duplicates)."""
    listed = [a.strip() for a in (existing or "").split(",") if a.strip()]
    mine = f"{_url_host(host or '0.0.0.0')}:{port}"
    return ",".join(listed if mine in listed else [*listed, mine])


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def make_plan(
    settings: Settings,
    *,
    host: str,
    port: int | None,
    prefect_port: int | None,
    worker_limit: int,
) -> Plan:
    """Choose ports (explicit ones must be free; defaults move to the next free port)."""
    # The Prefect server listens where the web app does only when asked for more than
    # loopback: its dashboard then needs to be reachable from the same browsers.
    prefect_host = "127.0.0.1" if host in ("127.0.0.1", "localhost") else host
    web_port = choose_port(host, port, 8000, "web app", "--port", set())
    p_port = choose_port(
        prefect_host, prefect_port, 4200, "Prefect server", "--prefect-port", {web_port}
    )
    return Plan(
        settings=settings,
        host=host,
        web_port=web_port,
        prefect_host=prefect_host,
        prefect_port=p_port,
        worker_health_port=ephemeral_port(),
        worker_limit=worker_limit,
    )
