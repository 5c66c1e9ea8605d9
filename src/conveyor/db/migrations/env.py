"""Alembic environment: runs against the URL the caller configured."""

from __future__ import annotations

from typing import Any

from alembic import context

from conveyor.db import models  # noqa: F401  (registers the tables)
from conveyor.db.base import Base
from conveyor.db.session import get_engine

config = context.config


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url, "alembic_config() sets sqlalchemy.url"
    engine = get_engine(url.replace("%%", "%"))
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # Batch migrations copy a table and drop the old one; with foreign keys on, that
            # DROP deletes every row first and cascades (a connector's runs would go). The
            # pragma only takes effect outside a transaction: on the raw connection, first.
            _pragma(connection, "foreign_keys=OFF")
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"the migration broke foreign keys: {broken[:5]}")
        connection.commit()
        if sqlite:
            _pragma(connection, "foreign_keys=ON")


def _pragma(connection: Any, pragma: str) -> None:
    raw = connection.connection.driver_connection
    raw.execute(f"PRAGMA {pragma}")


run_migrations_online()
