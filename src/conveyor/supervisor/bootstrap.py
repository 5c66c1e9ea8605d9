"""First start: schema, a write check, the admin user, the demo content.

Everything here works on the database only (no Prefect), so it runs in the supervisor
before any child starts; each step is idempotent, so a second start changes nothing.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from conveyor.db import migrations
from conveyor.db.base import utcnow
from conveyor.db.models import Connector, Lease, User
from conveyor.db.session import session_scope
from conveyor.domain.models import UserCreate
from conveyor.errors import ConfigurationError, ConveyorError
from conveyor.secrets import SecretBox, mask_text
from conveyor.services import users as users_service
from conveyor.services.authz import SYSTEM
from conveyor.settings import Settings

ADMIN_USERNAME = "admin"
UP_LEASE = "up"  # who runs `conveyor up` on this database, for `conveyor doctor`


class DatabaseProblem(ConfigurationError):
    """The database cannot be opened, migrated or written."""


def _db_error(settings: Settings, doing: str, exc: Exception) -> DatabaseProblem:
    orig = getattr(exc, "orig", None) or exc
    url = mask_text(settings.effective_database_url)
    hint = "check the file's permissions and free disk space, or set CONVEYOR_DATABASE_URL"
    if "readonly" in str(orig) or "read-only" in str(orig):
        hint = "the database file (or its directory) is not writable by this user: " + hint
    return DatabaseProblem(f"cannot {doing} {url}: {orig}", hint=hint)


def prepare_database(settings: Settings) -> str:
    """Migrate to the latest schema and prove the database takes writes; its revision."""
    url = settings.effective_database_url
    try:
        migrations.upgrade(url)
        # An already migrated read-only file passes the upgrade: write something real.
        with session_scope(url) as session:
            lease = session.get(Lease, UP_LEASE) or Lease(name=UP_LEASE, info={})
            lease.holder = f"{socket.gethostname()}:{os.getpid()}"
            lease.heartbeat_at = utcnow()
            session.add(lease)
        return migrations.current_revision(url) or "?"
    except ConveyorError:
        raise
    except (SQLAlchemyError, OSError) as exc:
        raise _db_error(settings, "migrate and write to", exc) from None


@dataclass
class Admin:
    username: str
    password: str | None  # only when created by this start: printed once, stored nowhere


def ensure_admin(settings: Settings) -> Admin:
    """Create the first admin with a generated password, unless any user exists."""
    with session_scope(settings.effective_database_url) as session:
        existing = session.scalars(
            select(User).where(User.role == "admin").order_by(User.id).limit(1)
        ).first()
        if existing is not None:
            return Admin(existing.username, None)
        if session.scalar(select(func.count()).select_from(User)):
            # Users but no admin: someone chose that; do not add one behind their back.
            return Admin("(no admin user)", None)
        password = secrets.token_urlsafe(12)
        data = UserCreate(username=ADMIN_USERNAME, password=password, role="admin")
        users_service.create_user(data, session=session, actor=SYSTEM)
        return Admin(ADMIN_USERNAME, password)


def default_demo_dir() -> Path | None:
    """``./deployments`` when it holds YAML, else the one next to this source checkout."""
    for candidate in (
        Path.cwd() / "deployments",
        Path(__file__).resolve().parents[3] / "deployments",
    ):
        if candidate.is_dir() and any(candidate.glob("*.y*ml")):
            return candidate
    return None


@dataclass
class Demo:
    applied: bool
    connector_ids: list[int] = field(default_factory=list)
    reason: str = ""


def apply_demo(settings: Settings, directory: Path | None) -> Demo:
    """Apply the deployment files in ``directory`` if the database has no connector yet."""
    with session_scope(settings.effective_database_url) as session:
        if session.scalar(select(func.count()).select_from(Connector)):
            return Demo(False, reason="connectors exist already")
    if directory is None:
        return Demo(False, reason="no deployments/ directory with YAML files found")
    try:
        from conveyor.deployments_io import apply_directory
    except ImportError:
        return Demo(False, reason="this build has no deployments_io (YAML apply)")
    box = SecretBox(settings.secret_keys())
    directory = copy_demo(settings, directory)
    with session_scope(settings.effective_database_url) as session:
        apply_directory(
            directory, session=session, box=box, actor=SYSTEM, prune=False, settings=settings
        )
    with session_scope(settings.effective_database_url) as session:
        ids = list(session.scalars(select(Connector.id).order_by(Connector.id)))
    return Demo(True, ids)


def copy_demo(settings: Settings, directory: Path) -> Path:
    """The demo files copied under ``CONVEYOR_HOME/data/demo``: connectors read only inside
    the allowed roots, and a source checkout's ``deployments/data`` is not one of them."""
    import shutil

    target = settings.data_dir / "demo"
    shutil.copytree(directory, target, dirs_exist_ok=True, symlinks=False)
    return target


def data_location(settings: Settings, connector_ids: list[int]) -> str:
    """Where the (demo) connectors write, in words."""
    if connector_ids:
        with session_scope(settings.effective_database_url) as session:
            c = session.get(Connector, connector_ids[0])
            if c is not None:
                from conveyor.pipelines.registry import get_type

                info = get_type("destination", c.destination.type)
                cfg = {**(c.destination.config or {}), **(c.destination_config_override or {})}
                known = {k: v for k, v in cfg.items() if k in info.config_model.model_fields}
                try:  # the demo's own destinations hold no secrets
                    return info.where(info.config_model(**known), settings)
                except ValueError:
                    pass
    return f"DuckDB files under {settings.data_dir}"
