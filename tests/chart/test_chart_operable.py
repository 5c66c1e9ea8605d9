"""The locked-down, operable chart (issue 20), rendered with the real helm: Prefect API auth
wired everywhere through secretKeyRef, /metrics behind a token with an optional
ServiceMonitor, HPAs and PDBs, the reconciler's heartbeat probe, Prefect's migrations as a
hook, images pinned by digest, and finished-Job cleanup for clusters before 1.21."""

from __future__ import annotations

from conftest import CHART, base_job_template, containers, find, one, parse_manifests, pod_spec

AUTH = {"prefectAuth.existingSecret": "prefect-auth", "prefectAuth.key": "basic"}
DIGEST = "sha256:" + "ab" * 32
AUTH_REF = {"secretKeyRef": {"name": "prefect-auth", "key": "basic"}}


def _env(container):
    return {e["name"]: e for e in container.get("env", [])}


def _all_containers(objs, flow_run=False):
    out = []
    for obj in objs:
        spec = pod_spec(obj) or (
            obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            if obj["kind"] == "CronJob"
            else None
        )
        if spec:
            out += [(obj["metadata"]["name"], c) for c in containers(spec)]
    if flow_run:
        manifest = base_job_template(objs)["job_configuration"]["job_manifest"]
        out += [("flow-run", c) for c in manifest["spec"]["template"]["spec"]["containers"]]
    return out


def test_prefect_auth_reaches_every_prefect_client_and_the_server(render):
    objs = render("kubernetes-worker.yaml", set=AUTH)
    server = one(objs, "Deployment", "-prefect-server")["spec"]["template"]["spec"]
    env = _env(server["containers"][0])
    assert env["PREFECT_SERVER_API_AUTH_STRING"]["valueFrom"] == AUTH_REF
    clients = {
        name: c for name, c in _all_containers(objs, flow_run=True) if "PREFECT_API_URL" in _env(c)
    }
    # web, reconciler, the kubernetes worker and its pool-sync init container, the hook Jobs
    # that talk to Prefect, and the flow-run Job template.
    assert {"rel-conveyor-web", "rel-conveyor-reconciler", "rel-conveyor-worker", "flow-run"} <= (
        set(clients)
    )
    for name, c in _all_containers(objs, flow_run=True):
        if "PREFECT_API_URL" in _env(c):
            assert _env(c)["PREFECT_API_AUTH_STRING"]["valueFrom"] == AUTH_REF, (name, c["name"])
    # The kubernetes worker puts a secretKeyRef, not the string, into the Jobs it creates.
    worker = _env(one(objs, "Deployment", "-worker")["spec"]["template"]["spec"]["containers"][0])
    prefix = "PREFECT_INTEGRATIONS_KUBERNETES_WORKER_API_AUTH_STRING_SECRET_"
    assert worker[prefix + "NAME"]["value"] == "prefect-auth"
    assert worker[prefix + "KEY"]["value"] == "basic"
    # Without the value, nothing mentions it.
    for _, c in _all_containers(render("kubernetes-worker.yaml"), flow_run=True):
        assert not {n for n in _env(c) if "AUTH_STRING" in n}


def test_process_worker_gets_the_auth_string_too(render):
    objs = render(set=AUTH)
    worker = one(objs, "Deployment", "-worker")["spec"]["template"]["spec"]["containers"][0]
    assert _env(worker)["PREFECT_API_AUTH_STRING"]["valueFrom"] == AUTH_REF


def test_metrics_need_the_token_and_the_service_monitor_is_opt_in(helm, render):
    web = one(render(), "Deployment", "-web")["spec"]["template"]["spec"]["containers"][0]
    assert _env(web)["CONVEYOR_METRICS_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "rel-conveyor-app",
        "key": "metrics-token",
        "optional": True,
    }
    assert not find(render(), "ServiceMonitor")
    # Enabled but the cluster has no prometheus-operator: not rendered (install would fail).
    assert not find(render(set={"metrics.serviceMonitor.enabled": True}), "ServiceMonitor")
    args = ["template", "rel", str(CHART), "-n", "conveyor", "--set"]
    proc = helm(
        *args,
        "metrics.serviceMonitor.enabled=true",
        "--api-versions",
        "monitoring.coreos.com/v1/ServiceMonitor",
    )
    assert proc.returncode == 0, proc.stderr
    sm = one(parse_manifests(proc.stdout), "ServiceMonitor")
    endpoint = sm["spec"]["endpoints"][0]
    assert endpoint["path"] == "/metrics" and endpoint["port"] == "http"
    assert endpoint["bearerTokenSecret"] == {"name": "rel-conveyor-app", "key": "metrics-token"}
    assert sm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "web"
    forced = render(
        set={"metrics.serviceMonitor.enabled": True, "metrics.serviceMonitor.assumeCrd": True}
    )
    assert one(forced, "ServiceMonitor")["metadata"]["name"] == "rel-conveyor-web"


def test_ingress_routes_metrics_only_to_the_token_checking_web_app(render):
    objs = render("ingress.yaml")
    backends = {
        p["backend"]["service"]["name"]
        for rule in one(objs, "Ingress")["spec"]["rules"]
        for p in rule["http"]["paths"]
    }
    assert backends == {"rel-conveyor-web", "rel-conveyor-prefect-server"}
    web = one(objs, "Deployment", "-web")["spec"]["template"]["spec"]["containers"][0]
    assert "CONVEYOR_METRICS_TOKEN" in _env(web)


