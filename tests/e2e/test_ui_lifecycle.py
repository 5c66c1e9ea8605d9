"""A connector's whole life through the browser, against a real Prefect server and worker.

Log in; create a source and a destination (a failing, then a passing "Test connection");
create a connector with a preset schedule; watch it become synced and its deployment
appear in Prefect with the right cron; "Run now" and watch the run finish with rows
(no reload) and its full log on its page; Retry a failed run and watch the new run finish;
change the schedule; pause; a viewer cannot change it; delete it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect
from sqlalchemy.engine import URL, make_url

from conveyor.db.models import Connector
from conveyor.db.session import session_scope
from tests.e2e.conftest import Platform, login, screenshot
from tests.fixtures.net import wait_for
from tests.fixtures.pipelines import pg_exec

pytestmark = [pytest.mark.e2e, pytest.mark.prefect, pytest.mark.timeout(900)]
SYNC_TIMEOUT = 90_000  # ms: the reconciler polls its outbox every 0.5 s
RUN_TIMEOUT = 180_000  # ms: worker poll, flow process start, dlt load


def _connector(platform: Platform, name: str) -> Connector | None:
    with session_scope(platform.settings.effective_database_url) as session:
        return session.query(Connector).filter_by(name=name).one_or_none()


def _failed_run(platform: Platform, connector_id: int) -> int:
    """A run that failed on the source's settings, as the flow records one."""
    from conveyor.db.models import ConnectorRun

    with session_scope(platform.settings.effective_database_url) as session:
        run = ConnectorRun(
            connector_id=connector_id,
            status="failed",
            trigger="schedule",
            error="password authentication failed for user 'shop'",
            failure_class="config",
            failure_side="source",
        )
        session.add(run)
        session.flush()
        return int(run.id)


def _deployment(api: str, deployment_id: str) -> dict[str, Any] | None:
    resp = httpx.get(f"{api}/deployments/{deployment_id}", timeout=10)
    if resp.status_code == 404:
        return None
    resp.raise_for_status()
    return resp.json()  # type: ignore[no-any-return]


def _cron(deployment: dict[str, Any]) -> str | None:
    schedules = deployment.get("schedules") or []
    return schedules[0]["schedule"].get("cron") if schedules else None


def _wait_synced(page: Any) -> None:
    expect(page.locator("#live .badge", has_text="synced")).to_be_visible(timeout=SYNC_TIMEOUT)


def test_connector_lifecycle(
    full_platform: Platform,
    new_page: Any,
    tmp_path: Path,
    prefect_api_url: str,
    pg_database: Callable[[], str],
) -> None:
    p = full_platform
    base = p.base_url
    url = pg_database()
    pg_exec(
        url,
        "CREATE TABLE orders (id int PRIMARY KEY, amount numeric)",
        "INSERT INTO orders VALUES (1, 10.5), (2, 20), (3, 7.25)",
        "CREATE TABLE customers (id int PRIMARY KEY, name text)",
    )
    page = new_page()
    try:
        _lifecycle(p, base, page, make_url(url), tmp_path, prefect_api_url, new_page)
    except Exception:
        print(p.logs())
        raise


