"""Entry point of the ``conveyor`` command: registers every command group.

Errors end as one line on stderr and a non-zero exit code: ``common.handle_errors`` is put
around every command below by ``install_error_boundary``.
"""

from __future__ import annotations

import typer

from conveyor.cli import (
    db,
    deployments,
    doctor,
    prefect_server,
    reconcile,
    secrets,
    sync,
    up,
    users,
    web,
    worker,
)
from conveyor.cli.common import install_error_boundary

app = typer.Typer(
    name="conveyor",
    help="Conveyor: connectors in a database, one Prefect deployment each, data moved with dlt.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

app.add_typer(db.app, name="db")
app.add_typer(users.users_app, name="users")
app.add_typer(users.tokens_app, name="tokens")
app.add_typer(secrets.app, name="secrets")
app.command("web")(web.web)
# Command groups of other parts register here, one line each.
app.command("reconcile")(reconcile.reconcile)
app.add_typer(sync.app, name="sync")
app.add_typer(deployments.app, name="deployments")
app.command("up")(up.up)
app.command("worker")(worker.worker)
app.command("prefect-server")(prefect_server.prefect_server)
app.command("doctor")(doctor.doctor)
install_error_boundary(app)  # last: after every command is registered
