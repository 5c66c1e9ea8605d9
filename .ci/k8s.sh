#!/usr/bin/env bash
# Gets what the chart tests (tests/chart) need, before `make test`: a real helm 3.19 in .venv/bin and
# the loopback Kubernetes API server (etcd + kube-apiserver 1.20, built once into
# ~/.cache/conveyor-k8s, ~8 min; then started, ~2 s). Without ../shared/tools the chart tests that
# need them skip with the reason. Leaves the API server running for the tests: stop it with
# `../shared/tools/k8s-test-cluster stop`.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=../shared/tools
if [ ! -d "$tools" ]; then
  echo "k8s.sh: $tools not found: no helm and no test cluster (tests/chart will skip what needs them)"
  exit 0
fi

mkdir -p .venv/bin
"$tools/get-helm" .venv/bin

port=${K8S_TEST_PORT:-16443}
ready() { curl -sfk -m 5 -H "Authorization: Bearer admintoken" "https://127.0.0.1:$port/readyz" >/dev/null 2>&1; }
start=$(date +%s)
"$tools/k8s-test-cluster" build
echo "k8s.sh: cluster binaries ready after $(( $(date +%s) - start )) s"
if ready; then
  echo "k8s.sh: an API server already answers on 127.0.0.1:$port; using it"
else
  "$tools/k8s-test-cluster" start
fi
