"""`conveyor up` end to end: a real Prefect server, worker, reconciler and web app.

One test walks the whole life of a home directory, because each start costs ~15-30 s on
a small machine: first start (admin, demo connector, first run), the checks a newcomer
would make, a crashed child restarted, Ctrl-C with no process left, then a second start
that reuses everything.
"""

from __future__ import annotations

import csv
import os
import re
import signal
from pathlib import Path

import httpx
import psutil
import pytest
from sqlalchemy import func, select

from conveyor.db.models import Connector, User
from conveyor.db.session import dispose_all, session_scope
from conveyor.services import users as users_service
from tests.fixtures.net import wait_for
from tests.integration.up_process import UpProcess, conveyor, processes_using

pytestmark = [pytest.mark.prefect, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
DEMO_CRON = "0 */6 * * *"


def _demo_rows() -> int:
    with open(REPO / "deployments" / "data" / "orders.csv", newline="") as fh:
        return sum(1 for _ in csv.DictReader(fh))


def _healthy(base: str) -> bool:
    try:
        resp = httpx.get(f"{base}/api/v1/health", timeout=5)
    except httpx.HTTPError:
        return False
    return resp.status_code == 200 and resp.json()["status"] == "ok"


def _assert_stopped_cleanly(up: UpProcess, tree: list[psutil.Process]) -> None:
    seconds = up.interrupt()
    assert up.proc.returncode == 0, up.output
    assert seconds < 10, f"stopping took {seconds:.1f} s"
    alive = [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"still running after Ctrl-C: {[p.cmdline() for p in alive]}"
    assert not processes_using(up.home), "a process of this home outlived `conveyor up`"
    leftovers = [n for n in ("up.pid", "up.json") if (up.home / n).exists()]
    assert leftovers == [], "a clean stop leaves no lock or state file (issue 22)"


def test_up_first_start_demo_run_ctrl_c_and_second_start(tmp_path: Path) -> None:
    home = tmp_path / "home"
    db_url = f"sqlite:///{home / 'conveyor.db'}"

    # --- first start -------------------------------------------------------------------
    up = UpProcess(home)
    try:
        up.wait_ready()
        out = up.output
        assert re.search(rf"Conveyor +{up.web_url}", out), out
        assert re.search(rf"Prefect dashboard +{up.prefect_url}", out), out
        password = re.search(r"admin / (\S+)", out)
        assert password, out
        assert str(home / "data") in out  # where the data lands

        # The printed password logs in and is stored only as a hash.
        with session_scope(db_url) as session:
            assert users_service.authenticate("admin", password[1], session=session)
        assert password[1].encode() not in (home / "conveyor.db").read_bytes()

        token = conveyor(home, "tokens", "create", "admin").stdout.strip()
        api = httpx.Client(
            base_url=up.web_url + "/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        connectors = api.get("/connectors").json()["items"]
        assert len(connectors) == 1
        demo = connectors[0]

        # The demo connector's first run moved every row of the CSV.
        def succeeded() -> dict | None:  # type: ignore[type-arg]
            runs = api.get(f"/connectors/{demo['id']}/runs").json()
            assert all(r["status"] not in ("failed", "crashed") for r in runs), runs
            return next((r for r in runs if r["status"] == "succeeded"), None)

        run = wait_for(succeeded, 120, "demo run succeeded")
        assert run["rows_loaded"] == _demo_rows()
        up.wait_for(r"Demo run \d+ succeeded: [\d,]+ rows", 30)

        # Its Prefect deployment exists with the cron schedule.
        demo = api.get(f"/connectors/{demo['id']}").json()
        assert demo["sync_status"] == "synced"
        dep = httpx.get(
            f"{up.prefect_url}/api/deployments/{demo['prefect_deployment_id']}", timeout=10
        ).json()
        crons = [s["schedule"].get("cron") for s in dep["schedules"]]
        assert crons == [DEMO_CRON]
        assert f"connector-{demo['id']}" in dep["tags"]
        assert dep["name"] == f"connector-{demo['id']}"  # as the README says (issue 22)
        assert dep["work_pool_name"] == "default"

        # The Prefect dashboard answers on its (non-default) port and calls that port.
        page = httpx.get(up.prefect_url + "/", timeout=10)
        assert page.status_code == 200 and "<html" in page.text.lower()
        ui = httpx.get(up.prefect_url + "/ui-settings", timeout=10).json()
        assert ui["api_url"] == up.prefect_url + "/api"

        # The work pool got a concurrency limit sized to the machine.
        pool = httpx.get(f"{up.prefect_url}/api/work_pools/default", timeout=10).json()
        assert pool["type"] == "process" and 1 <= pool["concurrency_limit"] <= 8

        metrics = httpx.get(up.web_url + "/metrics", timeout=10).text
        assert 'conveyor_runs{status="succeeded"} 1.0' in metrics
        assert 'conveyor_connectors{sync_status="synced"} 1.0' in metrics

        # doctor from a second shell (no PREFECT_API_URL) checks what this `up` runs.
        assert (home / "up.pid").read_text() == str(up.proc.pid)
        doctor = conveyor(home, "doctor")
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert f"web app at {up.web_url}, Prefect API at {up.prefect_url}/api" in doctor.stdout
        assert "worker" in doctor.stdout

        # The worker serves Prefect's health check (what `conveyor worker` offers probes).
        worker_cmd = psutil.Process(up.child_pid(" worker ")).cmdline()
        hc_port = worker_cmd[worker_cmd.index("--healthcheck-port") + 1]
        assert httpx.get(f"http://127.0.0.1:{hc_port}/health", timeout=5).status_code == 200

        # A child that dies is restarted and reported; the platform heals.
        os.kill(up.child_pid(" worker "), signal.SIGKILL)
        up.wait_for(r"Prefect worker exited with code -9; restarting", 15)
        up.wait_for(r"Prefect worker restarted", 30)
        wait_for(lambda: _healthy(up.web_url), 90, "healthy again after the restart")

        _assert_stopped_cleanly(up, up.tree())
    finally:
        up.kill_all()
    dispose_all()

    # --- second start: same state, nothing created twice -------------------------------
    up2 = UpProcess(home)
    try:
        up2.wait_ready(timeout=180)
        assert "password shown at first start" in up2.output
        assert "Demo content not applied: connectors exist already" in up2.output
        assert "admin / " not in up2.output
        with session_scope(db_url) as session:
            assert session.scalar(select(func.count()).select_from(User)) == 1
            assert session.scalar(select(func.count()).select_from(Connector)) == 1
        deployments = httpx.post(
            f"{up2.prefect_url}/api/deployments/filter",
            json={"deployments": {"tags": {"all_": ["conveyor"]}}},
            timeout=10,
        ).json()
        assert len(deployments) == 1, deployments
        _assert_stopped_cleanly(up2, up2.tree())
    finally:
        up2.kill_all()
        dispose_all()


@pytest.mark.postgres
def test_up_on_postgresql(tmp_path: Path) -> None:
    """The same first start with Conveyor's database on PostgreSQL."""
    from tests.fixtures.db import POSTGRES_URL, SKIP_PG_REASON, create_pg_database, drop_pg_database
    from tests.integration.up_process import up_env

    if not POSTGRES_URL:
        pytest.skip(SKIP_PG_REASON)
    url = create_pg_database()
    home = tmp_path / "home"
    up = UpProcess(home, env=up_env(home, CONVEYOR_DATABASE_URL=url))
    try:
        up.wait_ready()
        up.wait_for(rf"Demo run \d+ succeeded: {_demo_rows():,} rows", 120)
        assert not (home / "conveyor.db").exists()  # nothing fell back to SQLite
        _assert_stopped_cleanly(up, up.tree())
    finally:
        up.kill_all()
        dispose_all()
        drop_pg_database(url)
