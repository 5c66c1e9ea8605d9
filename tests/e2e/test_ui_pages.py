"""Browser tests without Prefect: keyboard use, narrow screens, inline cron errors, viewers."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from conveyor.db.models import Connector
from conveyor.db.session import session_scope
from tests.e2e.conftest import PHONE, Platform, login, screenshot
from tests.e2e.test_ui_a11y import add_axe, axe_violations
from tests.fixtures.ui import Seed

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def _connectors(platform: Platform) -> list[Connector]:
    with session_scope(platform.settings.effective_database_url) as session:
        return list(session.query(Connector).order_by(Connector.id))


def test_keyboard_only(web_only: Platform, new_page: Any) -> None:
    """Log in, flip the list's switch and create a connector, all from the keyboard."""
    seed = Seed(web_only.settings)
    cid = seed.connector(name="orders-sync", by="alice")
    page = new_page()
    page.goto(web_only.base_url + "/connectors")
    page.wait_for_url(re.compile(r"/login\?next="))
    # The username field has focus; Tab moves to the password; Enter submits.
    page.keyboard.type("alice")
    page.keyboard.press("Tab")
    page.keyboard.type("correct-horse-battery")
    page.keyboard.press("Enter")
    page.wait_for_url(web_only.base_url + "/connectors")
    # The skip link is the first stop, and leads to the content.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    switch = page.get_by_role("switch", name="Pause orders-sync")
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.getAttribute('role')") == "switch":
            break
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == (
        "Pause orders-sync"
    )
    page.keyboard.press("Space")
    page.get_by_role("switch", name="Resume orders-sync").wait_for()
    assert seed.get(cid).is_active is False
    assert switch.count() == 0
    # Create a connector with the keyboard alone: Tab to each field, type, Enter.
    _tab_to(page, "el.tagName === 'A' && el.textContent.trim() === 'New connector'")
    page.keyboard.press("Enter")
    page.wait_for_url(web_only.base_url + "/connectors/new")
    _tab_to(page, "el.name === 'name'")
    page.keyboard.type("made-by-keyboard")
    _tab_to(page, "el.name === 'tables'")
    page.keyboard.type("orders, customers")
    _tab_to(page, "el.type === 'submit' && el.textContent.trim() === 'Create connector'")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/connectors/\d+$"))
    made = _connectors(web_only)[-1]
    assert made.name == "made-by-keyboard" and made.id != cid
    assert made.source_config_override["tables"] == ["orders", "customers"]


