"""Secrets: encrypted at rest, never in logs; `conveyor secrets rotate` re-encrypts."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from conveyor.db.models import Connector, Source
from conveyor.db.session import session_scope
from conveyor.secrets import SecretBox
from tests.fixtures.web import ApiUser


def _cli(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def test_rotate_reencrypts_with_the_newest_key(
    admin: ApiUser, app_settings, database_url: str
) -> None:
    old_key = app_settings.secret_keys()[0].decode()
    conn = admin.make_connector(source_config_override={"tables": ["t"], "password": "override-pw"})
    new_key = Fernet.generate_key().decode()
    env = {
        "CONVEYOR_DATABASE_URL": database_url,
        "CONVEYOR_SECRET_KEY": f"{new_key},{old_key}",
        "CONVEYOR_HOME": str(app_settings.home),
    }
    result = _cli(["secrets", "rotate"], env)
    assert result.returncode == 0, result.stderr
    assert "re-encrypted 2 records" in result.stdout
    only_new = SecretBox([new_key.encode()])
    with session_scope(database_url) as session:
        src = session.get(Source, conn["source_id"])
        c = session.get(Connector, conn["id"])
        assert only_new.decrypt(src.config["password"]) == "s3cret-pw"  # type: ignore[union-attr]
        assert only_new.decrypt(c.source_config_override["password"]) == "override-pw"  # type: ignore[union-attr]
    # The old key alone can no longer read them.
    result = _cli(["secrets", "rotate"], {**env, "CONVEYOR_SECRET_KEY": old_key})
    assert result.returncode != 0
    assert "cannot be decrypted" in result.stderr


def test_connector_override_secrets_are_masked_in_responses(admin: ApiUser) -> None:
    conn = admin.make_connector(
        source_config_override={"tables": ["t"], "password": "pw-in-override"}
    )
    assert conn["source_config_override"]["password"] == "********"
    assert "pw-in-override" not in str(admin.get("/api/v1/audit").json())


def test_secrets_never_reach_the_logs(admin: ApiUser, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        src = admin.make_source(
            name="logged", config={"connection_string": "postgresql://u:zebra-pass@h/db"}
        )
        logging.getLogger("conveyor.test").info("connecting with postgresql://u:zebra-pass@h/db")
        admin.get(f"/api/v1/sources/{src['id']}")
    assert "zebra-pass" not in caplog.text
    assert src["config"]["connection_string"] == "********"
    with session_scope(admin.client.app.state.settings.effective_database_url) as session:  # type: ignore[attr-defined]
        stored = session.scalars(select(Source).where(Source.name == "logged")).one().config
    assert "zebra-pass" not in str(stored)
