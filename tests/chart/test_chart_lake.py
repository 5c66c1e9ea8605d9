"""The chart's default destination when flow runs leave one machine: a DuckLake (issue 20).

Rendered with the real helm: with the kubernetes worker, a hook Job makes the catalog's own
database and role on the chart's PostgreSQL and the destination, the catalog URL only ever in a
Secret, the data on a ReadWriteMany volume mounted in the web pods and every flow-run Job (or on
S3 with the keys from a Secret); every Conveyor container is told the pool is kubernetes; the
process worker's install is unchanged; an install with nowhere shared for the data is refused
with the reason. Against the loopback API server: the PVC and the hooks are accepted."""

from __future__ import annotations

import json

import pytest

from conftest import CHART, base_job_template, containers, find, one, parse_manifests, pod_spec

K8S_VOLUME = "kubernetes-worker.yaml"  # the chart makes a RWX PVC (storageClass nfs-client)
S3 = "everything.yaml"  # external database, catalog URL and S3 keys from existing Secrets


def _env(container):
    return {e["name"]: e for e in container.get("env", [])}


def _conveyor_containers(objs):
    """(name, container) of every container that runs Conveyor itself, and the flow-run Job's."""
    out = []
    for obj in objs:
        spec = pod_spec(obj)
        if spec:
            for c in containers(spec):
                if "CONVEYOR_DATABASE_URL" in _env(c):
                    out.append((obj["metadata"]["name"], c))
    manifest = base_job_template(objs)["job_configuration"]["job_manifest"]
    out += [("flow-run", c) for c in manifest["spec"]["template"]["spec"]["containers"]]
    return out


def _ref(env, name):
    return env[name]["valueFrom"]["secretKeyRef"]


def _lake_job(objs):
    job = one(objs, "Job", "-lake-init")
    return job, _env(job["spec"]["template"]["spec"]["containers"][0])


def _secret_spec(objs):
    job = one(objs, "Job", "-secrets")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    return {s["name"]: s["keys"] for s in json.loads(args)["secrets"]}