def _tab_to(page: Any, test: str, limit: int = 80) -> None:
    """Press Tab until the focused element ``el`` passes the JavaScript ``test``."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate(f"(() => {{ const el = document.activeElement; return {test}; }})()"):
            return
    raise AssertionError(f"Tab never reached an element where {test}")


def test_narrow_screen(web_only: Platform, new_page: Any) -> None:
    """At 390 px nothing scrolls sideways except the run-history table inside its box."""
    seed = Seed(web_only.settings)
    src = seed.endpoint("source", name="Sales DB")
    cid = seed.connector(
        name="orders-daily", source_id=src, schedule="30 2 * * *", tags=["finance"]
    )
    seed.connector(name="customers-hourly", source_id=src, schedule="0 * * * *")
    for i in range(8):
        seed.run(cid, rows_loaded=1000 + 150 * i)
    page = new_page(PHONE)
    login(page, web_only.base_url, "alice")
    for path, shot in (
        ("/connectors", "mobile-connectors"),
        (f"/connectors/{cid}", "mobile-connector-detail"),
        ("/connectors/new", "mobile-connector-form"),
        (f"/sources/{src}", None),
        ("/admin/audit", None),
    ):
        page.goto(web_only.base_url + path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], (path, width)
        if shot:
            screenshot(page, shot)


def test_invalid_cron_is_explained_inline_and_nothing_saved(
    web_only: Platform, new_page: Any
) -> None:
    seed = Seed(web_only.settings)
    seed.endpoint("source", name="Sales DB")
    seed.endpoint("destination", name="Warehouse")
    page = new_page(timezone_id="Asia/Tokyo")
    login(page, web_only.base_url, "alice")
    page.goto(web_only.base_url + "/connectors/new")
    # A new connector starts in the browser's time zone (static/timezone.js).
    zone = page.get_by_label("Time zone")
    expect(zone).to_have_value("Asia/Tokyo")
    expect(page.locator("#schedule-preview")).to_contain_text("Next 5 runs in Asia/Tokyo")
    # A city typed alone is not an IANA name: the preview names the zone meant.
    zone.fill("Paris")
    expect(page.locator("#schedule-preview #err-timezone")).to_contain_text("'Europe/Paris'")
    zone.fill("Asia/Tokyo")
    expect(page.locator("#schedule-preview")).to_contain_text("Next 5 runs in Asia/Tokyo")
    page.get_by_label("Connector name").fill("orders-custom")
    page.get_by_label("Tables", exact=True).fill("orders")
    page.get_by_label("Custom cron expression").check()
    cron = page.get_by_label("Cron expression", exact=True)
    cron.fill("61 * * * *")
    # Explained while typing, right under the field, before anything is sent.
    error = page.locator("#schedule-preview #err-cron")
    expect(error).to_contain_text("not a valid cron expression")
    page.get_by_role("button", name="Create connector").click()
    page.locator("#form-errors").wait_for()
    assert "Nothing was saved" in page.locator("#form-errors").inner_text()
    expect(page.locator("#schedule-preview #err-cron")).to_contain_text("61 * * * *")
    assert page.get_by_label("Cron expression", exact=True).input_value() == "61 * * * *"
    assert _connectors(web_only) == []
    # Fixed in place, it saves.
    page.get_by_label("Cron expression", exact=True).fill("*/20 7-19 * * 1-5")
    page.locator("#schedule-preview", has_text="Next 5 runs").wait_for()
    page.get_by_role("button", name="Create connector").click()
    page.wait_for_url(re.compile(r"/connectors/\d+$"))
    assert [(c.schedule, c.timezone) for c in _connectors(web_only)] == [
        ("*/20 7-19 * * 1-5", "Asia/Tokyo")
    ]
    _history_round_trip(page, web_only)


def _history_round_trip(page: Any, platform: Platform) -> None:
    """Issue 18 (on this test's server, to save starting another): change the schedule,
    see both versions side by side in History, restore the old one, see it back."""
    cid = _connectors(platform)[-1].id
    base = f"{platform.base_url}/connectors/{cid}"
    page.goto(base + "/edit")
    page.get_by_label("Cron expression", exact=True).fill("0 6 * * *")
    page.get_by_role("button", name="Save changes").click()
    page.wait_for_url(base)
    page.get_by_role("link", name="History and restore").click()
    page.get_by_role("link", name="Version 1", exact=True).click()
    changed = page.locator("#diff tr[data-changed]")
    expect(changed).to_have_count(1)
    cells = changed.locator("td")
    expect(changed.locator("th")).to_contain_text("schedule")
    expect(cells.nth(0)).to_have_text("*/20 7-19 * * 1-5")  # version 1
    expect(cells.nth(1)).to_have_text("0 6 * * *")  # now
    page.get_by_label("Yes, make version 1 the current version").check()
    page.get_by_role("button", name="Restore version 1").click()
    page.wait_for_url(base)
    expect(page.locator(".flash")).to_contain_text("Restored version 1")
    expect(page.get_by_text("cron */20 7-19 * * 1-5")).to_be_visible()
    assert [(c.schedule, c.version) for c in _connectors(platform)] == [("*/20 7-19 * * 1-5", 3)]


def test_viewer_cannot_change_anything(web_only: Platform, new_page: Any) -> None:
    seed = Seed(web_only.settings)
    src = seed.endpoint("source", name="Sales DB")
    cid = seed.connector(name="orders-sync", source_id=src, by="alice")
    seed.run(cid)
    before = [(c.name, c.is_active, c.schedule, c.version) for c in _connectors(web_only)]
    page = new_page()
    login(page, web_only.base_url, "victor")
    page.goto(web_only.base_url + "/connectors")
    assert page.get_by_text("orders-sync").count() == 1
    assert page.get_by_role("link", name="New connector").count() == 0
    assert page.get_by_role("switch").count() == 0
    page.goto(f"{web_only.base_url}/connectors/{cid}")
    for name in ("Run now", "Pause", "Resume"):
        assert page.get_by_role("button", name=name).count() == 0
    for name in ("Edit", "Delete…"):
        assert page.get_by_role("link", name=name).count() == 0
    page.goto(f"{web_only.base_url}/sources/{src}")
    assert page.locator("#endpoint-form").count() == 0
    # Straight at the server with the viewer's own session and CSRF token: refused.
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    for path, form in (
        (f"/connectors/{cid}/pause", {}),
        (f"/connectors/{cid}/toggle", {}),
        (f"/connectors/{cid}/run", {}),
        (f"/connectors/{cid}/delete", {}),
        (f"/connectors/{cid}/edit", {"name": "hacked", "schedule_preset": "manual"}),
        ("/connectors/new", {"name": "hacked", "schedule_preset": "manual"}),
        (f"/sources/{src}", {"name": "hacked"}),
        ("/admin/users", {"username": "mallory", "password": "long-enough-pw", "role": "admin"}),
    ):
        resp = page.request.post(
            web_only.base_url + path, form={**form, "csrf_token": token}, max_redirects=0
        )
        assert resp.status == 403, (path, resp.status)
    # And through the JSON API with the same session cookie (and CSRF header, so the
    # refusal is the role's, not the missing token's).
    api = page.request.post(
        f"{web_only.base_url}/api/v1/connectors/{cid}/pause", headers={"X-CSRF-Token": token}
    )
    assert api.status == 403
    assert "X-CSRF-Token" not in api.json()["detail"], api.json()
    after = [(c.name, c.is_active, c.schedule, c.version) for c in _connectors(web_only)]
    assert after == before


def test_screenshots_of_the_main_pages(web_only: Platform, new_page: Any) -> None:
    """A realistic catalogue, photographed for the docs (docs/screenshots/)."""
    from datetime import UTC, datetime, timedelta

    seed = Seed(web_only.settings)
    sales = seed.endpoint("source", name="Sales DB")
    drop = seed.endpoint(
        "source", name="Partner SFTP drop", type="filesystem", config={"path": "/data/in"}
    )
    wh = seed.endpoint("destination", name="Warehouse")
    lake = seed.endpoint(
        "destination", name="Data lake", type="filesystem", config={"path": "/data/lake"}
    )
    now = datetime.now(UTC)
    specs = [
        ("orders-daily", sales, wh, "30 2 * * *", "Europe/Paris", ["finance"], "synced", True),
        ("customers-hourly", sales, wh, "0 * * * *", "UTC", ["crm"], "synced", True),
        ("invoices", sales, lake, "0 */6 * * *", "UTC", ["finance"], "error", True),
        ("partner-files", drop, lake, "0 6 * * 1", "UTC", [], "pending", False),
        ("adhoc-export", sales, lake, None, "UTC", [], "synced", True),
    ]
    ids = []
    for i, (name, src, dst, cron, tz, tags, status, active) in enumerate(specs):
        override = (
            {"file_pattern": "*.csv"} if src == drop else {"tables": ["orders", "order_lines"]}
        )
        cid = seed.connector(
            name=name,
            source_id=src,
            destination_id=dst,
            schedule=cron,
            timezone=tz,
            tags=tags,
            is_active=active,
            source_config_override=override,
            managed_by="file" if i == 1 else "ui",
        )
        ids.append(cid)
        fields: dict[str, Any] = {"sync_status": status}
        if status == "error":
            fields["sync_error"] = "Prefect answered 422: work pool 'etl' does not exist"
        if status == "synced":
            fields.update(prefect_deployment_id=f"7d3c7f2e-0000-4000-8000-{i:012d}", synced_at=now)
        seed.set(cid, **fields)
        for k in range(24):
            started = now - timedelta(hours=6 * (24 - k))
            failed = (k + i) % 9 == 4
            seed.run(
                cid,
                status="failed" if failed else "succeeded",
                trigger="manual" if k % 6 == 0 else "schedule",
                started_at=started,
                finished_at=started + timedelta(seconds=30 + (k * 37 + i * 11) % 70),
                rows_loaded=None if failed else 9000 + (k * 1731 + i * 977) % 6000,
                error="connection reset by peer" if failed else None,
            )
    seed.run(ids[0], status="running", started_at=now, finished_at=None, rows_loaded=None)
    page = new_page()
    login(page, web_only.base_url, "alice")
    page.goto(web_only.base_url + "/admin/tokens")
    page.get_by_label("What is it for?").fill("nightly export script")
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("#new-token")).to_be_visible()
    screenshot(page, "api-token-shown-once", full_page=False)
    for path, name in (
        ("/connectors", "connectors"),
        (f"/connectors/{ids[0]}", "connector-detail"),
        (f"/connectors/{ids[0]}/delete", "connector-delete"),
        ("/sources", "sources"),
        ("/admin/users", "admin-users"),
        ("/admin/audit", "audit-log"),
    ):
        page.goto(web_only.base_url + path)
        screenshot(page, name)


def test_per_table_choices(web_only: Platform, new_page: Any) -> None:
    """Discover shows each table's columns and key; a ticked table shows its own settings
    (CSS only) and they are saved with it."""
    import sqlite3

    path = web_only.settings.data_dir / "shop-picks.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL, note TEXT)")
        db.execute("CREATE TABLE customers (code TEXT PRIMARY KEY, name TEXT)")
    seed = Seed(web_only.settings)
    seed.endpoint("source", name="Shop", config={"connection_string": f"sqlite:///{path}"})
    seed.endpoint("destination", name="Warehouse")
    page = new_page()
    add_axe(page)
    login(page, web_only.base_url, "alice")
    page.goto(web_only.base_url + "/connectors/new")
    page.get_by_label("Connector name").fill("picked-tables")
    page.get_by_role("button", name="Discover tables").click()
    orders = page.locator("tbody.table-pick", has=page.get_by_role("rowheader", name="orders"))
    expect(orders).to_contain_text("total (real)")
    settings = orders.locator("tr.table-settings")
    expect(settings).to_be_hidden()
    orders.get_by_role("checkbox", name="orders").check()
    expect(settings).to_be_visible()
    expect(settings.get_by_label("Primary key")).to_have_value("id")
    settings.get_by_role("checkbox", name="note").uncheck()
    settings.get_by_label("Write mode").select_option("append")
    assert axe_violations(page) == []  # the discovered tables and one table's settings open
    page.get_by_role("button", name="Create connector").click()
    page.wait_for_url(re.compile(r"/connectors/\d+$"))
    made = _connectors(web_only)[-1]
    assert made.source_config_override["tables"] == [
        {
            "name": "orders",
            "columns": ["id", "total"],
            "primary_key": "id",
            "write_disposition": "append",
        }
    ]
    # Edited again, the chosen table is shown as chosen, with its own settings.
    page.goto(f"{web_only.base_url}/connectors/{made.id}/edit")
    orders = page.locator("tbody.table-pick", has=page.get_by_role("rowheader", name="orders"))
    expect(orders.get_by_role("checkbox", name="orders")).to_be_checked()
    settings = orders.locator("tr.table-settings")
    expect(settings).to_be_visible()
    expect(settings.get_by_label("Columns to copy")).to_have_value("id, total")
    expect(settings.get_by_label("Write mode")).to_have_value("append")
