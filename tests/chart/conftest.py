"""Fixtures for the Helm chart tests: a real helm binary, rendering, and the loopback API server.

- ``helm``: ``.venv/bin/helm`` (or one on PATH); fetched with ``../shared/tools/get-helm`` when
  missing, skipped only when neither exists.
- ``render(*value_files, set=..., release=..., namespace=...)``: ``helm template`` -> objects.
- ``kube``: the kube-apiserver of ``../shared/tools/k8s-test-cluster`` (started here when built but
  not running, stopped again afterwards). Tests using it are marked ``k8s`` and skip with the reason
  when the cluster binaries have not been built (``.ci/k8s.sh`` builds them in CI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "conveyor"
VALUES_DIR = Path(__file__).resolve().parent / "values"
TOOLS = REPO.parent / "shared" / "tools"
K8S_VERSION = "1.33.0"

# Named value sets used across the tests (files in tests/chart/values/).
VALUE_SETS: dict[str, list[str]] = {
    "default": [],
    "external-db": ["external-db.yaml"],
    "existing-secrets": ["existing-secrets.yaml"],
    "kubernetes-worker": ["kubernetes-worker.yaml"],
    "ingress": ["ingress.yaml"],
    "seed": ["seed.yaml"],
    "everything": ["everything.yaml"],
    "prefect-replicated": ["prefect-replicated.yaml"],
}

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job"}


def _helm_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(tmp / var.lower())
    return env


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., subprocess.CompletedProcess]:
    """Run the real helm binary: ``helm("lint", ...)`` -> CompletedProcess (never raises)."""
    binary = REPO / ".venv" / "bin" / "helm"
    if not binary.exists():
        found = shutil.which("helm")
        if found:
            binary = Path(found)
        elif (TOOLS / "get-helm").exists():
            subprocess.run([str(TOOLS / "get-helm"), str(binary.parent)], check=True, cwd=REPO)
        else:
            pytest.skip("no helm binary and no ../shared/tools/get-helm to fetch one")
    version = subprocess.run([str(binary), "version", "--short"], capture_output=True, text=True)
    assert version.stdout.startswith("v3."), version.stdout + version.stderr
    env = _helm_env(tmp_path_factory.mktemp("helm-home"))

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(binary), *args], capture_output=True, text=True, env=env, timeout=timeout
        )

    return run


def value_args(files: list[str] | tuple[str, ...], sets: dict[str, Any] | None = None) -> list[str]:
    args: list[str] = []
    for f in files:
        args += ["-f", str(VALUES_DIR / f)]
    for key, value in (sets or {}).items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    return args


def parse_manifests(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.fixture(scope="session")
def render(helm) -> Callable[..., list[dict[str, Any]]]:
    """``render("ingress.yaml", set={"web.replicas": 3})`` -> rendered objects (asserts success)."""
    cache: dict[str, list[dict[str, Any]]] = {}

    def _render(
        *files: str,
        set: dict[str, Any] | None = None,
        release: str = "rel",
        namespace: str = "conveyor",
    ) -> list[dict[str, Any]]:
        key = json.dumps([files, set, release, namespace], sort_keys=True)
        if key not in cache:
            args = ["template", release, str(CHART), "--namespace", namespace]
            proc = helm(*args, *value_args(files, set))
            assert proc.returncode == 0, f"helm template failed:\n{proc.stderr}"
            cache[key] = parse_manifests(proc.stdout)
        # Callers may mutate what they get.
        return json.loads(json.dumps(cache[key]))

    return _render


# Helpers on rendered objects ----------------------------------------------------------------


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    if obj["kind"] in WORKLOAD_KINDS:
        return obj["spec"]["template"]["spec"]
    return None


def containers(spec: dict[str, Any], init: bool = True) -> list[dict[str, Any]]:
    out = list(spec.get("containers", []))
    if init:
        out += spec.get("initContainers", [])
    return out


def find(objs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)]


def one(objs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = find(objs, kind, name_suffix)
    assert len(found) == 1, (
        f"expected one {kind} *{name_suffix}, got {[o['metadata']['name'] for o in found]}"
    )
    return found[0]


def base_job_template(objs: list[dict[str, Any]]) -> dict[str, Any]:
    cm = one(objs, "ConfigMap", "-base-job-template")
    return json.loads(cm["data"]["base-job-template.json"])


# The loopback Kubernetes API server ---------------------------------------------------------


def _k8s_home() -> Path:
    if os.environ.get("K8S_TEST_HOME"):
        return Path(os.environ["K8S_TEST_HOME"])
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "conveyor-k8s"


@dataclass
class Kube:
    """A tiny client for the API server's REST API (kubectl may not exist on the machine)."""

    server: str
    token: str
    kubeconfig: Path

    def __post_init__(self) -> None:
        import httpx

        self.http = httpx.Client(
            base_url=self.server,
            verify=False,  # the test cluster's self-signed certificate; loopback only
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )

    def ready(self) -> bool:
        try:
            return self.http.get("/readyz").status_code == 200
        except Exception:
            return False

    @staticmethod
    def collection(obj: dict[str, Any], namespace: str) -> str:
        api_version, kind = obj["apiVersion"], obj["kind"]
        plural = {
            "NetworkPolicy": "networkpolicies",
            "Ingress": "ingresses",
            "PodDisruptionBudget": "poddisruptionbudgets",
        }.get(kind, kind.lower() + "s")
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        return f"{prefix}/namespaces/{namespace}/{plural}"

    def path(self, obj: dict[str, Any], namespace: str) -> str:
        return f"{self.collection(obj, namespace)}/{obj['metadata']['name']}"

    def get(self, obj: dict[str, Any], namespace: str):
        return self.http.get(self.path(obj, namespace))

    def create(self, obj: dict[str, Any], namespace: str, dry_run: bool = False):
        params = {"dryRun": "All"} if dry_run else {}
        return self.http.post(self.collection(obj, namespace), json=obj, params=params)

    def can_i(
        self,
        user: str,
        verb: str,
        resource: str,
        namespace: str,
        group: str = "",
        subresource: str = "",
    ) -> bool:
        """``kubectl auth can-i VERB RESOURCE --as USER -n NAMESPACE`` as a SubjectAccessReview."""
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user,
                "groups": [
                    "system:serviceaccounts",
                    f"system:serviceaccounts:{namespace}",
                    "system:authenticated",
                ]
                if user.startswith("system:serviceaccount:")
                else ["system:authenticated"],
                "resourceAttributes": {
                    "namespace": namespace,
                    "verb": verb,
                    "group": group,
                    "resource": resource,
                    "subresource": subresource,
                },
            },
        }
        resp = self.http.post("/apis/authorization.k8s.io/v1/subjectaccessreviews", json=review)
        assert resp.status_code == 201, resp.text
        return bool(resp.json()["status"].get("allowed"))