def test_kubernetes_mode_makes_the_lake_database_and_destination_in_a_hook(render):
    objs = render(K8S_VOLUME)
    job, env = _lake_job(objs)
    weights = {
        j["metadata"]["name"]: int(j["metadata"]["annotations"]["helm.sh/hook-weight"])
        for j in find(objs, "Job")
        if "helm.sh/hook" in j["metadata"].get("annotations", {})
    }
    # After both migrations (the destination is a row in Conveyor's database), before the seed.
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    assert weights["rel-conveyor-migrations"] < weights["rel-conveyor-lake-init"] < 10
    pod = job["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["name"] == "wait-for-database"
    assert pod["containers"][0]["command"] == ["python", "/etc/conveyor/lake-init.py"]
    script = one(objs, "ConfigMap", "-lake-init")["data"]["lake-init.py"]
    assert script == (CHART / "files" / "lake-init.py").read_text()
    # The catalog: its own database and role on the chart's PostgreSQL, never Conveyor's/Prefect's.
    assert env["LAKE_CREATE_DATABASE"]["value"] == "1"
    assert env["LAKE_DATABASE"]["value"] == "lake" and env["LAKE_USERNAME"]["value"] == "lake"
    assert env["LAKE_PRIVATE_DATABASES"]["value"] == "conveyor,prefect"
    assert _ref(env, "LAKE_CATALOG_URL") == {"name": "rel-conveyor-lake", "key": "catalog-url"}
    assert _ref(env, "LAKE_PASSWORD") == {"name": "rel-conveyor-lake", "key": "password"}
    assert env["LAKE_DATA_PATH"]["value"] == "/lake"
    assert env["LAKE_DESTINATION_NAME"]["value"] == "lake"
    # Its password is made once in the cluster by the secrets Job, the URL built from it there.
    spec = _secret_spec(objs)
    assert spec["rel-conveyor-lake"] == {
        "password": {"generate": "token:32"},
        "catalog-url": {
            "template": "postgresql://lake:{password}@rel-conveyor-postgresql:5432/lake"
        },
    }
    role = one(objs, "Role", "-secrets")
    assert "rel-conveyor-lake" in role["rules"][0]["resourceNames"]
    # The Job may reach PostgreSQL; nothing may reach it.
    pg = one(objs, "NetworkPolicy", "-postgresql")
    components = pg["spec"]["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][1]
    assert "lake-init" in components["values"]
    deny = one(objs, "NetworkPolicy", "-deny-ingress")
    assert "lake-init" in deny["spec"]["podSelector"]["matchExpressions"][1]["values"]


def test_the_catalog_url_is_never_a_plain_value(render):
    for name in (K8S_VOLUME, S3):
        objs = render(name)
        for obj in objs:
            if obj["kind"] == "Secret":
                continue
            text = json.dumps(obj)
            # Only the secrets Job's template of it (a {password} placeholder) is outside a Secret.
            assert "postgresql://lake:" not in text.replace("postgresql://lake:{password}@", ""), (
                obj["metadata"]["name"]
            )
        for _, c in _conveyor_containers(objs):
            for var, e in _env(c).items():
                secret = any(s in var for s in ("URL", "PASSWORD", "SECRET"))
                if var.startswith("LAKE_") and secret and var != "LAKE_S3_ENDPOINT_URL":
                    assert "secretKeyRef" in e["valueFrom"], (name, var)


def test_the_lake_volume_is_shared_by_the_web_pods_and_every_flow_run_job(render):
    objs = render(K8S_VOLUME)
    pvc = one(objs, "PersistentVolumeClaim", "-lake")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["spec"]["storageClassName"] == "nfs-client"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

    def lake_mounts(spec):
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        mounts = [m for c in spec["containers"] for m in c.get("volumeMounts", [])]
        return [
            (m["mountPath"], volumes[m["name"]]["persistentVolumeClaim"]["claimName"])
            for m in mounts
            if "persistentVolumeClaim" in volumes[m["name"]]
        ]

    flow_run = base_job_template(objs)["job_configuration"]["job_manifest"]["spec"]["template"]
    assert lake_mounts(flow_run["spec"]) == [("/lake", "rel-conveyor-lake")]
    web = one(objs, "Deployment", "-web")["spec"]["template"]["spec"]
    assert lake_mounts(web) == [("/lake", "rel-conveyor-lake")]  # its check of the destination
    # The kubernetes worker only submits Jobs: no data there.
    worker = one(objs, "Deployment", "-worker")["spec"]["template"]["spec"]
    assert lake_mounts(worker) == []
    # The folder is an allowed root wherever Conveyor runs (save-time checks, runs, checks).
    for name, c in _conveyor_containers(objs):
        assert _env(c)["CONVEYOR_ALLOWED_PATHS"]["value"] == "/lake", name
    # An existing claim instead: no PVC made, that claim mounted.
    objs = render(K8S_VOLUME, set={"lake.volume.existingClaim": "shared-lake"})
    assert not find(objs, "PersistentVolumeClaim")
    flow_run = base_job_template(objs)["job_configuration"]["job_manifest"]["spec"]["template"]
    assert lake_mounts(flow_run["spec"]) == [("/lake", "shared-lake")]


def test_s3_lake_keys_come_from_their_secret_and_the_web_app_may_reach_the_endpoint(render):
    objs = render(S3)
    _, env = _lake_job(objs)
    assert env["LAKE_DATA_PATH"]["value"] == "s3://conveyor-lake/prod"
    assert env["LAKE_S3_ENDPOINT_URL"]["value"] == "https://minio.storage.svc:9000"
    assert env["LAKE_S3_REGION"]["value"] == "eu-west-1"
    assert _ref(env, "LAKE_S3_ACCESS_KEY_ID") == {"name": "lake-s3", "key": "access-key-id"}
    assert _ref(env, "LAKE_S3_SECRET_ACCESS_KEY") == {"name": "lake-s3", "key": "secret-access-key"}
    assert _ref(env, "LAKE_CATALOG_URL") == {"name": "lake-catalog", "key": "catalog-url"}
    # An external database: the chart makes no database, role or Secret for the catalog.
    assert "LAKE_CREATE_DATABASE" not in env and "LAKE_PASSWORD" not in env
    assert not any("lake" in name for name in _secret_spec(objs))
    assert not find(objs, "PersistentVolumeClaim")
    for name, c in _conveyor_containers(objs):
        assert "CONVEYOR_ALLOWED_PATHS" not in _env(c), name
        assert not any(m["name"] == "lake" for m in c.get("volumeMounts", [])), name
    # Restricted egress: the web app (which checks the destination) may reach the endpoint.
    np = one(objs, "NetworkPolicy", "-lake-egress")
    assert np["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "web"
    assert np["spec"]["egress"] == [
        {"to": [{"ipBlock": {"cidr": "10.30.0.0/16"}}], "ports": [{"port": 443, "protocol": "TCP"}]}
    ]
    restricted = one(objs, "NetworkPolicy", "-restricted-egress")
    assert "lake-init" in restricted["spec"]["podSelector"]["matchExpressions"][1]["values"]


def test_every_conveyor_container_knows_the_pool_is_kubernetes(render):
    for name in (K8S_VOLUME, S3):
        found = _conveyor_containers(render(name))
        names = {n for n, _ in found}
        # web, reconciler, the hook Jobs (migrations, admin, seed, lake-init) and the flow runs:
        # wherever `conveyor doctor` / `deployments validate` / a save can run.
        assert {"flow-run"} | {n for n in names if n.endswith(("-web", "-reconciler"))} <= names
        assert any(n.endswith("-lake-init") for n in names)
        for n, c in found:
            assert _env(c)["CONVEYOR_WORK_POOL_TYPE"]["value"] == "kubernetes", (name, n)


def test_process_mode_is_unchanged(helm, render):
    default = render()
    for obj in default:
        assert "lake" not in obj["metadata"]["name"].removeprefix("rel-conveyor-"), obj
    assert set(_secret_spec(default)) == {"rel-conveyor-app", "rel-conveyor-database"}
    worker = one(default, "Deployment", "-worker")["spec"]["template"]["spec"]
    for c in containers(worker):
        assert "CONVEYOR_ALLOWED_PATHS" not in _env(c)
        assert _env(c)["CONVEYOR_WORK_POOL_TYPE"]["value"] == "process"
    # Byte for byte what lake.enabled=false renders: the lake values change nothing here.
    args = ["template", "rel", str(CHART), "-n", "conveyor"]
    auto, off = helm(*args), helm(*args, "--set", "lake.enabled=false")
    assert auto.returncode == 0 and auto.stdout == off.stdout
    # Asked for with process workers (several pods): their worker pods mount the lake.
    objs = render(set={"lake.enabled": True, "lake.volume.existingClaim": "shared-lake"})
    worker = one(objs, "Deployment", "-worker")["spec"]["template"]["spec"]
    assert {"name": "lake", "mountPath": "/lake"} in worker["containers"][0]["volumeMounts"]
    assert {"name": "lake", "persistentVolumeClaim": {"claimName": "shared-lake"}} in (
        worker["volumes"]
    )
    assert one(objs, "Job", "-lake-init")


REFUSED = [
    (
        {"worker.type": "kubernetes"},
        "lake: the default destination (a DuckLake, on with worker.type=kubernetes or "
        "lake.enabled=true) needs a place shared by every flow-run pod for its data",
    ),
    (
        {"lake.enabled": True},
        "set lake.s3.dataPath=s3://bucket/prefix with lake.s3.existingSecret, or a ReadWriteMany",
    ),
    (
        {
            "worker.type": "kubernetes",
            "lake.s3.dataPath": "s3://bkt/p",
            "lake.s3.existingSecret": "s3",
            "lake.volume.existingClaim": "v",
        },
        "not both",
    ),
    (
        {"worker.type": "kubernetes", "lake.s3.dataPath": "s3://bkt/p"},
        "lake.s3.existingSecret is required with lake.s3.dataPath",
    ),
    (
        {
            "worker.type": "kubernetes",
            "lake.volume.existingClaim": "v",
            "postgresql.enabled": False,
            "database.existingSecret": "db",
        },
        "lake.catalog.existingSecret is required with an external PostgreSQL",
    ),
    (
        {
            "worker.type": "kubernetes",
            "lake.volume.existingClaim": "v",
            "lake.catalog.database": "prefect",
        },
        'lake.catalog.database "prefect" is taken',
    ),
    (
        {
            "worker.type": "kubernetes",
            "lake.volume.existingClaim": "v",
            "lake.catalog.username": "conveyor",
        },
        "lake.catalog.username must differ from postgresql.auth.username",
    ),
]


def _sets(values):
    args = []
    for key, value in values.items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    return args


@pytest.mark.parametrize(("values", "message"), REFUSED, ids=[m[:40] for _, m in REFUSED])
def test_a_lake_with_nowhere_shared_or_a_taken_database_is_refused(helm, values, message):
    proc = helm("template", "r", str(CHART), *_sets(values))
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr
    lint = helm("lint", "--strict", str(CHART), *_sets(values))
    assert message in lint.stdout + lint.stderr


BAD = [
    ({"lake.enabled": "sometimes"}, "/lake/enabled"),
    ({"lake.s3.dataPath": "http://bucket/prefix"}, "/lake/s3/dataPath"),
    ({"lake.volume.mountPath": "/data"}, "/lake/volume/mountPath"),
    ({"lake.volume.mountPath": "lake"}, "/lake/volume/mountPath"),
    ({"lake.catalog.database": "lake; DROP"}, "/lake/catalog/database"),
    ({"lake.s3.existingSecret": "Not A Name"}, "/lake/s3/existingSecret"),
    ({"lake.bogus": 1}, "additional properties 'bogus'"),
]


@pytest.mark.parametrize(("values", "where"), BAD, ids=[str(v) for v, _ in BAD])
def test_schema_rejects_wrong_lake_values(helm, values, where):
    proc = helm("template", "r", str(CHART), *_sets(values))
    assert proc.returncode != 0 and where in proc.stderr, proc.stderr


@pytest.mark.k8s
def test_lake_objects_are_accepted_by_the_api_server(helm, kube, namespace):
    def run(*args):
        proc = helm(*args, "--kubeconfig", str(kube.kubeconfig), "--namespace", namespace)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    values = ["-f", str(CHART.parent.parent / "tests" / "chart" / "values" / K8S_VOLUME)]
    run("install", "lake", str(CHART), "--create-namespace", "--no-hooks", *values)
    pvc = next(
        o
        for o in parse_manifests(run("get", "manifest", "lake"))
        if o["kind"] == ("PersistentVolumeClaim")
    )
    stored = kube.get(pvc, namespace).json()
    assert stored["spec"]["accessModes"] == ["ReadWriteMany"]
    hooks = parse_manifests(run("get", "hooks", "lake"))
    lake_hooks = [h for h in hooks if "lake-init" in h["metadata"]["name"]]
    assert sorted(h["kind"] for h in lake_hooks) == ["ConfigMap", "Job"]
    for obj in lake_hooks:
        resp = kube.create(obj, namespace, dry_run=True)
        assert resp.status_code == 201, f"{obj['kind']}/{obj['metadata']['name']}: {resp.text}"
    # The flow-run Job with the lake volume, as the worker would submit it.
    cm = next(
        o
        for o in parse_manifests(run("get", "manifest", "lake"))
        if o["metadata"]["name"].endswith("-base-job-template")
    )
    job = json.loads(cm["data"]["base-job-template.json"])["job_configuration"]["job_manifest"]
    assert any(v["name"] == "lake" for v in job["spec"]["template"]["spec"]["volumes"])
    # The data outlives the release.
    run("uninstall", "lake", "--wait", "--timeout", "60s")
    assert kube.get(pvc, namespace).status_code == 200
