"""Issue 17 in the browser, without Prefect (run records built through the services; the
real run through Prefect, and Retry of it, is in test_ui_lifecycle): a failed run's page
explains its class and links the source, shows earlier attempts and the full log with its
download; an open run's waiting reason updates without a reload and Cancel closes it; Reset
asks first; the retry, catch-up and destination-cap fields save and show back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from conveyor.db.models import ConnectorRun, Destination
from conveyor.db.session import session_scope
from conveyor.services import run_logs
from tests.e2e.conftest import Platform, login, screenshot
from tests.fixtures.ui import Seed

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

LOG = [
    "2026-03-02 02:30:00 INFO conveyor.pipelines.flow: run 7 of connector orders-daily",
    "2026-03-02 02:30:01 INFO conveyor.pipelines.runner: reading 2 tables from Sales DB",
    "2026-03-02 02:30:04 ERROR conveyor.pipelines.flow: password authentication failed "
    "for user 'shop' (password ********)",
]


def _failed_run(seed: Seed, platform: Platform, cid: int) -> int:
    started = datetime.now(UTC) - timedelta(minutes=12)
    rid = seed.run(
        cid,
        status="failed",
        trigger="schedule",
        started_at=started,
        finished_at=started + timedelta(seconds=4),
        rows_loaded=None,
        table_stats={},
        log_summary=None,
        error="The source refused the login: password authentication failed for user 'shop'",
        failure_class="config",
        failure_side="source",
        attempt=2,
        max_attempts=3,
        attempts=[
            {
                "attempt": 1,
                "prefect_flow_run_id": "5b1f0c8e-0000-4000-8000-000000000001",
                "started_at": (started - timedelta(minutes=5)).isoformat(),
                "finished_at": (started - timedelta(minutes=5, seconds=-30)).isoformat(),
                "status": "failed",
                "failure_class": "transient",
                "error": "could not connect to server: Connection refused",
            }
        ],
    )
    with session_scope(platform.settings.effective_database_url) as session:
        run_logs.append_chunk(rid, "".join(line + "\n" for line in LOG), session=session)
    return rid


def test_failed_run_page_explains_and_downloads_the_log(web_only: Platform, new_page: Any) -> None:
    seed = Seed(web_only.settings)
    src = seed.endpoint("source", name="Sales DB")
    cid = seed.connector(name="orders-daily", source_id=src)
    rid = _failed_run(seed, web_only, cid)
    page = new_page()
    login(page, web_only.base_url, "alice")
    page.goto(f"{web_only.base_url}/connectors/{cid}")
    row = page.locator("#live table.runs tbody tr").first
    expect(row.locator("td[data-label=Status]")).to_have_text("failed config")
    row.get_by_role("link").click()
    failure = page.locator("#run-failure")
    expect(failure).to_contain_text("Settings problem")
    expect(failure).to_contain_text("Check them on the source's page, test the connection")
    expect(page.locator("#run-attempts tbody tr")).to_have_count(1)
    expect(page.locator("#run-attempts")).to_contain_text("Connection refused")
    expect(page.locator("#run-log")).to_contain_text("password ********")
    expect(page.get_by_role("button", name="Retry")).to_be_visible()
    assert page.get_by_role("button", name="Cancel run").count() == 0
    screenshot(page, "run")
    with page.expect_download() as info:
        page.get_by_role("link", name="Download full log").click()
    download = info.value
    assert download.suggested_filename == f"conveyor-run-{rid}.log"
    assert Path(download.path()).read_text(encoding="utf-8").splitlines() == LOG
    failure.get_by_role("link", name="Open the source “Sales DB”").click()
    page.wait_for_url(f"{web_only.base_url}/sources/{src}")


def test_open_run_updates_its_waiting_reason_and_cancels(web_only: Platform, new_page: Any) -> None:
    seed = Seed(web_only.settings)
    cid = seed.connector(name="orders-daily")
    # Not started yet (no flow run): Cancel closes it at once. A running one is cancelled
    # through Prefect: test_ui_lifecycle and the cancel service's integration tests.
    rid = seed.run(
        cid,
        status="scheduled",
        started_at=None,
        finished_at=None,
        rows_loaded=None,
        table_stats={},
        waiting_reason="waiting: destination busy",
    )
    page = new_page()
    login(page, web_only.base_url, "alice")
    page.goto(f"{web_only.base_url}/runs/{rid}")
    expect(page.locator("#run-waiting")).to_have_text("Waiting: destination busy")
    # The run moves on: the page follows without a reload (htmx polls every 2 s).
    with session_scope(web_only.settings.effective_database_url) as session:
        run = session.get(ConnectorRun, rid)
        assert run is not None
        run.waiting_reason = "waiting for the DuckDB file held by another process"
        run.attempt, run.max_attempts = 2, 5
        run_logs.append_chunk(rid, "2026-03-02 02:30:01 INFO locked, waiting\n", session=session)
    expect(page.locator("#run-waiting")).to_have_text(
        "Waiting for the DuckDB file held by another process, attempt 2 of 5", timeout=10_000
    )
    expect(page.locator("#run-log")).to_contain_text("locked, waiting")
    assert page.get_by_role("button", name="Retry").count() == 0
    page.get_by_role("button", name="Cancel run").click()
    expect(page.locator(".flash")).to_contain_text(f"Run {rid} cancelled")
    expect(page.locator("#run-live .badge").first).to_have_text("cancelled")
    assert page.locator("#run-waiting").count() == 0
    expect(page.get_by_role("button", name="Retry")).to_be_visible()
    with session_scope(web_only.settings.effective_database_url) as session:
        run = session.get(ConnectorRun, rid)
        assert run is not None and run.status == "cancelled" and run.finished_at is not None


def test_reset_asks_first(web_only: Platform, new_page: Any) -> None:
    seed = Seed(web_only.settings)
    cid = seed.connector(name="orders-daily")
    before = seed.get(cid).state_key
    page = new_page()
    login(page, web_only.base_url, "alice")
    page.goto(f"{web_only.base_url}/connectors/{cid}")
    page.get_by_role("link", name="Reset…").click()
    expect(page.locator(".danger-zone")).to_contain_text("reads everything at the source again")
    page.get_by_role("link", name="Cancel").click()
    page.wait_for_url(f"{web_only.base_url}/connectors/{cid}")
    assert seed.get(cid).state_key == before
    page.get_by_role("link", name="Reset…").click()
    expect(page.get_by_label("Also drop this connector's tables")).not_to_be_checked()
    page.get_by_role("button", name="Reset “orders-daily”").click()
    page.wait_for_url(f"{web_only.base_url}/connectors/{cid}")
    expect(page.locator(".flash")).to_contain_text("the next run reloads everything")
    assert seed.get(cid).state_key not in (None, before)


def test_recovery_fields_save_and_show_back(web_only: Platform, new_page: Any) -> None:
    seed = Seed(web_only.settings)
    dst = seed.endpoint("destination", name="Warehouse")
    cid = seed.connector(name="orders-daily", destination_id=dst)
    page = new_page()
    login(page, web_only.base_url, "alice")
    page.goto(f"{web_only.base_url}/connectors/{cid}/edit")
    expect(page.get_by_label("Attempts in all")).to_have_value("3")
    page.get_by_label("Attempts in all").fill("4")
    page.get_by_label("Wait between attempts (seconds)").fill("10, soon")
    page.get_by_label("Missed scheduled runs").select_option("skip")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#err-retry_backoff_seconds")).to_contain_text("'soon'")
    page.get_by_label("Wait between attempts (seconds)").fill("10, 20")
    page.get_by_role("button", name="Save changes").click()
    page.wait_for_url(f"{web_only.base_url}/connectors/{cid}")
    expect(page.locator("#retry-policy")).to_contain_text("Up to 4 attempts, waiting 10, 20 s")
    expect(page.locator("#catch-up")).to_have_text("Skip them (skip)")
    c = seed.get(cid)
    assert (c.retry_policy, c.catch_up) == (
        {"max_attempts": 4, "backoff_seconds": [10, 20]},
        "skip",
    )

    page.goto(f"{web_only.base_url}/destinations/{dst}")
    page.get_by_label("Runs at once").fill("1")
    page.get_by_role("button", name="Save changes").click()
    page.wait_for_url(f"{web_only.base_url}/destinations/{dst}")
    expect(page.get_by_label("Runs at once")).to_have_value("1")
    with session_scope(web_only.settings.effective_database_url) as session:
        d = session.get(Destination, dst)
        assert d is not None and d.max_concurrent_runs == 1
