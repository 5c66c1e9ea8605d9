"""The chart against a real kube-apiserver (1.20, loopback, RBAC on; pods never run).

helm install --no-hooks / upgrade / uninstall, a server-side dry run of every hook object, and
`kubectl auth can-i` checks (as SubjectAccessReviews through the REST API: kubectl may be absent).
The API server catches what schemas miss: names that are not DNS labels, selectors that do not
match their template's labels, out-of-range ports, immutable fields changed by an upgrade.
"""

from __future__ import annotations

import pytest

from conftest import CHART, parse_manifests, value_args

pytestmark = pytest.mark.k8s


class Release:
    def __init__(self, helm, kube, name: str, namespace: str):
        self.helm, self.kube, self.name, self.namespace = helm, kube, name, namespace

    def run(self, *args: str) -> str:
        proc = self.helm(
            *args, "--kubeconfig", str(self.kube.kubeconfig), "--namespace", self.namespace
        )
        assert proc.returncode == 0, f"helm {' '.join(args[:2])} failed:\n{proc.stderr}"
        return proc.stdout

    def install(self, *files: str, sets=None) -> None:
        self.run(
            "install",
            self.name,
            str(CHART),
            "--create-namespace",
            "--no-hooks",
            *value_args(files, sets),
        )

    def upgrade(self, *files: str, sets=None) -> None:
        self.run("upgrade", self.name, str(CHART), "--no-hooks", *value_args(files, sets))

    def manifest(self) -> list[dict]:
        return parse_manifests(self.run("get", "manifest", self.name))

    def hooks(self) -> list[dict]:
        return parse_manifests(self.run("get", "hooks", self.name))

    def assert_stored(self, objs: list[dict]) -> None:
        for obj in objs:
            resp = self.kube.get(obj, self.namespace)
            assert resp.status_code == 200, f"{obj['kind']}/{obj['metadata']['name']}: {resp.text}"


def test_install_upgrade_uninstall_with_bundled_postgresql(helm, kube, namespace):
    rel = Release(helm, kube, "conveyor", namespace)
    rel.install("seed.yaml")
    objs = rel.manifest()
    kinds = {o["kind"] for o in objs}
    assert {
        "Deployment",
        "StatefulSet",
        "Service",
        "ConfigMap",
        "NetworkPolicy",
        "PodDisruptionBudget",
    } <= kinds
    rel.assert_stored(objs)
    pdb = next(o for o in objs if o["kind"] == "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1beta1"  # what a 1.20 server offers; policy/v1 from 1.21

    # Upgrade: scale the web app, change the seed files; the server must accept the changes
    # (selectors and StatefulSet volume claims are immutable: a chart that changed them fails).
    rel.upgrade(
        "seed.yaml", sets={"web.replicas": 3, "seedDeployments": {"only.yaml": "name: only\n"}}
    )
    web = next(
        o
        for o in rel.manifest()
        if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-web")
    )
    stored = kube.get(web, namespace).json()
    assert stored["spec"]["replicas"] == 3
    assert stored["metadata"]["annotations"]["meta.helm.sh/release-name"] == "conveyor"
    cm = next(o for o in rel.manifest() if o["metadata"]["name"].endswith("-seed-deployments"))
    assert list(kube.get(cm, namespace).json()["data"]) == ["only.yaml"]
    history = rel.run("history", rel.name, "-o", "json")
    assert '"revision":2' in history.replace(" ", "")

    rel.run("uninstall", rel.name, "--wait", "--timeout", "60s")
    for obj in objs:
        assert kube.get(obj, namespace).status_code == 404, obj["metadata"]["name"]


def test_hook_objects_pass_a_server_side_dry_run(helm, kube, namespace):
    rel = Release(helm, kube, "hooks", namespace)
    rel.install("seed.yaml")
    hooks = rel.hooks()
    names = sorted(f"{h['kind']}/{h['metadata']['name']}" for h in hooks)
    assert names == [
        "ConfigMap/hooks-conveyor-kube-ops",
        "Job/hooks-conveyor-admin-bootstrap",
        "Job/hooks-conveyor-migrations",
        "Job/hooks-conveyor-prefect-db-upgrade",
        "Job/hooks-conveyor-secrets",
        "Job/hooks-conveyor-seed",
        "Role/hooks-conveyor-secrets",
        "RoleBinding/hooks-conveyor-secrets",
        "ServiceAccount/hooks-conveyor-secrets",
    ]
    for obj in hooks:
        resp = kube.create(obj, namespace, dry_run=True)
        assert resp.status_code == 201, f"{obj['kind']}/{obj['metadata']['name']}: {resp.text}"
        assert kube.get(obj, namespace).status_code == 404  # a dry run stores nothing


def test_upgrades_render_the_same_secret_hooks_and_no_generated_value(helm, kube, namespace):
    """Generated secrets are made in the cluster by the secrets Job (test_k8s_operable.py), so
    an upgrade renders the very same hooks: nothing new to overwrite a kept key with."""
    rel = Release(helm, kube, "keys", namespace)
    rel.install()
    first = rel.hooks()
    assert not [h for h in first if h["kind"] == "Secret"]  # nothing generated is rendered
    rel.upgrade(sets={"web.replicas": 1})
    assert rel.hooks() == first
    # The secrets Job's identity may write only this release's two Secrets (and create).
    job_sa = f"system:serviceaccount:{namespace}:keys-conveyor-secrets"
    for obj in first:
        if obj["kind"] in ("ServiceAccount", "Role", "RoleBinding"):
            assert kube.create(obj, namespace).status_code == 201
    can = kube.can_i
    assert can(job_sa, "patch", "secrets", namespace) is False  # not without a name
    review = kube.http.post(
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        json={
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": job_sa,
                "resourceAttributes": {
                    "namespace": namespace,
                    "verb": "patch",
                    "resource": "secrets",
                    "name": "keys-conveyor-app",
                },
            },
        },
    )
    assert review.json()["status"].get("allowed") is True
    assert can(job_sa, "list", "secrets", namespace) is False
    assert can(job_sa, "create", "jobs", namespace, group="batch") is False
    rel.run("uninstall", rel.name)


