"""The generated prefect.yaml, deployed by the real ``prefect`` CLI against a real Prefect
server, and read back from it."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from conveyor.deployments_io import load_directory, render_prefect_yaml
from conveyor.settings import Settings

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.prefect


def _prefect(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


async def _read(names: list[str]) -> dict[str, Any]:
    from prefect.client.orchestration import get_client

    out = {}
    async with get_client() as client:
        for name in names:
            d = await client.read_deployment_by_name(f"run_connector_pipeline/{name}")
            out[name] = d
    return out


def test_prefect_deploy_accepts_the_generated_prefect_yaml(
    prefect_api_url: str, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:6]  # the Prefect server is shared by the test session
    pool = f"deploy-test-{suffix}"
    src = tmp_path / "deployments"
    shutil.copytree(REPO / "deployments", src)
    example = (src / "example-connector-deployment.yaml").read_text()
    first = f"example-{suffix}"
    (src / "example-connector-deployment.yaml").write_text(
        example.replace("name: connector-1 ", f"name: {first} ").replace(
            "work_pool_name: default", f"work_pool_name: {pool}"
        )
    )
    second = f"paused-{suffix}"
    (src / "paused.yaml").write_text(
        example.replace("name: connector-1 ", f"name: {second} ")
        .replace("work_pool_name: default", f"work_pool_name: {pool}")
        .replace("work_queue_name: default", "work_queue_name: fast")
        .replace("connector_id: 1", "connector_id: 2")
        .replace("connector-1", "connector-2")
        .replace("name: example-orders\n", "name: paused-orders\n")
        .replace("  active: true", "  active: false")
        .replace('cron: "0 */6 * * *"', 'cron: "30 2 * * 1-5"')
        .replace('timezone: "UTC"', 'timezone: "Europe/Paris"')
        .replace("  - scheduled\n", "  - scheduled\n  - finance\n")
    )
    settings = Settings(home=tmp_path / "home", secret_key="unused-here")
    target = tmp_path / "prefect.yaml"
    target.write_text(render_prefect_yaml(load_directory(src, check_env=False), settings))

    env = {**os.environ, "PREFECT_API_URL": prefect_api_url}
    made = _prefect(["work-pool", "create", pool, "--type", "process"], env, tmp_path)
    assert made.returncode == 0, made.stdout + made.stderr
    deployed = _prefect(["deploy", "--all", "--prefect-file", str(target)], env, tmp_path)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr

    found = asyncio.run(_read([first, second]))
    a, b = found[first], found[second]
    assert a.entrypoint == "conveyor.pipelines.flow:run_connector_pipeline"
    assert a.parameters == {"connector_id": 1}
    assert (a.work_pool_name, a.work_queue_name) == (pool, "default")
    assert sorted(a.tags) == ["connector-1", "scheduled"]
    assert "conveyor" not in a.tags and "conveyor" not in b.tags  # the reconciler's mark
    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in a.schedules] == [
        ("0 */6 * * *", "UTC", True)
    ]
    assert a.global_concurrency_limit is not None and a.global_concurrency_limit.limit == 1
    assert a.concurrency_options is not None
    assert a.concurrency_options.collision_strategy == "ENQUEUE"
    assert a.pull_steps in (None, [])
    assert (b.parameters, b.work_queue_name, sorted(b.tags)) == (
        {"connector_id": 2},
        "fast",
        ["connector-2", "finance", "scheduled"],
    )
    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in b.schedules] == [
        ("30 2 * * 1-5", "Europe/Paris", False)
    ]
    assert b.paused is True

    # Deploying again is an upsert: still one deployment per name.
    again = _prefect(["deploy", "--all", "--prefect-file", str(target)], env, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert asyncio.run(_read([first]))[first].id == a.id
