"""The chart's lake-init hook script (files/lake-init.py) against the real PostgreSQL, run as the
hook Job runs it: the lake's own role and database made, Conveyor's and Prefect's databases closed
to it, the default DuckLake destination created (catalog URL encrypted), idempotent, following a
new password, leaving a destination an admin moved; and the lake it describes works."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from conftest import CHART

pytestmark = pytest.mark.postgres

POSTGRES_URL = os.environ.get("CONVEYOR_TEST_POSTGRES_URL")
SCRIPT = CHART / "files" / "lake-init.py"


@pytest.fixture
def cluster(tmp_path: Path):
    """A migrated Conveyor database, a stand-in for Prefect's, and names for the lake."""
    if not POSTGRES_URL:
        pytest.skip("CONVEYOR_TEST_POSTGRES_URL is not set")
    import psycopg
    from tests.fixtures.db import create_pg_database, drop_pg_database

    conveyor = create_pg_database(migrated=True)
    prefect = create_pg_database()
    tag = uuid.uuid4().hex[:8]
    lake_db, role = f"lake_{tag}", f"lake_{tag}"
    admin = make_url(POSTGRES_URL).set(drivername="postgresql")
    key = Fernet.generate_key().decode()
    yield {
        "conveyor": conveyor,
        "prefect": make_url(prefect).database,
        "lake_db": lake_db,
        "role": role,
        "host": admin.host,
        "port": admin.port or 5432,
        "key": key,
        "home": tmp_path / "home",
        "data": tmp_path / "lake",
    }
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{lake_db}" WITH (FORCE)')
        c.execute(f'DROP ROLE IF EXISTS "{role}"')
    drop_pg_database(conveyor)
    drop_pg_database(prefect)


def _catalog(cl: dict[str, Any], password: str) -> str:
    return f"postgresql://{cl['role']}:{password}@{cl['host']}:{cl['port']}/{cl['lake_db']}"