@pytest.fixture(scope="session")
def kube() -> Iterator[Kube]:
    home = _k8s_home()
    script = TOOLS / "k8s-test-cluster"
    if not (home / "bin" / "kube-apiserver").exists():
        pytest.skip(
            f"test cluster not built ({home}/bin/kube-apiserver missing): run "
            "`../shared/tools/k8s-test-cluster build` once (~8 min; CI does it in .ci/k8s.sh)"
        )
    port = int(os.environ.get("K8S_TEST_PORT", "16443"))
    kubeconfig = home / "run" / "kubeconfig"
    client = Kube(f"https://127.0.0.1:{port}", "admintoken", kubeconfig)
    started = False
    if not client.ready():
        if not script.exists():
            pytest.skip("test cluster built but not running, and ../shared/tools is absent")
        proc = subprocess.run([str(script), "start"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        started = True
        deadline = time.monotonic() + 60
        while not client.ready():
            assert time.monotonic() < deadline, "apiserver did not become ready"
            time.sleep(1)
    assert kubeconfig.exists(), kubeconfig
    token = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"]
    client.token = token
    client.http.headers["Authorization"] = f"Bearer {token}"
    try:
        yield client
    finally:
        client.http.close()
        if started:
            subprocess.run([str(script), "stop"], capture_output=True, timeout=60)


@pytest.fixture
def namespace() -> str:
    """A fresh namespace name (the test cluster has no namespace controller: never reused)."""
    return f"conveyor-t-{uuid.uuid4().hex[:8]}"
