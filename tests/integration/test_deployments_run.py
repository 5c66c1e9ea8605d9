"""The round trip's promise: a connector applied from files runs, and after export →
apply into another environment it moves the same data (real dlt into real DuckDB)."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
from cryptography.fernet import Fernet

from conveyor.db.session import session_scope
from conveyor.deployments_io import apply_directory, export_directory
from conveyor.pipelines import runner
from conveyor.pipelines.destinations.duckdb import DuckdbConfig, database_path
from conveyor.pipelines.target import default_dataset
from conveyor.secrets import SecretBox
from conveyor.services import connectors as svc
from conveyor.services.authz import SYSTEM
from conveyor.settings import Settings
from tests.fixtures.db import migrated_sqlite_url

REPO = Path(__file__).resolve().parents[2]


def _environment(tmp: Path, name: str) -> Settings:
    url = migrated_sqlite_url(tmp / f"{name}.db")
    return Settings(
        home=tmp / f"{name}-home", database_url=url, secret_key=Fernet.generate_key().decode()
    )


def _run(settings: Settings, name: str) -> tuple[int, int, str]:
    box = SecretBox(settings.secret_keys())
    with session_scope(settings.effective_database_url) as s:
        c = svc.get_by_name(name, session=s)
        assert c is not None
        stats = runner.run(runner.resolve(c, box), settings)
        cid = c.id
    path = database_path(DuckdbConfig(), settings)
    with duckdb.connect(str(path), read_only=True) as db:
        count, total = db.execute(
            f"SELECT count(*), sum(CAST(amount AS DECIMAL(12, 2))) "
            f"FROM {default_dataset(cid)}.orders"
        ).fetchone()  # type: ignore[misc]
    return stats.total_rows, count, str(total)


def test_the_example_runs_the_same_after_export_and_apply_elsewhere(tmp_path: Path) -> None:
    seed = tmp_path / "deployments"
    shutil.copytree(REPO / "deployments", seed)
    first = _environment(tmp_path, "first")
    with session_scope(first.effective_database_url) as s:
        apply_directory(
            seed, session=s, box=SecretBox(first.secret_keys()), actor=SYSTEM, settings=first
        )
    loaded, rows, total = _run(first, "example-orders")
    assert loaded == rows == 3000
    # Merge on order_id: running again duplicates nothing.
    assert _run(first, "example-orders")[1:] == (3000, total)

    # Export into the seed directory: the file keeps its name, paths stay relative.
    with session_scope(first.effective_database_url) as s:
        result = export_directory(seed, session=s, settings=first)
    assert result.written == ["example-connector-deployment.yaml"] and not result.stale
    assert "      path: data\n" in (seed / "example-connector-deployment.yaml").read_text()
    # ... and applies elsewhere, moving the same data.
    second = _environment(tmp_path, "second")
    with session_scope(second.effective_database_url) as s:
        apply_directory(
            seed, session=s, box=SecretBox(second.secret_keys()), actor=SYSTEM, settings=second
        )
    assert _run(second, "example-orders")[1:] == (3000, total)
