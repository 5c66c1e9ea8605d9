"""Idle memory and CPU of Conveyor's long-running processes, for the chart's sizing guidance.

Not a test (pytest does not collect it). Run by hand on a machine with PostgreSQL on
127.0.0.1:5432 (user postgres, trust auth, as in CI):  .venv/bin/python tests/chart/sizing.py
It starts the Prefect server (PostgreSQL-backed), a process worker, the reconciler and the web app
as the chart does, waits 30 s, measures 60 s, stops them and drops its two scratch databases.
Results are recorded in docs/kubernetes.md ("Sizing").
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

V = str(Path(sys.executable).parent)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def tree_rss(pid):
    p = psutil.Process(pid)
    procs = [p, *p.children(recursive=True)]
    return sum(x.memory_info().rss for x in procs if x.is_running()) / 2**20


def cpu_seconds(pid):
    p = psutil.Process(pid)
    t = 0
    for x in [p, *p.children(recursive=True)]:
        c = x.cpu_times()
        t += c.user + c.system
    return t


def wait_http(url, timeout=120):
    d = time.monotonic() + timeout
    while time.monotonic() < d:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return time.monotonic()
        except Exception:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} not up")


subprocess.run(
    ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", "DROP DATABASE IF EXISTS sizing_prefect"],
    check=True,
)
subprocess.run(
    ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", "DROP DATABASE IF EXISTS sizing_conveyor"],
    check=True,
)
subprocess.run(
    ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", "CREATE DATABASE sizing_prefect"],
    check=True,
)
subprocess.run(
    ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", "CREATE DATABASE sizing_conveyor"],
    check=True,
)
home = "/tmp/sizing-home"
os.makedirs(home, exist_ok=True)
pport, wport = free_port(), free_port()
env = dict(
    os.environ,
    HOME=home,
    PREFECT_HOME=home + "/.prefect",
    CONVEYOR_HOME=home,
    PREFECT_API_URL=f"http://127.0.0.1:{pport}/api",
    PREFECT_API_DATABASE_CONNECTION_URL="postgresql+asyncpg://postgres@127.0.0.1:5432/sizing_prefect",
    PREFECT_SERVER_ANALYTICS_ENABLED="false",
    CONVEYOR_DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:5432/sizing_conveyor",
    CONVEYOR_SECRET_KEY="Y2FuYXJ5LWZlcm5ldC1rZXktY2FuYXJ5LWZlcm5ldC0=",
    PREFECT_WORKER_WEBSERVER_PORT=str(free_port()),
    PREFECT_WORKER_QUERY_SECONDS="5",
)
procs = {}
out = {}
try:
    t0 = time.monotonic()
    procs["prefect-server"] = subprocess.Popen(
        [f"{V}/prefect", "server", "start", "--host", "127.0.0.1", "--port", str(pport)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ready = wait_http(f"http://127.0.0.1:{pport}/api/health", 180)
    out["prefect_server_start_s"] = round(ready - t0, 1)
    subprocess.run([f"{V}/conveyor", "db", "upgrade"], env=env, check=True, capture_output=True)
    procs["worker"] = subprocess.Popen(
        [
            f"{V}/prefect",
            "worker",
            "start",
            "--pool",
            "sizing",
            "--type",
            "process",
            "--with-healthcheck",
            "--limit",
            "4",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    procs["reconciler"] = subprocess.Popen(
        [f"{V}/conveyor", "reconcile"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    procs["web"] = subprocess.Popen(
        [f"{V}/conveyor", "web", "--host", "127.0.0.1", "--port", str(wport)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_http(f"http://127.0.0.1:{wport}/api/v1/health", 120)
    for _ in range(20):
        httpx.get(f"http://127.0.0.1:{wport}/api/v1/health", timeout=10)
    time.sleep(30)
    c0 = {k: cpu_seconds(p.pid) for k, p in procs.items()}
    time.sleep(60)
    for k, p in procs.items():
        out[f"{k}_rss_mib"] = round(tree_rss(p.pid))
        out[f"{k}_idle_cpu_millicores"] = round((cpu_seconds(p.pid) - c0[k]) / 60 * 1000)
finally:
    for p in procs.values():
        p.terminate()
    for p in procs.values():
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
for db in ("sizing_prefect", "sizing_conveyor"):
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"DROP DATABASE {db}"])
print(json.dumps(out, indent=1))
print(
    "machine:",
    os.cpu_count(),
    "cores,",
    round(psutil.virtual_memory().total / 2**30),
    "GiB; python",
    sys.version.split()[0],
)