def test_kubernetes_worker_rbac_can_i(helm, kube, namespace):
    rel = Release(helm, kube, "k8s", namespace)
    rel.install("kubernetes-worker.yaml", "ingress.yaml")
    rel.assert_stored(rel.manifest())
    jobs = [obj for obj in rel.hooks() if obj["kind"] == "Job"]
    assert jobs  # the migration Job at the least
    for obj in jobs:
        assert kube.create(obj, namespace, dry_run=True).status_code == 201

    worker = f"system:serviceaccount:{namespace}:k8s-conveyor-worker"
    app = f"system:serviceaccount:{namespace}:k8s-conveyor"
    flow_run = f"system:serviceaccount:{namespace}:k8s-conveyor-flow-run"
    can = kube.can_i
    # What the kubernetes worker needs: create and follow Jobs and their pods, logs and events.
    assert can(worker, "create", "jobs", namespace, group="batch")
    assert can(worker, "delete", "jobs", namespace, group="batch")
    assert can(worker, "watch", "pods", namespace)
    assert can(worker, "get", "pods", namespace, subresource="log")
    # ... and nothing it does not need.
    for verb in ("get", "list", "watch"):
        assert not can(worker, verb, "secrets", namespace), f"worker can {verb} secrets"
    assert not can(worker, "create", "pods", namespace)
    assert not can(worker, "get", "configmaps", namespace)
    assert not can(worker, "create", "rolebindings", namespace, group="rbac.authorization.k8s.io")
    assert not can(worker, "create", "jobs", "kube-system", group="batch")
    # The other identities cannot touch the API at all.
    for user in (app, flow_run):
        assert not can(user, "create", "jobs", namespace, group="batch")
        assert not can(user, "get", "secrets", namespace)

    # Switching to the process worker removes the Role, and with it the rights.
    rel.upgrade("ingress.yaml", sets={"worker.type": "process"})
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "k8s-conveyor-worker"},
    }
    assert kube.get(role, namespace).status_code == 404
    assert not can(worker, "create", "jobs", namespace, group="batch")
    rel.run("uninstall", rel.name)


def test_external_database_and_everything_on_install(helm, kube, namespace):
    rel = Release(helm, kube, "ext", namespace)
    rel.install("everything.yaml")
    objs = rel.manifest()
    rel.assert_stored(objs)
    assert not [o for o in objs if o["kind"] == "StatefulSet"]
    for obj in rel.hooks():
        resp = kube.create(obj, namespace, dry_run=True)
        assert resp.status_code == 201, resp.text
    rel.run("uninstall", rel.name)


def test_the_server_rejects_what_schemas_miss(kube, namespace, render):
    """Sanity check of the harness: a Deployment whose selector misses its labels is refused."""
    objs = render()
    web = next(
        o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-web")
    )
    web["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] = "not-web"
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    assert kube.http.post("/api/v1/namespaces", json=ns).status_code == 201
    resp = kube.create(web, namespace, dry_run=True)
    assert resp.status_code == 422 and "selector" in resp.text
