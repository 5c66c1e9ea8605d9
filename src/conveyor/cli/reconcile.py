"""``conveyor reconcile``: keep Prefect's deployments in step with the connectors."""

from __future__ import annotations

import asyncio
import signal

import typer

from conveyor.cli.common import console, settings


def reconcile(
    once: bool = typer.Option(False, "--once", help="Do one full pass and exit"),
    poll: float = typer.Option(1.0, help="Seconds between looks at the queued changes"),
    lease_ttl: float = typer.Option(
        30.0, help="Seconds before a silent reconciler's lease expires (SQLite)"
    ),
    retry_base: float = typer.Option(2.0, help="First retry delay after a Prefect error (s)"),
    retry_cap: float = typer.Option(300.0, help="Longest retry delay after Prefect errors (s)"),
) -> None:
    """Apply queued connector changes to Prefect and repair drift (one reconciler acts)."""
    from conveyor.logs import configure_from_environment
    from conveyor.sync import loop
    from conveyor.sync.reconciler import Backoff

    s = settings()
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
