"""``conveyor deployments ...`` as a user runs it: real processes, exit codes, stderr."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography.fernet import Fernet

from tests.fixtures.db import migrated_sqlite_url

REPO = Path(__file__).resolve().parents[2]


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor.cli", "deployments", *args],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    url = migrated_sqlite_url(tmp_path / "conveyor.db")
    return {
        **os.environ,
        "CONVEYOR_DATABASE_URL": url,
        "CONVEYOR_HOME": str(tmp_path / "home"),
        "CONVEYOR_SECRET_KEY": Fernet.generate_key().decode(),
        "COLUMNS": "200",
    }


def test_validate_plan_apply_export_from_the_command_line(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    seed = tmp_path / "deployments"
    shutil.copytree(REPO / "deployments", seed)

    ok = run(["validate", str(seed)], cli_env)
    assert ok.returncode == 0, ok.stderr
    assert "1 deployment file(s)" in ok.stdout

    planned = run(["plan", str(seed)], cli_env)
    assert planned.returncode == 2, planned.stderr  # 2 = there are changes
    assert "example-orders" in planned.stdout and "1 create" in planned.stdout

    unconfirmed = run(["apply", str(seed)], cli_env)
    assert unconfirmed.returncode != 0
    assert "--yes" in unconfirmed.stderr

    applied = run(["apply", str(seed), "--yes"], cli_env)
    assert applied.returncode == 0, applied.stderr
    assert "created" in applied.stdout and "reconciler" in applied.stdout

    again = run(["plan", str(seed), "--json"], cli_env)
    assert again.returncode == 0, again.stderr  # 0 = nothing to change
    assert json.loads(again.stdout)["counts"] == {"unchanged": 1}

    out = tmp_path / "export"
    first = run(["export", str(out)], cli_env)
    assert first.returncode == 0, first.stderr
    exported = (out / "example-orders.yaml").read_bytes()
    second = run(["export", str(out)], cli_env)
    assert second.returncode == 0 and "unchanged" in second.stdout
    assert (out / "example-orders.yaml").read_bytes() == exported
    doc = yaml.safe_load(exported)
    assert doc["parameters"] == {"connector_id": 1}
    assert doc["tags"] == ["connector-1", "scheduled"]
    assert doc["connector"]["source"]["config"]["path"] == str(seed / "data")


def test_invalid_files_list_every_problem_on_stderr(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.yaml").write_text(
        "name: a\nparameters:\n  connector_id: 1\nschedule:\n  cron: '99 * * * *'\n"
        "  timezone: Moon/Base\n"
    )
    (bad / "b.yaml").write_text("name: a\nparameters: {connector_id: 1}\nextra: 1\n")
    (bad / "c.yaml").write_text("name: [oops\n")
    for command in (["validate"], ["plan"], ["apply", "--yes"]):
        result = run([*command, str(bad)], cli_env)
        assert result.returncode == 3, (command, result.stdout, result.stderr)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert [e.split(" ", 2)[1] for e in errors] == [
            "a.yaml:5:9:",
            "a.yaml:6:13:",
            "b.yaml:1:7:",
            "b.yaml:2:28:",
            "b.yaml:3:1:",
            "c.yaml:2:1:",
        ], result.stderr
        assert "nothing was applied" in result.stderr or command == ["validate"]


def test_schema_and_prefect_yaml(cli_env: dict[str, str], tmp_path: Path) -> None:
    schema = run(["schema"], cli_env)
    assert schema.returncode == 0, schema.stderr
    assert json.loads(schema.stdout)["title"] == "Conveyor deployment file"
    target = tmp_path / "prefect.yaml"
    made = run(["prefect-yaml", str(REPO / "deployments"), "-o", str(target)], cli_env)
    assert made.returncode == 0, made.stderr
    [deployment] = yaml.safe_load(target.read_text())["deployments"]
    assert deployment["name"] == "connector-1"  # the demo keeps the default name
    assert "conveyor" not in deployment["tags"]
