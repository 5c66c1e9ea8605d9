"""``conveyor worker``: a Prefect process worker for Conveyor's work pool, for production.

Creates the work pool when it is missing, as the reconciler would (type ``process``, the
configured CONVEYOR_WORK_POOL_CONCURRENCY, none by default) and refuses a pool of another
type; then runs Prefect's own worker in this process, with its health check server on. The
worker's own ``--limit`` caps the flow runs it starts: a process worker without one starts
every queued run at once (50 queued runs made ~25 flow processes, ~2 GB and 26 crashed runs
of 150; a limit of 4 ran them steadily).
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import psutil
import typer

from conveyor.cli.common import console, settings
from conveyor.errors import ConfigurationError
from conveyor.logs import prefect_logging_env, settings_for_logging
from conveyor.secrets import install_log_masking

# A flow run of a typical connector holds ~150-250 MB (Prefect + dlt + the data batch).
MEMORY_PER_RUN = 500 * 1024 * 1024
MAX_DEFAULT_LIMIT = 8
# Prefect's worker polls its pool every 10 s by default: a Run now waited 5 s on average
# (up to 10) before its flow process even started (bench/run_latency.py). One poll a second
# is one light query per worker; an operator's PREFECT_WORKER_QUERY_SECONDS still wins.
# Scheduled runs are fetched PREFECT_WORKER_PREFETCH_SECONDS (10) ahead, their process
# started early, and the run waits in Prefect for its time: they start on time.
DEFAULT_QUERY_SECONDS = "1"


def default_limit() -> int:
    """Concurrent flow runs this machine can take: 2 per CPU, 500 MB each, 1 to 8."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    by_cpu = 2 * (cpus or 1)
    by_memory = psutil.virtual_memory().available // MEMORY_PER_RUN
    return max(1, min(by_cpu, int(by_memory), MAX_DEFAULT_LIMIT))


async def _ensure_pool(api_url: str, pool: str, concurrency: int | None) -> None:
    # The gateway is Conveyor's one module that writes to Prefect; it creates the pool
    # the same way the reconciler does when a deployment needs it.
    from conveyor.sync.gateway import PrefectGateway

    async with PrefectGateway(
        api_url, pool_type="process", pool_concurrency=concurrency, owned_pool=pool
    ) as gateway:
        await gateway.ensure_work_pool(pool)


def _engine_command_by_default() -> None:
    """Flow runs start as ``<this interpreter> -m prefect.engine`` unless their job sets a
    command. Prefect's process worker, given no command, starts a workspace supervisor
    process (a second Python importing Prefect) that prepares a workspace Conveyor's
    deployments do not use (no pull steps, no dependency installs) and then starts the same
    engine command: about a second of CPU and of Run now's latency per run
    (bench/run_latency.py). With the command set, the worker starts the engine itself and
    runs crash and cancellation hooks by loading the flow, as Prefect's workers always did."""
    from prefect.utilities.processutils import command_to_string
    from prefect.workers.process import ProcessJobConfiguration

    engine = command_to_string([sys.executable, "-m", "prefect.engine"])
    prepare = ProcessJobConfiguration.prepare_for_flow_run

    def prepare_with_engine(self: ProcessJobConfiguration, *args: Any, **kwargs: Any) -> None:
        if self.command is None:
            self.command = engine
        prepare(self, *args, **kwargs)

    ProcessJobConfiguration.prepare_for_flow_run = prepare_with_engine  # type: ignore[method-assign]


def worker(
    pool: str | None = typer.Option(
        None, help="Work pool to poll [default: CONVEYOR_DEFAULT_WORK_POOL, 'default']"
    ),
    limit: int | None = typer.Option(
        None,
        min=1,
        envvar="CONVEYOR_WORKER_LIMIT",
        help="Flow runs this worker starts at once [default: sized to this machine]",
        show_default=False,
    ),
    name: str | None = typer.Option(None, help="Worker name [default: Prefect's]"),
    healthcheck: bool = typer.Option(
        True, "--healthcheck/--no-healthcheck", help="Serve GET /health (Prefect's)"
    ),
    healthcheck_port: int | None = typer.Option(
        None,
        envvar="PREFECT_WORKER_WEBSERVER_PORT",
        help="Port of the health check server [default: 8080]",
        show_default=False,
    ),
) -> None:
    """Run a Prefect process worker for Conveyor's flow runs (configured by env)."""
    s = settings()
    if not s.prefect_api_url:
        raise ConfigurationError(
            "PREFECT_API_URL is not set",
            hint="point it at the Prefect server's API, e.g. http://prefect:4200/api",
        )
    if s.work_pool_type != "process":
        raise ConfigurationError(
            f"CONVEYOR_WORK_POOL_TYPE is {s.work_pool_type!r}: `conveyor worker` runs a "
            "process worker",
            hint="run Prefect's kubernetes worker (the Helm chart's worker.type: kubernetes)",
        )
    pool = pool or s.default_work_pool
    limit = limit or default_limit()
    json_logs, _level = settings_for_logging()
    for key, value in prefect_logging_env(json_logs).items():
        os.environ.setdefault(key, value)  # before Prefect reads its logging config
    install_log_masking()
    os.environ.setdefault("PREFECT_WORKER_QUERY_SECONDS", DEFAULT_QUERY_SECONDS)
    if healthcheck_port is not None:
        # Prefect reads its health server's port from its own settings; set before import.
        os.environ["PREFECT_WORKER_WEBSERVER_PORT"] = str(healthcheck_port)
    asyncio.run(_ensure_pool(s.prefect_api_url, pool, s.work_pool_concurrency))
    console.print(f"worker for pool '{pool}', up to {limit} flow runs at once", markup=False)

    argv = ["prefect", "worker", "start", "--pool", pool, "--type", "process"]
    argv += ["--limit", str(limit), "--install-policy", "never"]
    if healthcheck:
        argv.append("--with-healthcheck")
    if name:
        argv += ["--name", name]
    from prefect.cli import app as prefect_cli

    _engine_command_by_default()
    sys.argv = argv
    prefect_cli()
