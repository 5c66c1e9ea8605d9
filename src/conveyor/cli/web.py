"""``conveyor web``: the web app (UI + REST API) alone, for production."""

from __future__ import annotations

import typer

from conveyor.cli.common import handle_errors


@handle_errors
def web(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on"),
    port: int = typer.Option(8000, help="Port to listen on"),
    workers: int = typer.Option(1, help="Worker processes"),
) -> None:
    """Serve the web UI and the REST API (configured by CONVEYOR_* variables)."""
    import uvicorn

    uvicorn.run(
        "conveyor.web.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        proxy_headers=True,
        log_level="info",
    )
