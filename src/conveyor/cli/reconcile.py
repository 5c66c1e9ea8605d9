"""``conveyor reconcile``: keep Prefect's deployments in step with the connectors."""

from __future__ import annotations

import asyncio
import signal

import typer

from conveyor.cli.common import console, settings
from conveyor.settings import Settings


def reconcile(
    once: bool = typer.Option(False, "--once", help="Do one full pass and exit"),
    poll: float = typer.Option(1.0, help="Seconds between looks at the queued changes"),
    lease_ttl: float = typer.Option(
        30.0, help="Seconds before a silent reconciler's lease expires (SQLite)"
    ),
    retry_base: float = typer.Option(2.0, help="First retry delay after a Prefect error (s)"),
    retry_cap: float = typer.Option(300.0, help="Longest retry delay after Prefect errors (s)"),
    check_heartbeat: bool = typer.Option(
        False,
        "--check-heartbeat",
        help="Exit 0 if this machine's reconciler loop went round within --max-age, else 1 "
        "(a liveness probe; reads a file, touches neither the database nor Prefect)",
    ),
    max_age: float | None = typer.Option(
        None,
        help="Seconds without a heartbeat before --check-heartbeat fails "
        "(default: the larger of 600 and three reconcile intervals)",
    ),
) -> None:
    """Apply queued connector changes to Prefect and repair drift (one reconciler acts)."""
    s = settings()
    if check_heartbeat:
        _check_heartbeat(s, max_age)
        return

    from conveyor.logs import configure_from_environment
    from conveyor.sync import loop
    from conveyor.sync.reconciler import Backoff

    configure_from_environment()  # text, or JSON lines with CONVEYOR_LOG_JSON=true
    if once:
        report = asyncio.run(loop.run_once(s))
        console.print(
            f"full pass: {report.connectors} connectors, {report.deployments or 0} deployments, "
            f"{report.changed} changed, {report.failed} failed in {report.seconds}s",
            markup=False,
        )
        if report.error:
            console.print(f"stopped: {report.error}", markup=False)
            raise typer.Exit(1)
        return

    async def main() -> None:
        stop = asyncio.Event()
        event_loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            event_loop.add_signal_handler(sig, stop.set)
        backoff = Backoff(
            base=retry_base, cap=retry_cap, unavailable_cap=min(retry_cap, Backoff.unavailable_cap)
        )
        await loop.run_forever(
            s, stop=stop, poll_interval=poll, lease_ttl=lease_ttl, backoff=backoff
        )

    asyncio.run(main())


def _check_heartbeat(s: Settings, max_age: float | None) -> None:
    from conveyor.sync import heartbeat

    limit = max_age if max_age is not None else max(600.0, 3 * s.reconcile_interval)
    path = s.heartbeat_file
    age = heartbeat.age(path)
    if age is None:
        console.print(f"no reconciler heartbeat yet ({path} does not exist)", markup=False)
        raise typer.Exit(1)
    if age > limit:
        console.print(
            f"reconciler loop silent for {age:.0f} s (limit {limit:.0f} s; {path})", markup=False
        )
        raise typer.Exit(1)
    console.print(f"reconciler loop alive: last heartbeat {age:.0f} s ago", markup=False)
