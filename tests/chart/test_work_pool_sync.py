"""The kubernetes worker's init container script, exactly as the chart ships it, against a real
Prefect server: it creates the kubernetes work pool with the chart's base job template (which the
server validates), updates it on the next start, and refuses a pool of another type."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from conftest import one

pytestmark = pytest.mark.prefect


@pytest.fixture
def shipped(render, tmp_path):
    cm = one(render("kubernetes-worker.yaml"), "ConfigMap", "-base-job-template")
    for name, content in cm["data"].items():
        (tmp_path / name).write_text(content)
    return tmp_path


def _sync(shipped, api_url, pool):
    env = dict(os.environ, PREFECT_API_URL=api_url)
    return subprocess.run(
        [
            sys.executable,
            str(shipped / "sync-work-pool.py"),
            pool,
            str(shipped / "base-job-template.json"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _read_pool(api_url, pool):
    import httpx

    resp = httpx.get(f"{api_url}/work_pools/{pool}", timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_creates_then_updates_a_kubernetes_pool(shipped, prefect_api_url):
    import json

    pool = f"k8s-{uuid.uuid4().hex[:8]}"
    first = _sync(shipped, prefect_api_url, pool)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "created kubernetes work pool" in first.stdout
    stored = _read_pool(prefect_api_url, pool)
    assert stored["type"] == "kubernetes"
    template = json.loads((shipped / "base-job-template.json").read_text())
    assert stored["base_job_template"] == template
    second = _sync(shipped, prefect_api_url, pool)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "updated the base job template" in second.stdout


def test_refuses_a_pool_of_another_type(shipped, prefect_api_url):
    import httpx

    pool = f"proc-{uuid.uuid4().hex[:8]}"
    resp = httpx.post(
        f"{prefect_api_url}/work_pools/", json={"name": pool, "type": "process"}, timeout=10
    )
    assert resp.status_code == 201, resp.text
    proc = _sync(shipped, prefect_api_url, pool)
    assert proc.returncode == 2
    assert "exists with type 'process', not 'kubernetes'" in proc.stderr
    assert "worker.workPool" in proc.stderr
    assert _read_pool(prefect_api_url, pool)["type"] == "process"  # left alone
