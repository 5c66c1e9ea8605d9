"""values.schema.json refuses wrong values, and helm says which and why (lint, template, install).
Checks the schema cannot express (they need several values at once) fail at template time."""

from __future__ import annotations

import pytest

from conftest import CHART

BAD_VALUES = [
    ({"worker.type": "docker"}, "/worker/type"),
    ({"web.replicas": "two"}, "/web/replicas"),
    ({"bogus": 1}, "additional properties 'bogus'"),
    ({"web.bogus": 1}, "additional properties 'bogus'"),
    ({"image.pullPolicy": "Sometimes"}, "/image/pullPolicy"),
    ({"postgresql.persistence.size": "lots"}, "/postgresql/persistence/size"),
    ({"web.resources": {"requests": {"cpu": "lots"}}}, "/web/resources/requests/cpu"),
    ({"seedDeployments": {"notes.txt": "x"}}, "notes.txt"),
    ({"conveyor.secretKey": "not-a-fernet-key"}, "/conveyor/secretKey"),
    ({"prefectServer.replicas": -1}, "/prefectServer/replicas"),
    ({"prefectServer.redis.image.digest": "latest"}, "/prefectServer/redis/image/digest"),
    ({"prefectServer.services.bogus": 1}, "additional properties 'bogus'"),
    ({"worker.limit": 0}, "/worker/limit"),
    ({"web.port": 70000}, "/web/port"),
    ({"podSecurityContext": {"runAsNonRoot": False}}, "/podSecurityContext/runAsNonRoot"),
    ({"containerSecurityContext": {"allowPrivilegeEscalation": True}}, "allowPrivilegeEscalation"),
    ({"database.external.url": "mysql://x"}, "/database/external/url"),
    ({"postgresql.auth.database": "Robert'); DROP TABLE"}, "/postgresql/auth/database"),
    ({"ingress.host": "Not A Host"}, "/ingress/host"),
    # Merged with the default httpGet: two handlers in one probe.
    ({"web.livenessProbe": {"exec": {"command": ["true"]}}}, "/web/livenessProbe"),
    ({"networkPolicy.egress.databaseCidrs": ["everywhere"]}, "databaseCidrs"),
    ({"image.digest": "latest"}, "/image/digest"),
    ({"postgresql.image.digest": "sha256:short"}, "/postgresql/image/digest"),
    ({"worker.kubernetes.image.digest": "latest"}, "/worker/kubernetes/image/digest"),
    ({"prefectServer.image.digest": "md5:0"}, "/prefectServer/image/digest"),
    ({"jobCleanup.enabled": "sometimes"}, "/jobCleanup/enabled"),
    ({"web.autoscaling.targetCPUUtilizationPercentage": 0}, "targetCPUUtilizationPercentage"),
    ({"worker.autoscaling.minReplicas": 0}, "/worker/autoscaling/minReplicas"),
    ({"prefectAuth.existingSecret": "Not A Name"}, "/prefectAuth/existingSecret"),
    ({"metrics.serviceMonitor.interval": "often"}, "/metrics/serviceMonitor/interval"),
]


def _sets(values):
    import json

    args = []
    for key, value in values.items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    return args


@pytest.mark.parametrize(("values", "where"), BAD_VALUES, ids=[str(v) for v, _ in BAD_VALUES])
def test_schema_rejects_wrong_values(helm, values, where):
    lint = helm("lint", "--strict", str(CHART), *_sets(values))
    assert lint.returncode != 0
    report = lint.stdout + lint.stderr
    assert "values don't meet the specifications of the schema" in report
    assert where in report, report
    template = helm("template", "r", str(CHART), *_sets(values))
    assert template.returncode != 0 and where in template.stderr


CROSS_CHECKS = [
    ({"postgresql.enabled": False}, "database.external.url is required"),
    (
        {"postgresql.enabled": False, "database.external.url": "postgresql+psycopg://u:p@h/db"},
        "database.external.prefectUrl is required",
    ),
    ({"database.external.url": "postgresql+psycopg://u:p@h/db"}, "set postgresql.enabled=false"),
    ({"prefectServer.enabled": False}, "prefectServer.externalApiUrl is required"),
    (
        {
            "ingress.enabled": True,
            "ingress.prefect.enabled": True,
            "prefectServer.enabled": False,
            "prefectServer.externalApiUrl": "http://p:4200/api",
        },
        "ingress.prefect.enabled needs prefectServer.enabled",
    ),
    (
        {
            "networkPolicy.egress.enabled": True,
            "prefectServer.enabled": False,
            "prefectServer.externalApiUrl": "http://p:4200/api",
        },
        "networkPolicy.egress.enabled only knows the bundled Prefect server",
    ),
]


@pytest.mark.parametrize(("values", "message"), CROSS_CHECKS, ids=[m for _, m in CROSS_CHECKS])
def test_inconsistent_values_fail_at_template_time_with_the_reason(helm, values, message):
    proc = helm("template", "r", str(CHART), *_sets(values))
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr
    # helm lint only reports these as [INFO] (a `required`/`fail` in a template is not a lint
    # error), which is why the value sets are also rendered with helm template in CI.
    lint = helm("lint", "--strict", str(CHART), *_sets(values))
    assert message in lint.stdout + lint.stderr


def test_existing_secret_makes_external_urls_optional(helm):
    proc = helm(
        "template",
        "r",
        str(CHART),
        *_sets({"postgresql.enabled": False, "database.existingSecret": "db"}),
    )
    assert proc.returncode == 0, proc.stderr