def _lifecycle(
    p: Platform, base: str, page: Any, shop: URL, tmp: Path, api: str, new_page: Any
) -> None:
    page.goto(base + "/login")
    screenshot(page, "login", full_page=False)
    login(page, base, "alice")

    # --- a source: the wrong port fails the test, the right one passes ----------------
    page.goto(base + "/sources/new")
    page.get_by_label("Type").select_option("sql_database")
    page.get_by_label("Host").wait_for()  # the fields of the chosen type arrived (htmx)
    page.get_by_role("textbox", name="Name", exact=True).fill("Shop database")
    page.get_by_label("Host").fill(shop.host)
    page.get_by_label("Port").fill("1")
    page.get_by_label("Database").fill(shop.database)
    page.get_by_label("Username").fill(shop.username)
    page.get_by_role("button", name="Test connection").click()
    expect(page.locator("#check-result")).to_contain_text("Connection failed")
    page.get_by_label("Port").fill(str(shop.port))
    page.get_by_role("button", name="Test connection").click()
    expect(page.locator("#check-result")).to_contain_text("Connection works")
    screenshot(page, "source-form")
    page.get_by_role("button", name="Create source").click()
    page.wait_for_url(re.compile(r"/sources/\d+$"))

    # --- a destination, the same way --------------------------------------------------
    page.goto(base + "/destinations/new")
    page.get_by_role("textbox", name="Name", exact=True).fill("Warehouse")
    page.get_by_label("Path", exact=True).fill("/proc/no-such-dir/warehouse.duckdb")
    page.get_by_role("button", name="Test connection").click()
    expect(page.locator("#check-result")).to_contain_text("Connection failed")
    page.get_by_label("Path", exact=True).fill(str(tmp / "warehouse.duckdb"))
    page.get_by_role("button", name="Test connection").click()
    expect(page.locator("#check-result")).to_contain_text("Connection works")
    page.get_by_role("button", name="Create destination").click()
    page.wait_for_url(re.compile(r"/destinations/\d+$"))

    # --- the connector, every 6 hours -------------------------------------------------
    page.goto(base + "/connectors/new")
    page.get_by_label("Connector name").fill("orders-e2e")
    page.get_by_label("Tags (optional)").fill("finance")
    page.get_by_role("button", name="Discover tables").click()
    page.get_by_label("orders").check()
    page.get_by_label("Every 6 hours").check()
    expect(page.locator("#schedule-preview")).to_contain_text("Every 6 hours, UTC")
    expect(page.locator("#schedule-preview li")).to_have_count(5)
    screenshot(page, "connector-form")
    page.get_by_role("button", name="Create connector").click()
    page.wait_for_url(re.compile(r"/connectors/\d+$"))
    expect(page.locator(".flash")).to_contain_text("Connector created")

    # --- it becomes synced without a reload; Prefect has the deployment ---------------
    _wait_synced(page)
    c = _connector(p, "orders-e2e")
    assert c is not None and c.prefect_deployment_id
    link = page.get_by_role("link", name="Open in Prefect")
    assert link.get_attribute("href").endswith(f"/deployments/deployment/{c.prefect_deployment_id}")
    deployment = _deployment(api, c.prefect_deployment_id)
    assert deployment is not None and _cron(deployment) == "0 */6 * * *"
    assert f"connector-{c.id}" in deployment["tags"]

    # --- Run now: the run appears and finishes with its rows, no reload ---------------
    p.start_worker()
    page.get_by_role("button", name="Run now").click()
    expect(page.locator(".flash")).to_contain_text("started")
    newest = page.locator("#live table.runs tbody tr").first
    expect(newest).to_contain_text("manual")
    expect(newest).to_contain_text("succeeded", timeout=RUN_TIMEOUT)
    expect(newest.locator("td[data-label=Rows]")).to_have_text("3")
    expect(page.locator("#live svg.chart rect")).to_have_count(1)
    screenshot(page, "connector-after-run-now")
    page.goto(base + "/connectors")
    expect(page.locator(f"#connector-{c.id}")).to_contain_text("3 rows")
    page.goto(f"{base}/connectors/{c.id}")
    # Where the data landed: the DuckDB file, its schema and a query to look at it.
    expect(page.locator("#landing")).to_contain_text(f"connector_{c.id}")
    expect(page.locator("#landing-query")).to_have_value(
        re.compile(rf"SELECT \* FROM connector_{c.id}\.orders")
    )
    newest.get_by_role("link").click()
    page.wait_for_url(re.compile(r"/runs/\d+$"))
    expect(page.locator("#run-tables")).to_contain_text("orders")
    expect(page.locator("#run-tables td.num")).to_have_text("3")
    # The first load created the table: its columns, as a table people can read.
    expect(page.locator("#run-schema-changes")).to_contain_text("orders")
    # The run's page says where its rows landed too, with the same query to copy.
    expect(page.locator("#landing-query")).to_have_value(
        re.compile(rf"SELECT \* FROM connector_{c.id}\.orders")
    )
    # Its full log is Conveyor's own (test_ui_runs photographs a failed run's page).
    expect(page.locator("#run-log")).to_contain_text("Loaded 3 rows into 1 table(s)")
    expect(page.get_by_role("link", name="Download full log")).to_be_visible()
    assert page.get_by_role("button", name="Retry").count() == 0

    # --- Retry of a failed run: a new run through Prefect, with its rows ---------------
    failed = _failed_run(p, c.id)
    page.goto(f"{base}/runs/{failed}")
    expect(page.locator("#run-failure")).to_contain_text("Settings problem")
    page.get_by_role("button", name="Retry").click()
    expect(page.locator(".flash")).to_contain_text(f"a retry of run {failed}")
    assert not page.url.endswith(f"/runs/{failed}")
    expect(page.locator("#run-live dl.summary")).to_contain_text(f"retry of run {failed}")
    expect(page.locator("#run-live .badge").first).to_have_text("succeeded", timeout=RUN_TIMEOUT)
    expect(page.locator("table.compact td.num")).to_have_text("3")

    # --- change the schedule: daily at 07:30 ------------------------------------------
    page.goto(f"{base}/connectors/{c.id}/edit")
    expect(page.get_by_label("Every 6 hours")).to_be_checked()
    page.get_by_label("Daily at a time").check()
    page.get_by_label("At", exact=True).fill("07:30")
    expect(page.locator("#schedule-preview")).to_contain_text("At 07:30, UTC")
    page.get_by_role("button", name="Save changes").click()
    page.wait_for_url(f"{base}/connectors/{c.id}")
    expect(page.locator("#h-schedule").locator("..")).to_contain_text("At 07:30, UTC")
    _wait_synced(page)
    wait_for(
        lambda: _cron(_deployment(api, c.prefect_deployment_id) or {}) == "30 7 * * *",
        60,
        "the new cron in Prefect",
    )

    # --- pause -------------------------------------------------------------------------
    page.get_by_role("button", name="Pause").click()
    expect(page.locator(".flash")).to_contain_text("Paused")
    expect(page.get_by_role("button", name="Resume")).to_be_visible()
    # Run now stays in place, disabled, and says why.
    expect(page.get_by_role("button", name="Run now")).to_be_disabled()
    expect(page.locator("#run-now-why")).to_have_text("Resume the connector to run it")
    _wait_synced(page)

    def paused() -> bool:
        d = _deployment(api, c.prefect_deployment_id) or {}
        return bool(d.get("paused")) or not any(s.get("active") for s in d.get("schedules", []))

    wait_for(paused, 60, "the deployment to be paused in Prefect")

    # --- a viewer sees it all and can change nothing ------------------------------------
    viewer = new_page()
    login(viewer, base, "victor")
    viewer.goto(f"{base}/connectors/{c.id}")
    expect(viewer.locator("h1")).to_have_text("orders-e2e")
    assert viewer.get_by_role("button", name="Run now").count() == 0
    assert viewer.get_by_role("link", name="Delete…").count() == 0
    token = viewer.locator("input[name=csrf_token]").first.get_attribute("value")
    for action in ("resume", "run", "delete"):
        resp = viewer.request.post(
            f"{base}/connectors/{c.id}/{action}", form={"csrf_token": token}, max_redirects=0
        )
        assert resp.status == 403, action
    assert _connector(p, "orders-e2e") is not None

    # --- delete, after a confirmation naming what goes --------------------------------
    page.get_by_role("link", name="Delete…").click()
    confirm = page.locator(".danger-zone")
    expect(confirm).to_contain_text("orders-e2e")
    expect(confirm).to_contain_text(f"connector-{c.id}")
    expect(confirm).to_contain_text("3 runs")
    expect(confirm).to_contain_text("Kept: the source Shop database")
    page.get_by_role("button", name="Delete “orders-e2e”").click()
    page.wait_for_url(base + "/connectors")
    expect(page.locator(".flash")).to_contain_text("Deleted connector 'orders-e2e'")
    assert _connector(p, "orders-e2e") is None
    wait_for(
        lambda: _deployment(api, c.prefect_deployment_id) is None,
        60,
        "the deployment to be removed from Prefect",
    )
