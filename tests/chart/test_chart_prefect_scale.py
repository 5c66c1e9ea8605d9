"""Prefect scaled out as prefect-helm does it: API replicas behind the Service (--no-services),
the background services in their own Deployment, Redis messaging (prefect-redis), PostgreSQL
required. Rendered with the real helm; installed on the loopback API server (k8s-marked)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import CHART, containers, find, one, parse_manifests, pod_spec, value_args

REDIS_ENV = {
    "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
    "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
    "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
    "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
}


def _main(obj):
    return obj["spec"]["template"]["spec"]["containers"][0]


def _env(container):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_one_replica_keeps_the_services_in_the_server_and_needs_no_redis(render):
    objs = render()
    server = one(objs, "Deployment", "-prefect-server")
    assert server["spec"]["replicas"] == 1
    assert server["spec"]["strategy"] == {"type": "Recreate"}
    assert "--no-services" not in _main(server)["args"]
    assert not set(REDIS_ENV) & set(_env(_main(server)))
    assert not find(objs, "Deployment", "-prefect-services")
    assert not find(objs, "Deployment", "-prefect-redis")
    assert not find(objs, "PodDisruptionBudget", "-prefect-server")


def test_replicated_api_behind_the_service_with_services_on_their_own(render):
    objs = render("prefect-replicated.yaml")
    server = one(objs, "Deployment", "-prefect-server")
    services = one(objs, "Deployment", "-prefect-services")
    assert server["spec"]["replicas"] == 3
    api = _main(server)
    assert api["command"] == ["prefect"] and api["args"][:2] == ["server", "start"]
    assert "--no-services" in api["args"]
    # API pods roll one at a time; the one services pod is never two.
    assert server["spec"]["strategy"]["type"] == "RollingUpdate"
    assert services["spec"]["replicas"] == 1
    assert services["spec"]["strategy"] == {"type": "Recreate"}
    svc = _main(services)
    assert (svc["command"], svc["args"]) == (["prefect"], ["server", "services", "start"])

    # Both talk to the same database and the same Redis, through prefect-redis.
    redis_url = "redis://rel-conveyor-prefect-redis:6379/0"
    for container in (api, svc):
        env = _env(container)
        assert {k: env.get(k) for k in REDIS_ENV} == REDIS_ENV, container["name"]
        assert env["PREFECT_REDIS_MESSAGING_URL"] == redis_url
        assert env["PREFECT_API_DATABASE_CONNECTION_URL"] == {
            "secretKeyRef": {"name": "rel-conveyor-database", "key": "prefect-database-url"}
        }
        assert env["PREFECT_API_DATABASE_MIGRATE_ON_START"] == "false"  # the hook Job migrates
    assert "livenessProbe" in svc and "ports" not in svc

    # The Service reaches the API pods only, never the services pod.
    selector = one(objs, "Service", "-prefect-server")["spec"]["selector"]
    labels = services["spec"]["template"]["metadata"]["labels"]
    assert any(labels.get(k) != v for k, v in selector.items())
    assert one(objs, "PodDisruptionBudget", "-prefect-server")["spec"]["maxUnavailable"] == 1

    # The chart's Redis: a Deployment, a Service, and only Prefect's pods may connect.
    redis = one(objs, "Deployment", "-prefect-redis")
    assert one(objs, "Service", "-prefect-redis")["spec"]["ports"][0]["port"] == 6379
    assert "--save" in _main(redis)["args"]
    np = one(objs, "NetworkPolicy", "-prefect-redis")
    peers = np["spec"]["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][1]["values"]
    assert sorted(peers) == ["prefect-server", "prefect-services"]
    pg = one(objs, "NetworkPolicy", "-postgresql")
    pg_peers = pg["spec"]["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][1]
    assert "prefect-services" in pg_peers["values"]
    egress = one(objs, "NetworkPolicy", "-prefect-redis-egress")
    targets = [rule.get("to", [{}])[0] for rule in egress["spec"]["egress"]]
    assert any(
        t.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
        == "prefect-redis"
        for t in targets
    )


def test_services_can_run_on_their_own_with_one_api_pod(render):
    sets = {"prefectServer.services.separate": True, "prefectServer.redis.enabled": True}
    objs = render(set=sets)
    assert one(objs, "Deployment", "-prefect-server")["spec"]["replicas"] == 1
    assert "--no-services" in _main(one(objs, "Deployment", "-prefect-server"))["args"]
    one(objs, "Deployment", "-prefect-services")


def test_your_own_redis_comes_from_a_secret(render):
    objs = render(
        set={"prefectServer.replicas": 2, "prefectServer.redis.existingSecret": "prefect-redis"}
    )
    assert not find(objs, "Deployment", "-prefect-redis")
    for suffix in ("-prefect-server", "-prefect-services"):
        env = _env(_main(one(objs, "Deployment", suffix)))
        assert env["PREFECT_REDIS_MESSAGING_URL"] == {
            "secretKeyRef": {"name": "prefect-redis", "key": "redis-url"}
        }


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ({"prefectServer.replicas": 2}, "prefectServer.replicas=2 needs Redis"),
        ({"prefectServer.services.separate": True}, "prefectServer.services.separate=true needs"),
        (
            {"prefectServer.redis.enabled": True, "prefectServer.redis.existingSecret": "r"},
            "use the chart's Redis or your own, not both",
        ),
        # Prefect on SQLite: one file per pod. The schema takes only a PostgreSQL URL.
        (
            {
                "prefectServer.replicas": 2,
                "prefectServer.redis.enabled": True,
                "postgresql.enabled": False,
                "database.external.url": "postgresql+psycopg://u:p@db/conveyor",
                "database.external.prefectUrl": "sqlite+aiosqlite:////data/prefect.db",
            },
            "/database/external/prefectUrl",
        ),
    ],
)
def test_render_refuses_a_scaled_out_prefect_without_redis_or_postgresql(helm, sets, message):
    proc = helm("template", "rel", str(CHART), *value_args([], sets))
    assert proc.returncode != 0 and proc.stdout == ""
    assert message in proc.stderr, proc.stderr


def test_a_database_url_from_an_existing_secret_is_checked_at_start(render):
    """The chart cannot read the Secret: the init container stops a SQLite-backed scale-out with
    the reason, and lets a PostgreSQL one start. Its script runs here as the pod would run it."""
    objs = render(
        set={
            "prefectServer.replicas": 2,
            "prefectServer.redis.enabled": True,
            "postgresql.enabled": False,
            "database.existingSecret": "db-urls",
        }
    )
    checks = [
        c
        for suffix in ("-prefect-server", "-prefect-services")
        for c in containers(pod_spec(one(objs, "Deployment", suffix)))
        if c["name"] == "require-postgresql"
    ]
    assert len(checks) == 2
    check = checks[0]
    assert _env(check)["PREFECT_API_DATABASE_CONNECTION_URL"]["secretKeyRef"]["name"] == "db-urls"

    def run(url):
        env = dict(os.environ, PREFECT_API_DATABASE_CONNECTION_URL=url)
        cmd = [sys.executable, *check["command"][1:]]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)

    refused = run("sqlite+aiosqlite:////data/prefect.db")
    assert refused.returncode == 1
    assert "needs PostgreSQL" in refused.stderr and "sqlite+aiosqlite" in refused.stderr
    assert run("postgresql+asyncpg://u:p@db:5432/prefect").returncode == 0
    # Not rendered when the chart knows the database is PostgreSQL.
    for obj in render("prefect-replicated.yaml"):
        spec = pod_spec(obj)
        assert all(c["name"] != "require-postgresql" for c in (containers(spec) if spec else []))


@pytest.mark.k8s
def test_replicated_prefect_installs_on_the_api_server(helm, kube, namespace):
    """helm install (no hooks) of the scaled-out topology: every object stored by the API server,
    which checks selectors, names, ports and the PodDisruptionBudget."""
    kubeconfig = ["--kubeconfig", str(kube.kubeconfig), "--namespace", namespace]
    values = value_args(["prefect-replicated.yaml"])
    install = ["install", "rep", str(CHART), "--create-namespace", "--no-hooks", *values]
    proc = helm(*install, *kubeconfig)
    assert proc.returncode == 0, proc.stderr
    manifest = helm("get", "manifest", "rep", *kubeconfig)
    objs = parse_manifests(manifest.stdout)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objs}
    assert ("Deployment", "rep-conveyor-prefect-services") in kinds
    assert ("Deployment", "rep-conveyor-prefect-redis") in kinds
    for obj in objs:
        resp = kube.get(obj, namespace)
        assert resp.status_code == 200, f"{obj['kind']}/{obj['metadata']['name']}: {resp.text}"
    stored = kube.get(one(objs, "Deployment", "-prefect-server"), namespace).json()
    assert stored["spec"]["replicas"] == 3
    assert helm("uninstall", "rep", *kubeconfig).returncode == 0
