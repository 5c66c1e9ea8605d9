"""Migrations: up from an empty database on both backends, matching the models."""

from __future__ import annotations

import os
import subprocess
import sys

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from conveyor.db.base import Base
from conveyor.db.migrations import current_revision, downgrade, upgrade
from conveyor.db.session import get_engine


def test_upgrade_from_empty_creates_every_table_and_matches_the_models(
    empty_database_url: str,
) -> None:
    upgrade(empty_database_url)
    engine = get_engine(empty_database_url)
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"models and migrations disagree: {diff}"


def test_upgrade_is_repeatable_and_downgrade_empties(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    head = current_revision(empty_database_url)
    upgrade(empty_database_url)
    assert current_revision(empty_database_url) == head
    downgrade(empty_database_url, "base")
    tables = set(inspect(get_engine(empty_database_url)).get_table_names())
    assert tables <= {"alembic_version"}


def test_cli_db_upgrade(empty_database_url: str, tmp_path) -> None:
    env = {
        **os.environ,
        "CONVEYOR_DATABASE_URL": empty_database_url,
        "CONVEYOR_HOME": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-m", "conveyor.cli", "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "is at revision" in result.stdout
    assert current_revision(empty_database_url) is not None


def test_every_id_table_never_reuses_an_id(empty_database_url: str) -> None:
    """Invariant 8: an id that keys external state is never given again. SQLite reuses the id
    of a deleted newest row unless the table is AUTOINCREMENT (a batch rebuild in a later
    migration drops it silently); PostgreSQL's sequences and identities never go back."""
    from sqlalchemy import text

    upgrade(empty_database_url)
    engine = get_engine(empty_database_url)
    insp = inspect(engine)
    with_id = [
        t
        for t in insp.get_table_names()
        if insp.get_pk_constraint(t)["constrained_columns"] == ["id"]
    ]
    assert set(with_id) >= {"connectors", "connector_runs", "sources", "destinations", "audit_log"}
    with engine.connect() as conn:
        for table in with_id:
            if engine.dialect.name == "sqlite":
                sql = conn.execute(
                    text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :t"),
                    {"t": table},
                ).scalar_one()
                assert "AUTOINCREMENT" in sql.upper(), f"{table} may reuse a deleted row's id"
            else:
                seq = conn.execute(
                    text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table}
                ).scalar_one()
                assert seq is not None, f"{table}.id draws from no sequence"
