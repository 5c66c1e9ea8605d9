"""``conveyor db``: database migrations."""

from __future__ import annotations

import typer

from conveyor.cli.common import console, settings
from conveyor.db import migrations
from conveyor.secrets import mask_text

app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)


@app.command()
def upgrade(revision: str = typer.Argument("head", help="Target revision")) -> None:
    """Bring the database up to the latest schema (safe to run repeatedly)."""
    url = settings().effective_database_url
    migrations.upgrade(url, revision)
    current = migrations.current_revision(url)
    console.print(f"database {mask_text(url)} is at revision {current}")


@app.command()
def current() -> None:
    """Print the database's current schema revision."""
    console.print(migrations.current_revision(settings().effective_database_url) or "empty")
