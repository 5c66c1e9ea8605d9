"""The chart's in-cluster chores against the real kube-apiserver (1.20, loopback, RBAC on):
files/kube-ops.py makes the generated Secrets once and keeps them, values given win, and it
deletes finished flow-run Jobs (what ttlSecondsAfterFinished does from 1.21); an install with
autoscaling, PDBs, Prefect auth and the Job cleanup is accepted by a 1.20 server."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from conftest import CHART, parse_manifests, value_args

pytestmark = pytest.mark.k8s

SCRIPT = CHART / "files" / "kube-ops.py"


def _ns(kube, namespace):
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    assert kube.http.post("/api/v1/namespaces", json=ns).status_code == 201


def _run(kube, namespace, *args, env=None):
    full = dict(os.environ)
    full.update(
        KUBE_OPS_SERVER=kube.server,
        KUBE_OPS_TOKEN=kube.token,
        KUBE_OPS_NAMESPACE=namespace,
        KUBE_OPS_INSECURE="1",
        **(env or {}),
    )
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=full, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _secret(kube, namespace, name):
    resp = kube.http.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")
    assert resp.status_code == 200, resp.text
    return {k: base64.b64decode(v).decode() for k, v in resp.json()["data"].items()}


def _spec(helm, namespace, *sets):
    proc = helm("template", "r", str(CHART), "-n", namespace, *sets)
    assert proc.returncode == 0, proc.stderr
    job = next(
        o
        for o in parse_manifests(proc.stdout)
        if o["kind"] == "Job" and o["metadata"]["name"] == "r-conveyor-secrets"
    )
    return job["spec"]["template"]["spec"]["containers"][0]["args"][0]


def test_secrets_are_generated_once_and_kept(helm, kube, namespace):
    from cryptography.fernet import Fernet

    _ns(kube, namespace)
    spec = _spec(helm, namespace)
    out = _run(kube, namespace, "ensure-secrets", spec)
    app = _secret(kube, namespace, "r-conveyor-app")
    db = _secret(kube, namespace, "r-conveyor-database")
    Fernet(app["secret-key"].encode())  # a valid key
    assert len(app["admin-password"]) == 24 and len(app["metrics-token"]) == 40
    password = db["postgres-password"]
    assert len(password) == 32
    assert db["database-url"] == (
        f"postgresql+psycopg://conveyor:{password}@r-conveyor-postgresql:5432/conveyor"
    )
    for value in (*app.values(), password):
        assert value not in out  # key names only in the Job's log

    # Every later install/upgrade (or GitOps sync) runs it again: nothing changes.
    _run(kube, namespace, "ensure-secrets", spec)
    assert _secret(kube, namespace, "r-conveyor-app") == app
    assert _secret(kube, namespace, "r-conveyor-database") == db

    # A key given in values wins (rotation: new key first); the others are kept.
    rotated = Fernet.generate_key().decode() + "," + app["secret-key"]
    _run(kube, namespace, "ensure-secrets", spec, env={"EXPLICIT_SECRET_KEY": rotated})
    after = _secret(kube, namespace, "r-conveyor-app")
    assert after["secret-key"] == rotated
    assert after["admin-password"] == app["admin-password"]
    # A PostgreSQL password given later rewrites the URLs built from it.
    _run(kube, namespace, "ensure-secrets", spec, env={"EXPLICIT_POSTGRES_PASSWORD": "p@ss/w:rd"})
    assert _secret(kube, namespace, "r-conveyor-database")["database-url"].startswith(
        "postgresql+psycopg://conveyor:p%40ss%2Fw%3Ard@"
    )


def test_finished_flow_run_jobs_are_deleted(kube, namespace):
    _ns(kube, namespace)
    base = f"/apis/batch/v1/namespaces/{namespace}/jobs"

    def job(name, component="flow-run"):
        body = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": name,
                "labels": {
                    "app.kubernetes.io/instance": "r",
                    "app.kubernetes.io/component": component,
                },
            },
            "spec": {
                "template": {
                    "metadata": {"labels": {"x": "y"}},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "c", "image": "conveyor:0.1.0"}],
                    },
                }
            },
        }
        resp = kube.http.post(base, json=body)
        assert resp.status_code == 201, resp.text
        return resp.json()

    def finish(obj, ago, kind="Complete"):
        at = (datetime.now(UTC) - ago).strftime("%Y-%m-%dT%H:%M:%SZ")
        obj["status"] = {
            "conditions": [
                {"type": kind, "status": "True", "lastTransitionTime": at, "lastProbeTime": at}
            ],
            "startTime": at,
        }
        if kind == "Complete":
            obj["status"].update(completionTime=at, succeeded=1)
        else:
            obj["status"].update(failed=1)
        resp = kube.http.put(f"{base}/{obj['metadata']['name']}/status", json=obj)
        assert resp.status_code == 200, resp.text

    finish(job("old-done"), timedelta(hours=2))
    finish(job("old-failed"), timedelta(hours=3), kind="Failed")
    finish(job("young-done"), timedelta(minutes=5))
    job("running")
    finish(job("other-component", component="migrations"), timedelta(hours=2))

    out = _run(
        kube,
        namespace,
        "clean-jobs",
        "--selector",
        "app.kubernetes.io/instance=r,app.kubernetes.io/component=flow-run",
        "--older-than",
        "3600",
    )
    assert "2 finished Job(s) deleted" in out
    left = {j["metadata"]["name"] for j in kube.http.get(base).json()["items"]}
    assert left == {"young-done", "running", "other-component"}


def test_operable_install_on_a_1_20_server(helm, kube, namespace):
    """autoscaling/v2beta2 HPAs, policy/v1beta1 PDBs and the batch/v1beta1 cleanup CronJob
    are what a 1.20 server serves; the server stores them."""
    args = [
        "--kubeconfig",
        str(kube.kubeconfig),
        "--namespace",
        namespace,
    ]
    proc = helm(
        "install",
        "ops",
        str(CHART),
        "--create-namespace",
        "--no-hooks",
        *value_args(["everything.yaml"]),
        *args,
    )
    assert proc.returncode == 0, proc.stderr
    objs = parse_manifests(helm("get", "manifest", "ops", *args).stdout)
    versions = {o["kind"]: o["apiVersion"] for o in objs}
    assert versions["HorizontalPodAutoscaler"] == "autoscaling/v2beta2"
    assert versions["PodDisruptionBudget"] == "policy/v1beta1"
    assert versions["CronJob"] == "batch/v1beta1"
    for obj in objs:
        resp = kube.get(obj, namespace)
        assert resp.status_code == 200, f"{obj['kind']}/{obj['metadata']['name']}: {resp.text}"
    hooks = parse_manifests(helm("get", "hooks", "ops", *args).stdout)
    for obj in hooks:
        resp = kube.create(obj, namespace, dry_run=True)
        assert resp.status_code == 201, f"{obj['kind']}/{obj['metadata']['name']}: {resp.text}"
    assert json.dumps(objs).count("prefect-auth") >= 4
    helm("uninstall", "ops", *args)
