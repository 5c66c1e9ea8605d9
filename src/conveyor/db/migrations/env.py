"""Alembic environment: runs against the URL the caller configured."""

from __future__ import annotations

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
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run_migrations_online()
