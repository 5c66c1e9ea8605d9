"""The chart rendered offline: lint, Kubernetes schemas, and what the rendered YAML must say."""

from __future__ import annotations

import base64
import copy
import json
import re

import pytest

from conftest import (
    CHART,
    K8S_VERSION,
    VALUE_SETS,
    base_job_template,
    containers,
    find,
    one,
    pod_spec,
    value_args,
)

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
SECRET_ENV = re.compile(r"(PASSWORD|SECRET|TOKEN|_KEY$|DATABASE_URL|CONNECTION_URL)")
SECRET_REF_ENV = re.compile(r"_SECRET_(NAME|KEY)$")

# Values with recognisable secrets, to prove none of them leaks outside a Secret.
KNOWN_SECRETS = {
    "admin.password": "Adm1n-Plaintext-Canary",
    "postgresql.auth.password": "Pg-Plaintext-Canary",
    "conveyor.secretKey": "Y2FuYXJ5LWZlcm5ldC1rZXktY2FuYXJ5LWZlcm5ldC0=",
}


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint_strict(helm, name):
    proc = helm("lint", "--strict", str(CHART), *value_args(VALUE_SETS[name]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_rendered_object_matches_the_kubernetes_schema(render, name):
    import kubernetes_validate

    objs = render(*VALUE_SETS[name])
    assert objs
    for obj in objs:
        # strict: unknown fields and missing schemas are errors, not warnings.
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_the_kubernetes_work_pools_job_manifest_is_a_valid_job(render):
    import kubernetes_validate
    from prefect.utilities.templating import apply_values

    template = base_job_template(render("kubernetes-worker.yaml"))
    manifest = copy.deepcopy(template["job_configuration"]["job_manifest"])
    # The per-connector variables (resources, placement) take their pool defaults, as
    # Prefect's templating does for a deployment that sets none of them.
    defaults = {
        name: spec["default"]
        for name, spec in template["variables"]["properties"].items()
        if "default" in spec and name not in ("image", "namespace", "env", "command")
    }
    manifest = apply_values(manifest, defaults)
    # Fill Prefect's placeholders the way the worker does for a flow run.
    manifest["metadata"]["generateName"] = "connector-7-abc-"
    manifest["metadata"]["namespace"] = "conveyor"
    manifest["spec"]["ttlSecondsAfterFinished"] = 3600
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    container["image"] = "conveyor:0.1.0"
    container["imagePullPolicy"] = "IfNotPresent"
    container["args"] = ["prefect", "flow-run", "execute"]
    container["env"] = [{"name": "PREFECT__FLOW_RUN_ID", "value": "x"}, *container["env"]]
    # Prefect's validation wants these two in the pod spec; Kubernetes ignores them there.
    pod = manifest["spec"]["template"]["spec"]
    assert pod.pop("parallelism") == 1 and pod.pop("completions") == 1
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


# Hooks ----------------------------------------------------------------------------------------


def _hook(obj):
    ann = obj["metadata"].get("annotations", {})
    if "helm.sh/hook" not in ann:
        return None
    return set(ann["helm.sh/hook"].split(",")), int(ann.get("helm.sh/hook-weight", "0"))


def _phase_order(objs, phase):
    hooks = [(o, _hook(o)) for o in objs if _hook(o)]
    in_phase = [
        (w, o["kind"], o["metadata"]["name"]) for o, (phases, w) in hooks if phase in phases
    ]
    return [f"{kind}/{name}" for _, kind, name in sorted(in_phase)]


SECRETS_JOB_HOOKS = [
    "ConfigMap/rel-conveyor-kube-ops",
    "Role/rel-conveyor-secrets",
    "RoleBinding/rel-conveyor-secrets",
    "ServiceAccount/rel-conveyor-secrets",
    "Job/rel-conveyor-secrets",
]


def test_hooks_external_database_migrate_before_install_and_seed_after(render):
    objs = render("external-db.yaml", "seed.yaml")
    migrations = one(objs, "Job", "-migrations")
    seed = one(objs, "Job", "-seed")
    assert _hook(migrations)[0] == {"pre-install", "pre-upgrade"}
    assert _hook(seed)[0] == {"post-install", "post-upgrade"}
    assert migrations["spec"]["template"]["spec"]["containers"][0]["args"] == ["db", "upgrade"]
    assert seed["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "deployments",
        "apply",
        "/seed",
        "--yes",
    ]
    # Secrets the migrations read are created first, in the same phase: the secrets Job (with
    # its identity) makes the generated ones in the cluster, the external URLs are a Secret.
    assert _phase_order(objs, "pre-install") == [
        *SECRETS_JOB_HOOKS,
        "Secret/rel-conveyor-database",
        "Job/rel-conveyor-migrations",
        "Job/rel-conveyor-prefect-db-upgrade",
    ]
    assert _phase_order(objs, "pre-upgrade") == _phase_order(objs, "pre-install")
    assert _phase_order(objs, "post-install") == [
        "Job/rel-conveyor-admin-bootstrap",
        "Job/rel-conveyor-seed",
    ]
    assert _phase_order(objs, "post-upgrade") == ["Job/rel-conveyor-seed"]


def test_hooks_bundled_postgresql_migrate_once_it_exists(render):
    objs = render("seed.yaml")
    migrations = one(objs, "Job", "-migrations")
    # The bundled PostgreSQL only exists after the release's objects: migrate right after them
    # on install (first post-install hook), before them on upgrade.
    assert _hook(migrations)[0] == {"post-install", "pre-upgrade"}
    assert _phase_order(objs, "post-install") == [
        "Job/rel-conveyor-migrations",
        "Job/rel-conveyor-prefect-db-upgrade",
        "Job/rel-conveyor-admin-bootstrap",
        "Job/rel-conveyor-seed",
    ]
    assert _phase_order(objs, "pre-upgrade") == [
        *SECRETS_JOB_HOOKS,
        "Job/rel-conveyor-migrations",
        "Job/rel-conveyor-prefect-db-upgrade",
    ]
    assert _phase_order(objs, "pre-install") == SECRETS_JOB_HOOKS
    init = migrations["spec"]["template"]["spec"]["initContainers"]
    assert [c["name"] for c in init] == ["wait-for-database"]
    assert init[0]["command"][-2:] == ["rel-conveyor-postgresql", "5432"]


def test_seed_configmap_is_built_from_values_seed_deployments(render):
    import yaml

    objs = render("seed.yaml")
    cm = one(objs, "ConfigMap", "-seed-deployments")
    assert "helm.sh/hook" not in cm["metadata"].get("annotations", {})  # exists before post-install
    assert sorted(cm["data"]) == ["example-connector-deployment.yaml", "orders.yaml"]
    example = yaml.safe_load(cm["data"]["example-connector-deployment.yaml"])
    assert example["parameters"] == {"connector_id": 1}
    assert example["schedule"] == {"cron": "0 */6 * * *", "timezone": "UTC"}
    orders = yaml.safe_load(cm["data"]["orders.yaml"])  # given as a mapping in values
    assert orders["tags"] == ["connector-2", "scheduled"]
    seed = one(objs, "Job", "-seed")
    volumes = {v["name"]: v for v in seed["spec"]["template"]["spec"]["volumes"]}
    assert volumes["seed"]["configMap"]["name"] == cm["metadata"]["name"]


def test_no_seed_job_without_seed_deployments(render):
    objs = render()
    assert not find(objs, "Job", "-seed")
    assert not find(objs, "ConfigMap", "-seed-deployments")
    assert find(objs, "Job", "-migrations")


# Secrets --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_secret_looking_env_vars_come_from_secret_key_refs(render, name):
    objs = render(*VALUE_SETS[name])
    pods = [pod_spec(o) for o in objs if pod_spec(o)]
    if name in ("kubernetes-worker", "everything"):
        manifest = base_job_template(objs)["job_configuration"]["job_manifest"]
        pods.append(manifest["spec"]["template"]["spec"])
    checked = 0
    for spec in pods:
        for c in containers(spec):
            for env in c.get("env", []):
                # ..._SECRET_NAME/_SECRET_KEY name a Secret and its key (no secret in them).
                if SECRET_ENV.search(env["name"]) and not SECRET_REF_ENV.search(env["name"]):
                    assert "value" not in env, f"{c['name']}: {env['name']} inlined"
                    assert "secretKeyRef" in env["valueFrom"], env
                    checked += 1
    assert checked >= 5


def test_no_secret_value_appears_outside_a_secret(render):
    objs = render("seed.yaml", "kubernetes-worker.yaml", set=KNOWN_SECRETS)
    secrets = [o for o in objs if o["kind"] == "Secret"]
    decoded = "".join(base64.b64decode(v).decode() for s in secrets for v in s["data"].values())
    for canary in KNOWN_SECRETS.values():
        assert canary in decoded  # the canaries did reach the Secrets ...
    others = [obj for obj in objs if obj["kind"] != "Secret"]
    assert len(others) > len(secrets)
    for obj in others:
        text = json.dumps(obj)
        for canary in KNOWN_SECRETS.values():
            assert canary not in text, f"{obj['kind']}/{obj['metadata']['name']} leaks a secret"


def _secrets_job_spec(objs):
    job = one(objs, "Job", "-secrets")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "/etc/conveyor/kube-ops.py", "ensure-secrets"]
    return {s["name"]: s["keys"] for s in json.loads(container["args"][0])["secrets"]}


@pytest.mark.parametrize("name", ["default", "kubernetes-worker", "everything"])
def test_rendering_twice_gives_the_same_bytes(helm, name):
    """Nothing random in the templates (no randBytes, no lookup): `helm template`, as GitOps
    tools run it, never produces a new encryption key or password."""
    args = ["template", "rel", str(CHART), "-n", "conveyor", *value_args(VALUE_SETS[name])]
    first, second = helm(*args), helm(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout


def test_generated_secrets_are_made_once_in_the_cluster_by_the_secrets_job(render):
    objs = render()
    # No application or database Secret is rendered: the secrets Job makes them in the cluster.
    assert not find(objs, "Secret")
    spec = _secrets_job_spec(objs)
    assert spec["rel-conveyor-app"] == {
        "secret-key": {"env": "EXPLICIT_SECRET_KEY", "generate": "fernet"},
        "metrics-token": {"generate": "token:40"},
        "admin-password": {"env": "EXPLICIT_ADMIN_PASSWORD", "generate": "token:24"},
    }
    db = spec["rel-conveyor-database"]
    assert db["postgres-password"] == {"env": "EXPLICIT_POSTGRES_PASSWORD", "generate": "token:32"}
    assert db["database-url"]["template"] == (
        "postgresql+psycopg://conveyor:{postgres-password}@rel-conveyor-postgresql:5432/conveyor"
    )
    assert db["prefect-database-url"]["template"] == (
        "postgresql+asyncpg://conveyor:{postgres-password}@rel-conveyor-postgresql:5432/prefect"
    )
    job = one(objs, "Job", "-secrets")
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "rel-conveyor-secrets"
    assert "env" not in pod["containers"][0]  # nothing given in values
    role = one(objs, "Role", "-secrets")
    assert role["rules"][0]["resourceNames"] == ["rel-conveyor-app", "rel-conveyor-database"]
    assert role["rules"][0]["verbs"] == ["get", "patch"]
    assert {r["resources"][0] for r in role["rules"]} == {"secrets"}
    assert not find(objs, "ClusterRole")


def test_values_given_reach_the_secrets_job_through_a_hook_secret(render):
    objs = render(set=KNOWN_SECRETS)
    given = one(objs, "Secret", "-secrets-input")
    assert _hook(given) == ({"pre-install", "pre-upgrade"}, -30)
    assert "hook-succeeded" in given["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    decoded = {k: base64.b64decode(v).decode() for k, v in given["data"].items()}
    assert decoded == {
        "secret-key": KNOWN_SECRETS["conveyor.secretKey"],
        "admin-password": KNOWN_SECRETS["admin.password"],
        "postgres-password": KNOWN_SECRETS["postgresql.auth.password"],
    }
    env = one(objs, "Job", "-secrets")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in env} == {
        "EXPLICIT_SECRET_KEY": "secret-key",
        "EXPLICIT_ADMIN_PASSWORD": "admin-password",
        "EXPLICIT_POSTGRES_PASSWORD": "postgres-password",
    }


def test_existing_secrets_are_referenced_and_none_created(render):
    objs = render("existing-secrets.yaml")
    assert not find(objs, "Secret")
    web = one(objs, "Deployment", "-web")
    env = {e["name"]: e for e in web["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["CONVEYOR_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "conveyor-db-credentials",
        "key": "database-url",
    }
    assert env["CONVEYOR_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "conveyor-app-credentials",
        "key": "secret-key",
    }
    prefect = one(objs, "Deployment", "-prefect-server")
    penv = {e["name"]: e for e in prefect["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert penv["PREFECT_API_DATABASE_CONNECTION_URL"]["valueFrom"]["secretKeyRef"]["name"] == (
        "conveyor-db-credentials"
    )


def test_external_database_runs_no_postgresql(render):
    objs = render("external-db.yaml")
    assert not find(objs, "StatefulSet")
    assert not find(objs, "Service", "-postgresql")
    assert not find(objs, "NetworkPolicy", "-postgresql")
    migrations = one(objs, "Job", "-migrations")
    assert "initContainers" not in migrations["spec"]["template"]["spec"]


# Probes, security contexts, resources ----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_container_has_resources_and_a_locked_down_security_context(render, name):
    objs = render(*VALUE_SETS[name])
    pods = [(f"{o['kind']}/{o['metadata']['name']}", pod_spec(o)) for o in objs if pod_spec(o)]
    if name in ("kubernetes-worker", "everything"):
        manifest = base_job_template(objs)["job_configuration"]["job_manifest"]
        pods.append(("flow-run Job", manifest["spec"]["template"]["spec"]))
    assert pods
    for where, spec in pods:
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for c in containers(spec):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (where, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (where, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (where, c["name"])
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][part]), (where, c["name"], part)
            # A read-only root needs writable scratch space for Python, Prefect and dlt.
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            if c["name"] != "postgresql":
                assert "/tmp" in mounts, (where, c["name"])


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_long_running_containers_have_probes(render, name):
    objs = render(*VALUE_SETS[name])
    ready = set()
    for obj in objs:
        if obj["kind"] not in ("Deployment", "StatefulSet"):
            continue
        for c in obj["spec"]["template"]["spec"]["containers"]:
            assert "livenessProbe" in c, (obj["metadata"]["name"], c["name"])
            if c["name"] in ("web", "prefect-server", "postgresql"):
                assert "readinessProbe" in c, (obj["metadata"]["name"], c["name"])
                ready.add(c["name"])
    # Every value set runs the web app and Prefect's server (the database may be external).
    assert {"web", "prefect-server"} <= ready
    web = one(objs, "Deployment", "-web")["spec"]["template"]["spec"]["containers"][0]
    assert web["readinessProbe"]["httpGet"]["path"] == "/api/v1/health"
    # Liveness must not depend on the database, or an outage restarts every web pod.
    assert web["livenessProbe"]["httpGet"]["path"] == "/api/v1/health/live"
    worker = one(objs, "Deployment", "-worker")["spec"]["template"]["spec"]["containers"][0]
    assert "--with-healthcheck" in worker["args"]
    assert worker["livenessProbe"]["httpGet"] == {"path": "/health", "port": "health"}


def test_probe_ports_name_real_container_ports(render):
    checked = 0
    for name in VALUE_SETS:
        for obj in render(*VALUE_SETS[name]):
            if obj["kind"] not in ("Deployment", "StatefulSet"):
                continue
            for c in obj["spec"]["template"]["spec"]["containers"]:
                ports = {p["name"] for p in c.get("ports", [])} | {
                    p["containerPort"] for p in c.get("ports", [])
                }
                for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                    if "httpGet" in c.get(probe, {}):
                        assert c[probe]["httpGet"]["port"] in ports, (
                            obj["metadata"]["name"],
                            probe,
                        )
                        checked += 1
    # web (liveness, readiness), prefect-server and the worker's health check at the least,
    # in each of the value sets.
    assert checked >= 4 * len(VALUE_SETS)


# RBAC -------------------------------------------------------------------------------------------


def test_process_worker_has_no_rbac_and_no_token(render):
    objs = render()
    # The only identity with rights is the secrets hook Job's (pre-install/upgrade, deleted
    # once the hooks succeeded; see test_generated_secrets_are_made_once_in_the_cluster...).
    rbac = [o for o in objs if o["kind"] in ("Role", "RoleBinding")]
    assert [(o["kind"], o["metadata"]["name"]) for o in rbac] == [
        ("Role", "rel-conveyor-secrets"),
        ("RoleBinding", "rel-conveyor-secrets"),
    ]
    assert all(_hook(o) for o in rbac)
    assert not find(objs, "ClusterRole") and not find(objs, "ClusterRoleBinding")
    assert [o["metadata"]["name"] for o in find(objs, "ServiceAccount") if not _hook(o)] == [
        "rel-conveyor"
    ]
    specs = [(obj["metadata"]["name"], pod_spec(obj)) for obj in objs if pod_spec(obj)]
    assert len(specs) >= 4  # web, worker, prefect-server, postgresql (and hook Jobs)
    for name, spec in specs:
        expected = name == "rel-conveyor-secrets"
        assert spec.get("automountServiceAccountToken") is expected, name
    worker = one(objs, "Deployment", "-worker")["spec"]["template"]["spec"]
    assert worker["containers"][0]["command"] == ["prefect"]
    assert worker["containers"][0]["args"][:6] == [
        "worker",
        "start",
        "--pool",
        "default",
        "--type",
        "process",
    ]


def test_kubernetes_worker_gets_a_role_to_create_jobs_and_nothing_more(render):
    objs = render("kubernetes-worker.yaml")
    role = one(objs, "Role", "-worker")
    rules = role["rules"]
    jobs = [r for r in rules if "jobs" in r["resources"]]
    assert jobs and "create" in jobs[0]["verbs"] and jobs[0]["apiGroups"] == ["batch"]
    granted = {res for r in rules for res in r["resources"]}
    assert granted == {"jobs", "pods", "pods/log", "pods/status", "events"}
    assert not find(objs, "ClusterRole") and not find(objs, "ClusterRoleBinding")
    binding = one(objs, "RoleBinding", "-worker")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "rel-conveyor-worker", "namespace": "conveyor"}
    ]
    worker = one(objs, "Deployment", "-worker")["spec"]["template"]["spec"]
    assert worker["serviceAccountName"] == "rel-conveyor-worker"
    assert worker["automountServiceAccountToken"] is True
    # Only the worker gets a token; the flow-run pods get their own token-less identity.
    others = [
        (obj["metadata"]["name"], pod_spec(obj))
        for obj in objs
        if pod_spec(obj)
        and obj["metadata"]["name"] not in ("rel-conveyor-worker", "rel-conveyor-secrets")
    ]
    assert len(others) >= 3  # web, prefect-server, postgresql (and hook Jobs)
    for name, spec in others:
        assert spec.get("automountServiceAccountToken") is False, name
    flow_sa = one(objs, "ServiceAccount", "-flow-run")
    assert flow_sa["automountServiceAccountToken"] is False
    env = {e["name"]: e.get("value") for e in worker["containers"][0]["env"]}
    assert env["PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES"] == "conveyor"
    assert env["PREFECT_KUBERNETES_CLUSTER_UID"] == "conveyor-rel"  # no ClusterRole needed


def test_kubernetes_work_pool_runs_flows_in_the_conveyor_image(render):
    objs = render(
        "kubernetes-worker.yaml",
        set={"image.repository": "reg.example/conveyor", "image.tag": "9.9"},
    )
    template = base_job_template(objs)
    config = template["job_configuration"]
    assert config["env"] == "{{ env }}" and config["command"] == "{{ command }}"
    assert template["variables"]["properties"]["image"]["default"] == "reg.example/conveyor:9.9"
    assert template["variables"]["properties"]["namespace"]["default"] == "conveyor"
    pod = config["job_manifest"]["spec"]["template"]
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "flow-run"
    assert pod["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "prefect-worker"  # not Helm
    spec = pod["spec"]
    assert spec["serviceAccountName"] == "rel-conveyor-flow-run"
    container = spec["containers"][0]
    assert container["name"] == "prefect-job"
    assert container["command"] == ["/usr/bin/env"] and container["args"] == "{{ command }}"
    env = {e["name"] for e in container["env"]}
    assert {"CONVEYOR_DATABASE_URL", "CONVEYOR_SECRET_KEY", "PREFECT_API_URL"} <= env
    worker = one(objs, "Deployment", "-worker")["spec"]["template"]
    args = worker["spec"]["containers"][0]["args"]
    assert args[args.index("--base-job-template") + 1] == "/etc/conveyor/base-job-template.json"
    assert args.count("--work-queue") == 2
    assert worker["spec"]["initContainers"][0]["name"] == "sync-work-pool"
    assert (
        worker["spec"]["containers"][0]["image"] == "prefecthq/prefect:3.9.1-python3.11-kubernetes"
    )
    assert "checksum/base-job-template" in worker["metadata"]["annotations"]


# Network policies, names, selectors, images -----------------------------------------------------


def _matches(selector, labels):
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In"
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def _pod_labels(objs):
    out = {}
    for obj in objs:
        if pod_spec(obj):
            out[obj["metadata"]["name"]] = obj["spec"]["template"]["metadata"]["labels"]
    return out


def test_network_policies_web_db_and_prefect(render):
    objs = render("kubernetes-worker.yaml")
    pods = _pod_labels(objs)
    flow_run = base_job_template(objs)["job_configuration"]["job_manifest"]["spec"]["template"]
    pods["flow-run"] = flow_run["metadata"]["labels"]

    def allowed(policy_suffix):
        np = one(objs, "NetworkPolicy", policy_suffix)
        rule = np["spec"]["ingress"][0]
        return {
            name
            for name, labels in pods.items()
            if any(_matches(p["podSelector"], labels) for p in rule["from"])
        }

    assert allowed("-postgresql") == {
        "rel-conveyor-web",
        "rel-conveyor-reconciler",
        "rel-conveyor-worker",
        "flow-run",
        "rel-conveyor-prefect-server",
        "rel-conveyor-migrations",
        "rel-conveyor-prefect-db-upgrade",
        "rel-conveyor-lake-init",  # creates the default DuckLake's catalog database
    } | ({"rel-conveyor-admin-bootstrap"} if "rel-conveyor-admin-bootstrap" in pods else set())
    assert allowed("-prefect-server") == {
        "rel-conveyor-web",
        "rel-conveyor-reconciler",
        "rel-conveyor-worker",
        "flow-run",
    }
    deny = one(objs, "NetworkPolicy", "-deny-ingress")
    assert deny["spec"]["policyTypes"] == ["Ingress"] and "ingress" not in deny["spec"]
    denied = {n for n, labels in pods.items() if _matches(deny["spec"]["podSelector"], labels)}
    assert {"rel-conveyor-reconciler", "rel-conveyor-worker", "flow-run"} <= denied
    assert "rel-conveyor-web" not in denied
    # Every policy selects pods of this release only.
    for np in find(objs, "NetworkPolicy"):
        assert not _matches(np["spec"]["podSelector"], {"app.kubernetes.io/instance": "other"})


def test_ingress_with_tls_and_prefect_dashboard(render):
    objs = render("ingress.yaml")
    ing = one(objs, "Ingress")
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["spec"]["tls"] == [
        {"hosts": ["conveyor.example.com", "prefect.example.com"], "secretName": "rel-conveyor-tls"}
    ]
    backends = {
        r["host"]: r["http"]["paths"][0]["backend"]["service"]["name"] for r in ing["spec"]["rules"]
    }
    assert backends == {
        "conveyor.example.com": "rel-conveyor-web",
        "prefect.example.com": "rel-conveyor-prefect-server",
    }
    prefect = one(objs, "Deployment", "-prefect-server")["spec"]["template"]["spec"]["containers"][
        0
    ]
    env = {e["name"]: e.get("value") for e in prefect["env"]}
    assert env["PREFECT_UI_API_URL"] == "https://prefect.example.com/api"
    web = one(objs, "Deployment", "-web")["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"]: e.get("value") for e in web["env"]}[
        "CONVEYOR_SESSION_SECURE_COOKIE"
    ] == "true"
    np = one(objs, "NetworkPolicy", "-prefect-server")
    assert np["spec"]["ingress"][1]["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "ingress-nginx"
    }


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_services_select_pods_and_names_are_dns_labels(render, name):
    objs = render(*VALUE_SETS[name], release="a-release-name-that-is-quite-long-for-testing-0123")
    pods = _pod_labels(objs)
    kinds = {obj["kind"] for obj in objs}
    assert {"Service", "Deployment"} <= kinds, kinds  # both checks below do run
    for obj in objs:
        name_ = obj["metadata"]["name"]
        assert len(name_) <= 63 and DNS_LABEL.match(name_), name_
        for value in obj["metadata"].get("labels", {}).values():
            assert len(value) <= 63, (name_, value)
        if obj["kind"] == "Service":
            sel = obj["spec"]["selector"]
            assert any(_matches({"matchLabels": sel}, labels) for labels in pods.values()), name_
        if obj["kind"] in ("Deployment", "StatefulSet"):
            assert _matches(obj["spec"]["selector"], obj["spec"]["template"]["metadata"]["labels"])


def test_prefect_api_url_points_at_the_prefect_service(render):
    objs = render()
    svc = one(objs, "Service", "-prefect-server")
    port = svc["spec"]["ports"][0]["port"]
    users = set()
    for obj in objs:
        spec = pod_spec(obj)
        for c in containers(spec) if spec else []:
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            if "PREFECT_API_URL" in env:
                assert env["PREFECT_API_URL"] == f"http://{svc['metadata']['name']}:{port}/api"
                users.add(obj["metadata"]["name"])
    # The web app (Run now, health) and the worker talk to Prefect at the least.
    assert {"rel-conveyor-web", "rel-conveyor-worker"} <= users, users


def test_all_images_are_configurable(render):
    objs = render(
        "kubernetes-worker.yaml",
        set={
            "image.repository": "reg.example/conveyor",
            "image.tag": "1.2.3",
            "postgresql.image.repository": "reg.example/postgres",
            "postgresql.image.tag": "16.9",
            "worker.kubernetes.image.repository": "reg.example/prefect",
            "worker.kubernetes.image.tag": "3.9.1-k8s",
        },
    )
    images = {c["image"] for o in objs if pod_spec(o) for c in containers(pod_spec(o))}
    assert images == {
        "reg.example/conveyor:1.2.3",
        "reg.example/postgres:16.9",
        "reg.example/prefect:3.9.1-k8s",
    }
    objs = render("everything.yaml")
    images = {c["image"] for o in objs if pod_spec(o) for c in containers(pod_spec(o))}
    digest = "registry.example.com/data/conveyor@sha256:" + "0123456789abcdef" * 4
    assert digest in images


def test_restricted_egress_is_opt_in(render):
    assert not find(render(), "NetworkPolicy", "-restricted-egress")
    np = one(render("everything.yaml"), "NetworkPolicy", "-restricted-egress")
    cidrs = [
        p["ipBlock"]["cidr"]
        for rule in np["spec"]["egress"]
        for p in rule.get("to", [])
        if "ipBlock" in p
    ]
    assert cidrs == ["10.20.0.0/16"]


def test_web_pdb_uses_policy_v1_when_the_cluster_has_it(helm):
    from conftest import parse_manifests

    new = parse_manifests(helm("template", "r", str(CHART), "--api-versions", "policy/v1").stdout)
    assert one(new, "PodDisruptionBudget")["apiVersion"] == "policy/v1"
    single = parse_manifests(helm("template", "r", str(CHART), "--set", "web.replicas=1").stdout)
    assert not find(single, "PodDisruptionBudget")
