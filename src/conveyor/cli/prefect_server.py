"""``conveyor prefect-server``: Prefect's API server and dashboard, for production.

Prefect's own ``prefect server start`` with Conveyor's defaults: its data under
``CONVEYOR_HOME/prefect`` unless ``PREFECT_HOME`` or ``PREFECT_SERVER_DATABASE_CONNECTION_URL``
say otherwise, analytics off, and the dashboard's API URL set from the address it serves
(the dashboard calls the URL it is given, so on any port but 4200 it must be set).
Readiness: ``GET /api/health``.
"""

from __future__ import annotations

import os
import sys

import typer

from conveyor.cli.common import settings
from conveyor.errors import ConfigurationError
from conveyor.logs import prefect_logging_env

WILDCARDS = {"0.0.0.0", "::", ""}


def prefect_server(
    host: str = typer.Option("127.0.0.1", envvar="PREFECT_SERVER_API_HOST", help="Interface"),
    port: int = typer.Option(4200, envvar="PREFECT_SERVER_API_PORT", help="Port"),
    ui_api_url: str | None = typer.Option(
        None,
        envvar="PREFECT_UI_API_URL",
        help="API URL the dashboard calls, as browsers reach it [default: http://HOST:PORT/api]",
        show_default=False,
    ),
) -> None:
    """Run the Prefect server (API + dashboard), configured by PREFECT_* variables."""
    s = settings()
    env = dict(os.environ)
    env.setdefault("PREFECT_HOME", str(s.home / "prefect"))
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    for key, value in prefect_logging_env(s.log_json).items():
        env.setdefault(key, value)
    if ui_api_url:
        env["PREFECT_UI_API_URL"] = ui_api_url
    elif host not in WILDCARDS:
        env["PREFECT_UI_API_URL"] = f"http://{host}:{port}/api"
    # Behind a wildcard address with no URL given, Prefect's default applies (its API URL).
    try:
        os.makedirs(env["PREFECT_HOME"], exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create PREFECT_HOME {env['PREFECT_HOME']}: {exc.strerror}",
            hint="set PREFECT_HOME (or CONVEYOR_HOME) to a writable directory",
        ) from None
    argv = [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]
    # exec: the server is this process, so signals and exit codes reach it directly.
    os.execve(sys.executable, argv, env)
