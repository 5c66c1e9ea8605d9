"""The scriptable interface: users, tokens, exit codes and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from conveyor.db.migrations import upgrade


def run(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "CONVEYOR_DATABASE_URL": database_url,
        "CONVEYOR_HOME": str(tmp_path / "home"),
        "CONVEYOR_SECRET_KEY": Fernet.generate_key().decode(),
    }


def test_users_and_tokens_from_the_cli(cli_env: dict[str, str], backend: str) -> None:
    made = run(
        ["users", "create", "ops", "--role", "admin", "--password-stdin"],
        cli_env,
        "a-long-password\n",
    )
    assert made.returncode == 0, made.stderr
    token = run(["tokens", "create", "ops", "--name", "ci"], cli_env)
    assert token.returncode == 0, token.stderr
    lines = token.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cvt_")  # only the token on stdout

    from fastapi.testclient import TestClient

    from conveyor.settings import Settings
    from conveyor.web.app import create_app

    settings = Settings(
        database_url=cli_env["CONVEYOR_DATABASE_URL"],
        secret_key=cli_env["CONVEYOR_SECRET_KEY"],
        home=Path(cli_env["CONVEYOR_HOME"]),
    )
    with TestClient(create_app(settings)) as client:
        me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {lines[0]}"})
    assert me.json()["username"] == "ops"


@pytest.mark.parametrize(
    ("args", "stdin", "reason"),
    [
        (
            ["users", "create", "x", "--role", "root", "--password-stdin"],
            "a-long-password\n",
            "role",
        ),
        (["users", "create", "x", "--role", "viewer", "--password-stdin"], "short\n", "password"),
        (["tokens", "create", "nobody"], "", "user 'nobody' does not exist"),
    ],
)
def test_bad_cli_input_exits_non_zero_with_one_line(
    cli_env: dict[str, str], args: list[str], stdin: str, reason: str
) -> None:
    result = run(args, cli_env, stdin)
    assert result.returncode != 0
    assert reason in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_duplicate_user_is_refused(cli_env: dict[str, str]) -> None:
    args = ["users", "create", "dup", "--role", "viewer", "--password-stdin"]
    assert run(args, cli_env, "a-long-password\n").returncode == 0
    again = run(args, cli_env, "a-long-password\n")
    assert again.returncode != 0
    assert "already exists" in again.stderr


def test_production_without_secret_key_is_a_clear_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    upgrade(url)
    env = {
        **os.environ,
        "CONVEYOR_DATABASE_URL": url,
        "CONVEYOR_ENV": "production",
        "CONVEYOR_HOME": str(tmp_path),
    }
    env.pop("CONVEYOR_SECRET_KEY", None)
    result = run(["secrets", "rotate"], env)
    assert result.returncode != 0
    assert "CONVEYOR_SECRET_KEY is not set" in result.stderr


def test_local_mode_generates_and_reuses_a_key(tmp_path: Path) -> None:
    from conveyor.settings import Settings

    home = tmp_path / "home"
    first = Settings(home=home, secret_key=None).secret_keys()
    assert (home / "secret.key").stat().st_mode & 0o777 == 0o600
    assert Settings(home=home, secret_key=None).secret_keys() == first


def test_web_command_serves_the_api(cli_env: dict[str, str]) -> None:
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor.cli", "web", "--host", "127.0.0.1", "--port", str(port)],
        env=cli_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                resp = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            pytest.fail("conveyor web did not answer within 60 s")
        assert resp.status_code == 200
        assert resp.json()["components"]["database"]["ok"] is True
        assert httpx.get(f"http://127.0.0.1:{port}/docs", timeout=5).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=15)
