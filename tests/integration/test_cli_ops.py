"""`conveyor doctor` and `conveyor worker` when parts are missing: words, and a fix."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.up_process import conveyor, free_port


def test_doctor_says_what_is_wrong_and_how_to_fix_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert conveyor(home, "db", "upgrade").returncode == 0
    dead = f"http://127.0.0.1:{free_port()}/api"
    res = conveyor(home, "doctor", PREFECT_API_URL=dead)
    assert res.returncode == 1
    out = res.stdout
    assert "database" in out and "(latest)" in out
    assert f"{dead} is not reachable" in out
    assert "fix: start it (`conveyor prefect-server`" in out
    assert "fix: start it: `conveyor reconcile`" in out

    as_json = json.loads(conveyor(home, "doctor", "--json", PREFECT_API_URL=dead).stdout)
    status = {c["check"]: c["status"] for c in as_json["checks"]}
    assert as_json["ok"] is False
    assert status["database"] == "ok" and status["Prefect API"] == "fail"
    assert set(status) == {
        "settings",
        "secrets key",
        "database",
        "Prefect API",
        "work pool",
        "worker",
        "reconciler",
        "destinations",  # none here bound to one machine on a pool that is not local
    }
    assert status["destinations"] == "ok"


def test_doctor_checks_what_a_running_up_runs_and_names_its_ports(tmp_path: Path) -> None:
    """Issue 22: from a second shell (no PREFECT_API_URL) doctor said "not set" while `up`
    ran everything elsewhere. Here `up` is played by this test: the lock it holds on up.pid
    and the up.json it writes, its Prefect and web app on ports where nothing answers."""
    import fcntl
    import os

    from conveyor.supervisor import state

    home = tmp_path / "home"
    assert conveyor(home, "db", "upgrade").returncode == 0
    prefect_port, web_port = free_port(), free_port()
    api = f"http://127.0.0.1:{prefect_port}/api"
    up = state.UpState(
        pid=os.getpid(),
        web_url=f"http://127.0.0.1:{web_port}",
        prefect_api_url=api,
        prefect_ui_url=f"http://127.0.0.1:{prefect_port}",
        work_pool="default",
    )
    state.write(home, up)
    # Without the lock the files are a killed up's leftovers: doctor ignores them.
    res = conveyor(home, "doctor")
    assert "PREFECT_API_URL is not set and no `conveyor up` runs" in res.stdout
    assert "4200 or the next free one" in res.stdout
    with open(home / "up.pid", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running `conveyor up` holds it
        res = conveyor(home, "doctor")
        as_json = json.loads(conveyor(home, "doctor", "--json").stdout)
    assert res.returncode == 1
    out = res.stdout
    assert "not set" not in out
    assert f"`conveyor up` (pid {os.getpid()}) runs here" in out
    assert f"web app at {up.web_url} does not answer" in out
    assert f"{api} is not reachable" in out
    assert f"fix: `conveyor up` started it on port {prefect_port}" in out
    assert "prefect-server.log" in out and "4200" not in out
    status = {c["check"]: c["status"] for c in as_json["checks"]}
    assert status["conveyor up"] == "fail" and status["Prefect API"] == "fail"


def test_doctor_spots_an_unmigrated_database_and_a_bad_key(tmp_path: Path) -> None:
    home = tmp_path / "home"
    res = conveyor(home, "doctor", CONVEYOR_SECRET_KEY="not-a-key")
    assert res.returncode == 1
    assert "the file does not exist yet" in res.stdout
    assert not (home / "conveyor.db").exists()  # looking does not create it
    assert "fix: run `conveyor db upgrade`" in res.stdout
    assert "not a Fernet key" in res.stdout


def test_worker_without_prefect_api_url_says_so(tmp_path: Path) -> None:
    res = conveyor(tmp_path / "home", "worker")
    assert res.returncode != 0
    assert "PREFECT_API_URL is not set" in res.stderr
    assert "Traceback" not in res.stderr


def test_web_logs_json_lines_with_request_ids(tmp_path: Path) -> None:
    import subprocess
    import time

    import httpx

    from tests.integration.up_process import CONVEYOR, up_env

    home = tmp_path / "home"
    assert conveyor(home, "db", "upgrade").returncode == 0
    port = free_port()
    log = tmp_path / "web.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [*CONVEYOR, "web", "--port", str(port)],
            env=up_env(home, CONVEYOR_LOG_JSON="true"),
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                resp = httpx.get(
                    f"http://127.0.0.1:{port}/api/v1/health", headers={"X-Request-ID": "req-7"}
                )
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)
        assert resp.headers["X-Request-ID"] == "req-7"
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    access = [x for x in lines if x.get("path") == "/api/v1/health"]
    assert access and access[0]["request_id"] == "req-7" and access[0]["status"] in (200, 503)
    assert any(x["logger"].startswith("uvicorn") for x in lines)  # uvicorn's own lines too
