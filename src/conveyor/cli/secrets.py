"""``conveyor secrets``: keys and re-encryption."""

from __future__ import annotations

import typer
from cryptography.fernet import Fernet

from conveyor.cli.common import console, secret_box, settings
from conveyor.db.session import session_scope
from conveyor.services.secrets_rotation import rotate_all

app = typer.Typer(help="Secret keys: generate and rotate.", no_args_is_help=True)


@app.command("generate-key")
def generate_key() -> None:
    """Print a new Fernet key (put it first in CONVEYOR_SECRET_KEY to rotate)."""
    typer.echo(Fernet.generate_key().decode())


@app.command()
def rotate() -> None:
    """Re-encrypt every stored secret with the newest key in CONVEYOR_SECRET_KEY."""
    s = settings()
    with session_scope(s.effective_database_url) as session:
        count = rotate_all(session=session, box=secret_box(s))
    console.print(f"re-encrypted {count} records with the newest key")
