"""In-cluster chores of the Conveyor chart, on the Kubernetes REST API with the standard library
only (the Conveyor image has no Kubernetes client). Runs with the pod's ServiceAccount token.

ensure-secrets SPEC_JSON
    Creates or completes the chart's Secrets inside the cluster, so that nothing random is
    ever produced by template rendering (`helm template`, GitOps syncs render the same bytes
    every time). SPEC_JSON: {"secrets": [{"name": N, "keys": {KEY: RULE}}]} where RULE is
      {"env": VAR}               set from the environment variable VAR when it is non-empty
                                 (an explicit value from the chart's values: always wins),
      {"generate": "fernet" | "token:N"}   made once, only when the key is absent,
      {"template": "...{other-key}..."}    derived from the Secret's other keys
                                 (URL-quoted), recomputed every time.
    Keys already in the Secret are kept; the Secret is never deleted by Helm.

clean-jobs --selector LABELS --older-than SECONDS
    Deletes Jobs matching LABELS that finished (Complete or Failed) more than SECONDS ago,
    with their pods: ttlSecondsAfterFinished for clusters that do not honour it (< 1.21).

Connection: in a pod, the ServiceAccount's token, CA and namespace; outside (tests)
KUBE_OPS_SERVER, KUBE_OPS_TOKEN, KUBE_OPS_NAMESPACE and KUBE_OPS_INSECURE=1.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import ssl
import string
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime

SA = "/var/run/secrets/kubernetes.io/serviceaccount"


class Api:
    def __init__(self) -> None:
        if os.environ.get("KUBE_OPS_SERVER"):
            self.server = os.environ["KUBE_OPS_SERVER"].rstrip("/")
            self.token = os.environ["KUBE_OPS_TOKEN"]
            self.namespace = os.environ["KUBE_OPS_NAMESPACE"]
        else:
            host = os.environ["KUBERNETES_SERVICE_HOST"]
            port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            self.server = f"https://{host}:{port}"
            with open(f"{SA}/token") as fh:
                self.token = fh.read().strip()
            with open(f"{SA}/namespace") as fh:
                self.namespace = fh.read().strip()
        if os.environ.get("KUBE_OPS_INSECURE") == "1":
            self.ssl = ssl._create_unverified_context()  # loopback test server only
        else:
            self.ssl = ssl.create_default_context(cafile=f"{SA}/ca.crt")

    def call(self, method: str, path: str, body: object = None, ctype: str = "application/json"):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", ctype)
        try:
            with urllib.request.urlopen(req, context=self.ssl, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")


def _generate(kind: str) -> str:
    if kind == "fernet":
        return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    if kind.startswith("token:"):
        alphabet = string.ascii_letters + string.digits
        return "".join(secrets.choice(alphabet) for _ in range(int(kind.split(":")[1])))
    raise SystemExit(f"unknown generator {kind!r}")


def ensure_secrets(api: Api, spec: dict) -> int:
    base = f"/api/v1/namespaces/{api.namespace}/secrets"
    for item in spec["secrets"]:
        name, rules = item["name"], item["keys"]
        status, current = api.call("GET", f"{base}/{name}")
        if status not in (200, 404):
            print(f"cannot read Secret {name}: HTTP {status} {current.get('message')}")
            return 1
        existing = {k: base64.b64decode(v).decode() for k, v in (current.get("data") or {}).items()}
        values = dict(existing)
        made, kept, given = [], [], []
        for key, rule in rules.items():
            if "env" in rule and os.environ.get(rule["env"]):
                values[key] = os.environ[rule["env"]]
                given.append(key)
            elif "generate" in rule:
                if key in existing:
                    kept.append(key)
                else:
                    values[key] = _generate(rule["generate"])
                    made.append(key)
        quoted = {k: urllib.parse.quote(v, safe="") for k, v in values.items()}
        for key, rule in rules.items():
            if "template" in rule:
                values[key] = rule["template"].format_map(quoted)
        data = {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}
        if status == 404:
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "labels": item.get("labels", {})},
                "type": "Opaque",
                "data": data,
            }
            status, answer = api.call("POST", base, body)
        elif values != existing:
            patch = {"data": data}
            status, answer = api.call(
                "PATCH", f"{base}/{name}", patch, "application/merge-patch+json"
            )
        else:
            answer = {}
        if status not in (200, 201):
            print(f"cannot write Secret {name}: HTTP {status} {answer.get('message')}")
            return 1
        # Key names only: never a value.
        print(f"Secret {name}: generated {made or '-'}, kept {kept or '-'}, given {given or '-'}")
    return 0


def clean_jobs(api: Api, selector: str, older_than: float) -> int:
    base = f"/apis/batch/v1/namespaces/{api.namespace}/jobs"
    status, jobs = api.call("GET", f"{base}?labelSelector={urllib.parse.quote(selector)}")
    if status != 200:
        print(f"cannot list Jobs: HTTP {status} {jobs.get('message')}")
        return 1
    now = datetime.now(UTC)
    deleted = 0
    for job in jobs.get("items", []):
        finished = None
        for cond in (job.get("status") or {}).get("conditions") or []:
            if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
                finished = cond.get("lastTransitionTime")
        finished = (job.get("status") or {}).get("completionTime") or finished
        if not finished:
            continue
        at = datetime.fromisoformat(finished.replace("Z", "+00:00"))
        if (now - at).total_seconds() < older_than:
            continue
        name = job["metadata"]["name"]
        status, answer = api.call("DELETE", f"{base}/{name}", {"propagationPolicy": "Background"})
        if status in (200, 202, 404):
            deleted += 1
            print(f"deleted Job {name} (finished {finished})")
        else:
            print(f"cannot delete Job {name}: HTTP {status} {answer.get('message')}")
    print(f"{deleted} finished Job(s) deleted")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["ensure-secrets"] and len(argv) == 2:
        return ensure_secrets(Api(), json.loads(argv[1]))
    if argv[:1] == ["clean-jobs"] and len(argv) == 5:
        opts = dict(zip(argv[1::2], argv[2::2], strict=True))
        return clean_jobs(Api(), opts["--selector"], float(opts["--older-than"]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