def test_autoscalers_replace_replicas_and_workers_get_a_pdb(render):
    plain = render(set={"worker.replicas": 2})
    assert one(plain, "PodDisruptionBudget", "-worker")["spec"]["maxUnavailable"] == 1
    assert not find(render(), "PodDisruptionBudget", "-worker")  # one worker pod
    assert not find(plain, "HorizontalPodAutoscaler")
    objs = render(
        set={
            "web.autoscaling": {
                "enabled": True,
                "minReplicas": 2,
                "maxReplicas": 8,
                "targetCPUUtilizationPercentage": 60,
            },
            "worker.autoscaling": {
                "enabled": True,
                "minReplicas": 1,
                "maxReplicas": 5,
                "targetCPUUtilizationPercentage": 80,
            },
        }
    )
    for component, low, high, cpu in (("web", 2, 8, 60), ("worker", 1, 5, 80)):
        deployment = one(objs, "Deployment", f"-{component}")
        assert "replicas" not in deployment["spec"]  # the HPA owns it
        hpa = one(objs, "HorizontalPodAutoscaler", f"-{component}")
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": deployment["metadata"]["name"],
        }
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (low, high)
        target = hpa["spec"]["metrics"][0]["resource"]
        assert target == {
            "name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": cpu},
        }
        assert find(objs, "PodDisruptionBudget", f"-{component}")


def test_reconciler_liveness_is_its_loops_heartbeat(render):
    rec = one(render(), "Deployment", "-reconciler")["spec"]["template"]["spec"]["containers"][0]
    assert rec["livenessProbe"]["exec"]["command"] == [
        "conveyor",
        "reconcile",
        "--check-heartbeat",
        "--max-age",
        "600",
    ]


def test_prefect_migrates_in_a_hook_job_not_at_server_start(render):
    objs = render()
    server = one(objs, "Deployment", "-prefect-server")["spec"]["template"]["spec"]
    assert (
        _env(server["containers"][0])["PREFECT_API_DATABASE_MIGRATE_ON_START"]["value"] == "false"
    )
    job = one(objs, "Job", "-prefect-db-upgrade")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["prefect"]
    assert container["args"] == ["server", "database", "upgrade", "--yes"]
    assert _env(container)["PREFECT_API_DATABASE_CONNECTION_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "rel-conveyor-database",
        "key": "prefect-database-url",
    }
    # Turned off: the server migrates itself again, and no Job.
    off = render(set={"prefectServer.migrations.enabled": False})
    server = one(off, "Deployment", "-prefect-server")["spec"]["template"]["spec"]
    assert _env(server["containers"][0])["PREFECT_API_DATABASE_MIGRATE_ON_START"]["value"] == "true"
    assert not find(off, "Job", "-prefect-db-upgrade")


def test_every_image_is_pinned_by_digest_when_digests_are_given(render):
    sets = {
        "image.digest": DIGEST,
        "postgresql.image.digest": DIGEST,
        "worker.kubernetes.image.digest": DIGEST,
        "prefectServer.image": {
            "repository": "prefecthq/prefect",
            "tag": "3-python3.11",
            "digest": DIGEST,
        },
        "jobCleanup.enabled": True,
    }
    objs = render("kubernetes-worker.yaml", set=sets)
    images = {c["image"] for _, c in _all_containers(objs)}
    images.add(base_job_template(objs)["variables"]["properties"]["image"]["default"])
    assert {i.split("@")[0] for i in images} == {
        "conveyor",
        "postgres",
        "prefecthq/prefect",
    }
    for image in images:
        assert image.endswith("@" + DIGEST), image
    # Tags when no digest is given.
    tagged = {c["image"] for _, c in _all_containers(render("kubernetes-worker.yaml"))}
    assert "postgres:16.10-bookworm" in tagged and not any("@" in i for i in tagged)


def test_finished_jobs_are_cleaned_before_kubernetes_1_21(helm, render):
    def kinds(*extra):
        proc = helm(
            "template",
            "rel",
            str(CHART),
            "-n",
            "conveyor",
            "--set",
            "worker.type=kubernetes",
            "--set",
            "lake.volume.existingClaim=lake",
            *extra,
        )
        assert proc.returncode == 0, proc.stderr
        return parse_manifests(proc.stdout)

    old = kinds("--kube-version", "1.20.2")
    cron = one(old, "CronJob", "-job-cleanup")
    assert cron["apiVersion"] == "batch/v1beta1"  # what 1.20 serves
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["args"] == [
        "--selector",
        "app.kubernetes.io/instance=rel,app.kubernetes.io/component=flow-run",
        "--older-than",
        "3600",
    ]
    role = one(old, "Role", "-job-cleanup")
    assert role["rules"] == [
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list", "delete"]}
    ]
    # 1.21 and later honour ttlSecondsAfterFinished: no CronJob, unless asked for.
    assert not find(kinds("--kube-version", "1.21.0"), "CronJob")
    forced = one(kinds("--kube-version", "1.30.0", "--set", "jobCleanup.enabled=true"), "CronJob")
    assert forced["apiVersion"] == "batch/v1"
    assert not find(render(set={"jobCleanup.enabled": True}), "CronJob")  # process worker
