"""The kubernetes worker's init container script, exactly as the chart ships it, against a real
Prefect server: it creates the kubernetes work pool with the chart's base job template (which the
server validates), updates it on the next start, and refuses a pool of another type. With the
reconciler's gateway configured as the chart configures it (CONVEYOR_WORK_POOL_TYPE,
CONVEYOR_WORK_POOL_CONCURRENCY): whichever comes first, the pool ends up of the configured type
with the configured limit (none unless one was set) and the chart's template."""

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


def _sync(shipped, api_url, pool, limit="none"):
    env = dict(os.environ, PREFECT_API_URL=api_url)
    return subprocess.run(
        [
            sys.executable,
            str(shipped / "sync-work-pool.py"),
            pool,
            str(shipped / "base-job-template.json"),
            limit,
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


def _ensure(api_url, pool, pool_type="kubernetes", concurrency=None):
    """What the reconciler does first on a full pass (sync/loop.py builds the gateway so)."""
    import asyncio

    from conveyor.sync.gateway import PrefectGateway

    async def go():
        async with PrefectGateway(
            api_url, pool_type=pool_type, pool_concurrency=concurrency, owned_pool=pool
        ) as gw:
            await gw.ensure_work_pool(pool)
            return gw.calls

    return asyncio.run(go())


def test_reconciler_first_creates_the_configured_pool_then_the_worker_puts_its_template(
    shipped, prefect_api_url
):
    import json

    pool = f"rk-{uuid.uuid4().hex[:8]}"
    calls = _ensure(prefect_api_url, pool)
    assert calls.get("create_work_pool") == 1
    made = _read_pool(prefect_api_url, pool)
    assert (made["type"], made["concurrency_limit"]) == ("kubernetes", None)  # no hidden limit
    proc = _sync(shipped, prefect_api_url, pool)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "updated the base job template" in proc.stdout
    stored = _read_pool(prefect_api_url, pool)
    template = json.loads((shipped / "base-job-template.json").read_text())
    assert stored["base_job_template"] == template
    assert "cpu_request" in stored["base_job_template"]["variables"]["properties"]
    # The next pass finds it as configured and changes nothing.
    assert "create_work_pool" not in _ensure(prefect_api_url, pool)
    assert _read_pool(prefect_api_url, pool) == stored


def test_worker_first_creates_the_pool_with_its_limit_and_the_reconciler_keeps_it(
    shipped, prefect_api_url
):
    pool = f"wk-{uuid.uuid4().hex[:8]}"
    proc = _sync(shipped, prefect_api_url, pool, limit="3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    created = _read_pool(prefect_api_url, pool)
    assert (created["type"], created["concurrency_limit"]) == ("kubernetes", 3)
    calls = _ensure(prefect_api_url, pool, concurrency=3)
    assert "create_work_pool" not in calls
    assert _read_pool(prefect_api_url, pool) == created


def test_the_reconciler_reports_a_pool_of_another_type_and_leaves_it(prefect_api_url):
    import httpx

    from conveyor.errors import ExternalError

    pool = f"px-{uuid.uuid4().hex[:8]}"
    resp = httpx.post(
        f"{prefect_api_url}/work_pools/", json={"name": pool, "type": "process"}, timeout=10
    )
    assert resp.status_code == 201, resp.text
    with pytest.raises(ExternalError) as caught:
        _ensure(prefect_api_url, pool)
    assert f"work pool '{pool}' is a 'process' pool" in str(caught.value)
    assert "configured for 'kubernetes'" in str(caught.value)
    assert "prefect work-pool delete" in (caught.value.hint or "")
    assert _read_pool(prefect_api_url, pool)["type"] == "process"


def test_a_process_pool_is_created_without_a_limit_nobody_configured(prefect_api_url):
    pool = f"pp-{uuid.uuid4().hex[:8]}"
    _ensure(prefect_api_url, pool, pool_type="process")
    made = _read_pool(prefect_api_url, pool)
    assert (made["type"], made["concurrency_limit"]) == ("process", None)
    other = f"pq-{uuid.uuid4().hex[:8]}"
    _ensure(prefect_api_url, other, pool_type="process", concurrency=6)
    assert _read_pool(prefect_api_url, other)["concurrency_limit"] == 6
