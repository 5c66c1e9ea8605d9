"""A connector's job variables reach the flow-run Job the real kubernetes worker would submit.

The chart's base job template goes on a kubernetes pool of a real Prefect server (the init
container's script), the reconciler's gateway applies a connector's deployment with job
variables, a flow run is created, and prefect-kubernetes' own code
(``KubernetesWorkerJobConfiguration.from_template_and_values`` + ``prepare_for_flow_run``, what
``KubernetesWorker`` does before it creates the Job) renders the Job. The loopback Kubernetes API
server then accepts it in a server-side dry run (admission and schema validation, nothing made).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from conftest import one

pytestmark = [pytest.mark.k8s, pytest.mark.prefect]

JOB_VARIABLES = {
    "cpu_request": "750m",
    "memory_limit": "3Gi",
    "node_selector": {"conveyor.io/pool": "heavy"},
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "etl", "effect": "NoSchedule"}
    ],
    "env": {"REGION": "eu-west"},
    "image": "registry.example/conveyor:1.2.3",
}


async def _render_job(api_url: str, pool: str, template: dict[str, Any]) -> dict[str, Any]:
    from prefect.client.orchestration import PrefectClient
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    from conveyor.domain.job_variables import JobVariables
    from conveyor.sync.gateway import PrefectGateway
    from conveyor.sync.spec import build

    connector = SimpleNamespace(
        id=4242,
        name="heavy orders",
        schedule=None,
        timezone="UTC",
        is_active=True,
        tags=[],
        work_pool_name=pool,
        work_queue_name=None,
        deployment_name=None,
        job_variables=JobVariables.model_validate(JOB_VARIABLES).variables(),
    )
    spec = build(connector, default_work_pool=pool, default_work_queue="default")
    async with PrefectGateway(api_url, pool_type="kubernetes", owned_pool=pool) as gw:
        deployment_id = await gw.upsert(spec)
    async with PrefectClient(api=api_url) as client:
        deployment = await client.read_deployment(deployment_id)
        assert deployment.job_variables == spec.job_variables  # what Prefect stores
        flow_run = await client.create_flow_run_from_deployment(deployment.id)
        flow = await client.read_flow(deployment.flow_id)
        work_pool = await client.read_work_pool(pool)
        assert work_pool.base_job_template == template
        config = await KubernetesWorkerJobConfiguration.from_template_and_values(
            work_pool.base_job_template, deployment.job_variables or {}, client=client
        )
        config.prepare_for_flow_run(flow_run, deployment, flow, work_pool, "test-worker")
        return dict(config.job_manifest)


def test_a_connectors_job_variables_render_into_a_job_the_api_server_accepts(
    render, kube, namespace, prefect_api_url, tmp_path
):
    import json

    objs = render("kubernetes-worker.yaml", namespace=namespace)
    cm = one(objs, "ConfigMap", "-base-job-template")
    for name, content in cm["data"].items():
        (tmp_path / name).write_text(content)
    template = json.loads(cm["data"]["base-job-template.json"])
    pool = f"k8s-job-{uuid.uuid4().hex[:8]}"
    init = subprocess.run(
        [
            sys.executable,
            str(tmp_path / "sync-work-pool.py"),
            pool,
            str(tmp_path / "base-job-template.json"),
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, PREFECT_API_URL=prefect_api_url),
        timeout=120,
    )
    assert init.returncode == 0, init.stdout + init.stderr

    job = asyncio.run(_render_job(prefect_api_url, pool, template))

    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == JOB_VARIABLES["image"]
    # Set by the connector, and the chart's defaults (worker.kubernetes.jobResources) for the rest.
    assert container["resources"] == {
        "requests": {"cpu": "750m", "memory": "512Mi"},
        "limits": {"cpu": "2", "memory": "3Gi"},
    }
    assert pod["nodeSelector"] == JOB_VARIABLES["node_selector"]
    assert pod["tolerations"] == JOB_VARIABLES["tolerations"]
    env = {e["name"]: e for e in container["env"]}
    assert env["REGION"]["value"] == "eu-west"
    assert "PREFECT__FLOW_RUN_ID" in env  # Prefect's own, added by the worker code
    assert "valueFrom" in env["CONVEYOR_DATABASE_URL"]  # the chart's Secret refs are kept
    assert job["metadata"]["namespace"] == namespace

    created = kube.http.post(
        "/api/v1/namespaces",
        json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
    )
    assert created.status_code == 201, created.text
    answer = kube.http.post(
        f"/apis/batch/v1/namespaces/{namespace}/jobs",
        params={"dryRun": "All", "fieldValidation": "Strict"},
        json=job,
    )
    assert answer.status_code == 201, answer.text
    accepted = answer.json()["spec"]["template"]["spec"]
    assert accepted["containers"][0]["resources"]["limits"]["memory"] == "3Gi"
    assert accepted["tolerations"][0]["key"] == "dedicated"
    # Nothing was made.
    listed = kube.http.get(f"/apis/batch/v1/namespaces/{namespace}/jobs")
    assert listed.json()["items"] == []
