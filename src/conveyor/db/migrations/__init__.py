"""Alembic migrations, run with ``conveyor db upgrade`` (or ``upgrade(url)``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.db.session import normalise_url

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic is imported when a migration command runs, not with this module: every `conveyor`
# command imports the CLI's `db` group, and alembic alone took a third of a second of it.

HERE = Path(__file__).parent


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` up to ``revision``."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    from conveyor.db.session import get_engine

    with get_engine(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
