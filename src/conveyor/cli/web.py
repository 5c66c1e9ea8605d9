"""``conveyor web``: the web app (UI + REST API) alone, for production."""

from __future__ import annotations

import typer


def web(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on"),
    port: int = typer.Option(8000, help="Port to listen on"),
    workers: int = typer.Option(1, help="Worker processes"),
) -> None:
    """Serve the web UI and the REST API (configured by CONVEYOR_* variables)."""
    import os

    import uvicorn

    from conveyor.logs import dict_config, settings_for_logging
    from conveyor.supervisor.config import web_addresses

    # Connectors may not reach the web app (conveyor.pipelines.network): record where it
    # listens, for this process and its workers.
    os.environ["CONVEYOR_WEB_ADDRESS"] = web_addresses(
        os.environ.get("CONVEYOR_WEB_ADDRESS"), host, port
    )

    # Conveyor's format for uvicorn's records too (JSON when CONVEYOR_LOG_JSON=true), in
    # every worker process; the app's middleware writes the access log, with request ids.
    json_logs, level = settings_for_logging()
    uvicorn.run(
        "conveyor.web.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        proxy_headers=True,
        log_config=dict_config(json_logs=json_logs, level=level),
        access_log=False,
    )