def run_script(cl: dict[str, Any], password: str) -> subprocess.CompletedProcess:
    env = {
        "PATH": os.environ["PATH"],
        "CONVEYOR_ENV": "production",
        "CONVEYOR_HOME": str(cl["home"]),
        "CONVEYOR_DATABASE_URL": cl["conveyor"],
        "CONVEYOR_SECRET_KEY": cl["key"],
        "CONVEYOR_WORK_POOL_TYPE": "kubernetes",
        "CONVEYOR_ALLOWED_PATHS": str(cl["data"]),
        # The test server is on loopback, which production otherwise refuses.
        "CONVEYOR_NETWORK_ALLOW_LOOPBACK": "true",
        "LAKE_DESTINATION_NAME": "lake",
        "LAKE_METADATA_SCHEMA": "ducklake",
        "LAKE_DATA_PATH": str(cl["data"]),
        "LAKE_CATALOG_URL": _catalog(cl, password),
        "LAKE_CREATE_DATABASE": "1",
        "LAKE_DATABASE": cl["lake_db"],
        "LAKE_USERNAME": cl["role"],
        "LAKE_PASSWORD": password,
        "LAKE_PRIVATE_DATABASES": f"{make_url(cl['conveyor']).database},{cl['prefect']}",
    }
    return subprocess.run(
        [sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120
    )


def _settings(cl: dict[str, Any]):
    from conveyor.settings import Settings

    return Settings(
        home=cl["home"],
        database_url=cl["conveyor"],
        secret_key=cl["key"],
        allowed_paths=[cl["data"]],
        network_allow_loopback=True,
    )


def _destination(cl: dict[str, Any]) -> tuple[Any, dict[str, Any], int]:
    from conveyor.db.models import Destination, EntityVersion
    from conveyor.db.session import session_scope
    from conveyor.secrets import SecretBox
    from conveyor.services import catalog

    settings = _settings(cl)
    with session_scope(settings.effective_database_url) as s:
        obj = catalog.get_by_name("destination", "lake", session=s)
        assert obj is not None
        stored = dict(obj.config)
        plain = catalog.decrypted_config("destination", obj, SecretBox(settings.secret_keys()))
        assert s.scalar(select(func.count()).select_from(Destination)) == 1
        versions = s.scalar(select(func.count()).select_from(EntityVersion))
        return (obj.type, obj.created_by), {"stored": stored, "plain": plain}, int(versions or 0)


def _connect_as(cl: dict[str, Any], role: str, database: str):
    import psycopg

    admin = make_url(POSTGRES_URL)
    return psycopg.connect(
        host=admin.host, port=admin.port or 5432, user=role, dbname=database, connect_timeout=5
    )


def test_lake_init_makes_the_catalog_database_and_the_default_destination(cluster):
    import psycopg

    cl = cluster
    first = run_script(cl, "pw-one-3141")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "pw-one-3141" not in first.stdout + first.stderr  # never printed
    assert f"database {cl['lake_db']}: created, owned by {cl['role']}" in first.stdout
    assert "destination lake (ducklake): created" in first.stdout

    # The role: login, nothing else; it owns the lake's database and opens it ...
    admin = make_url(POSTGRES_URL).set(drivername="postgresql")
    with psycopg.connect(admin.render_as_string(hide_password=False)) as c:
        row = c.execute(
            "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole FROM pg_roles "
            "WHERE rolname = %s",
            (cl["role"],),
        ).fetchone()
        owner = c.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (cl["lake_db"],)
        ).fetchone()
    assert row == (True, False, False, False)
    assert owner == (cl["role"],)
    _connect_as(cl, cl["role"], cl["lake_db"]).close()
    # ... but not Conveyor's or Prefect's (CONNECT revoked from PUBLIC).
    for private in (make_url(cl["conveyor"]).database, cl["prefect"]):
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            _connect_as(cl, cl["role"], private)

    (kind, by), config, versions = _destination(cl)
    assert (kind, by) == ("ducklake", "system")
    assert config["plain"] == {
        "catalog_url": _catalog(cl, "pw-one-3141"),
        "data_path": str(cl["data"]),
        "metadata_schema": "ducklake",
    }
    assert "pw-one-3141" not in str(config["stored"])  # encrypted at rest

    # The lake it describes works: Conveyor's own check writes a table into it (rolled back).
    from conveyor.pipelines.check import check

    result = check("destination", "ducklake", config["plain"], settings=_settings(cl))
    assert result.ok, result.message

    # Again (every upgrade): nothing changes.
    again = run_script(cl, "pw-one-3141")
    assert again.returncode == 0, again.stderr
    assert "destination lake: up to date" in again.stdout
    assert f"database {cl['lake_db']}: present" in again.stdout
    assert _destination(cl)[2] == versions

    # A new password in the Secret: the role and the destination follow it.
    rotated = run_script(cl, "pw-two-2718")
    assert rotated.returncode == 0, rotated.stderr
    assert "destination lake: updated catalog_url" in rotated.stdout
    assert _destination(cl)[1]["plain"]["catalog_url"] == _catalog(cl, "pw-two-2718")


def test_lake_init_leaves_a_destination_an_admin_moved(cluster, tmp_path):
    from conveyor.db.session import session_scope
    from conveyor.domain.models import EndpointPatch
    from conveyor.secrets import SecretBox
    from conveyor.services import catalog
    from conveyor.services.authz import Actor

    cl = cluster
    assert run_script(cl, "pw-3141").returncode == 0
    elsewhere = str(tmp_path / "lake" / "sales")
    settings = _settings(cl)
    with session_scope(settings.effective_database_url) as s:
        obj = catalog.get_by_name("destination", "lake", session=s)
        assert obj is not None
        catalog.update(
            "destination",
            obj.id,
            EndpointPatch(
                config={
                    "data_path": elsewhere,
                    "dataset_name": "sales",
                    "catalog_url": _catalog(cl, "pw-3141"),  # entered again: the target moved
                }
            ),
            session=s,
            actor=Actor(username="ada", role="admin"),
            box=SecretBox(settings.secret_keys()),
        )
    out = run_script(cl, "pw-new-3141")
    assert out.returncode == 0, out.stderr
    assert "an admin pointed it elsewhere; left as it is" in out.stdout
    plain = _destination(cl)[1]["plain"]
    assert plain["data_path"] == elsewhere and plain["dataset_name"] == "sales"
    assert plain["catalog_url"] == _catalog(cl, "pw-3141")


def test_lake_init_refuses_conveyors_own_database(cluster):
    cl = dict(cluster)
    cl["lake_db"] = cl["prefect"]
    out = run_script(cl, "pw")
    assert out.returncode != 0
    assert "the lake may not use database" in out.stderr
