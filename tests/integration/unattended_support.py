"""Shared pieces of the Prefect tests of unattended runs (catch-up, destination caps,
retention): a Conveyor database on PostgreSQL when CONVEYOR_TEST_POSTGRES_URL is set (else
SQLite), the worker's environment, a reconcile pass and the run records read back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from sqlalchemy import select

from conveyor.db.models import Connector, ConnectorRun
from conveyor.db.session import dispose_all, session_scope
from conveyor.settings import Settings
from tests.fixtures.db import (
    POSTGRES_URL,
    create_pg_database,
    drop_pg_database,
    migrated_sqlite_url,
)
from tests.fixtures.sync import delete_all_conveyor_deployments


def prefect_settings(tmp_path: Path, prefect_api_url: str, **extra: Any) -> Iterator[Settings]:
    """Settings for one test against the session's Prefect server, on a fresh database and
    a work pool of its own (body of a fixture: ``yield from``)."""
    # Connector ids repeat across tests' databases: a stale deployment named connector-<id>
    # must not be inherited (see tests/integration/test_pipeline_prefect.py).
    delete_all_conveyor_deployments()
    home = tmp_path / "home"
    home.mkdir()
    url = (
        create_pg_database(migrated=True)
        if POSTGRES_URL
        else migrated_sqlite_url(tmp_path / "conveyor.db")
    )
    try:
        yield Settings(
            home=home,
            database_url=url,
            secret_key=Fernet.generate_key().decode(),
            prefect_api_url=prefect_api_url,
            default_work_pool=f"unattended-{uuid.uuid4().hex[:8]}",
            **extra,
        )
    finally:
        dispose_all()
        if POSTGRES_URL:
            drop_pg_database(url)


def worker_env(s: Settings, **extra: str) -> dict[str, str]:
    assert s.secret_key is not None
    return {
        "CONVEYOR_HOME": str(s.home),
        "CONVEYOR_DATABASE_URL": s.effective_database_url,
        "CONVEYOR_SECRET_KEY": s.secret_key.get_secret_value(),
        "CONVEYOR_RUN_HEARTBEAT_TIMEOUT": str(s.run_heartbeat_timeout),
        "RUNTIME__LOG_LEVEL": "WARNING",
        **extra,
    }


def reconcile(s: Settings) -> None:
    from conveyor.sync.loop import run_once

    report = asyncio.run(run_once(s))
    assert report.error is None and not report.failed, report


def records(s: Settings, cid: int) -> list[ConnectorRun]:
    with session_scope(s.effective_database_url) as session:
        return list(
            session.scalars(
                select(ConnectorRun)
                .where(ConnectorRun.connector_id == cid)
                .order_by(ConnectorRun.id)
            )
        )


def record(s: Settings, run_id: int) -> ConnectorRun:
    with session_scope(s.effective_database_url) as session:
        run = session.get(ConnectorRun, run_id)
        assert run is not None
        return run


def deployment_id(s: Settings, cid: int) -> str:
    with session_scope(s.effective_database_url) as session:
        c = session.get(Connector, cid)
        assert c is not None and c.prefect_deployment_id, "the reconciler made no deployment"
        return c.prefect_deployment_id
