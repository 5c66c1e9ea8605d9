"""Connector pages: the list, the detail page, actions, roles, runs (HTML parsed)."""

from __future__ import annotations

import pytest

from conveyor.db.models import Connector
from conveyor.db.session import session_scope
from conveyor.domain.vocabulary import PAUSED_MEANS, RESUME_TO_RUN
from conveyor.settings import Settings
from tests.fixtures.ui import (
    Seed,
    UIClient,
    cheap_password_hashing,
    make_user,
    parse_html,
    unlabelled_fields,
)


@pytest.fixture
def seed(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Seed:
    cheap_password_hashing(monkeypatch)
    for name, role in (("alice", "admin"), ("eddie", "editor"), ("victor", "viewer")):
        make_user(settings, name, role)
    return Seed(settings)


@pytest.fixture
def admin(settings: Settings, seed: Seed) -> UIClient:
    return UIClient(settings).login("alice")


@pytest.fixture
def viewer(settings: Settings, seed: Seed) -> UIClient:
    return UIClient(settings).login("victor")


def _row(doc, connector_id: int):  # type: ignore[no-untyped-def]
    row = doc.find("tr", id=f"connector-{connector_id}")
    assert row is not None
    return {td.attrs["data-label"]: td for td in row.find_all("td")}


def test_list_shows_what_a_user_needs(seed: Seed, admin: UIClient) -> None:
    cid = seed.connector(name="orders-sync", tags=["finance"], schedule="0 */6 * * *")
    seed.run(cid, rows_loaded=1234)
    seed.set(cid, sync_status="error", sync_error="work pool 'etl' does not exist")
    doc = admin.page("/connectors")
    cells = _row(doc, cid)
    assert cells["Name"].find("a").text == "orders-sync"
    assert "finance" in cells["Name"].text
    assert "→" in cells["From → to"].text
    assert cells["Schedule"].text == "Every 6 hours, UTC"
    assert cells["Next run"].find("time") is not None
    assert "succeeded" in cells["Last run"].text
    assert "1 234 rows" in cells["Last run"].text.replace("\u202f", " ")
    assert "42.0 s" in cells["Last run"].text or "42 s" in cells["Last run"].text
    badge = cells["Sync"].find("span")
    assert badge.text == "sync error"
    assert badge.attrs["title"] == "work pool 'etl' does not exist"
    switch = cells["Active"].find("button")
    assert switch.attrs["role"] == "switch" and switch.attrs["aria-checked"] == "true"
    assert unlabelled_fields(doc) == []


def test_search_filters_and_pagination(seed: Seed, admin: UIClient) -> None:
    src, dst = seed.endpoint("source"), seed.endpoint("destination")
    ids = [
        seed.connector(
            name=f"c-{i:03d}", source_id=src, destination_id=dst, tags=["t"] if i % 2 else []
        )
        for i in range(55)
    ]
    seed.set(ids[3], is_active=False)
    seed.set(ids[4], sync_status="synced")
    seed.run(ids[5], status="failed", rows_loaded=None, error="boom")

    def names(url: str) -> list[str]:
        return [a.text for a in admin.page(url).find_all("a", class_="name")]

    first = admin.page("/connectors")
    assert len(first.find_all("a", class_="name")) == 50
    nxt = first.find("a", rel="next")
    assert nxt is not None
    rest = names(nxt.attrs["href"])
    assert len(rest) == 5 and rest[-1] == "c-054"
    assert names("/connectors?q=C-01") == [f"c-{i:03d}" for i in range(10, 20)]
    assert names("/connectors?status=state:paused") == ["c-003"]
    assert names("/connectors?status=sync:synced") == ["c-004"]
    assert names("/connectors?status=run:failed") == ["c-005"]
    assert len(names("/connectors?tag=t")) == 27
    tag_options = [
        o.attrs["value"]
        for o in admin.page("/connectors").find("select", name="tag").find_all("option")
    ]
    assert tag_options == ["", "t"]
    # Filters survive into the next-page link.
    page = admin.page("/connectors?tag=t&q=c-")
    assert page.find("a", rel="next") is None
    assert "No connector matches" in admin.page("/connectors?q=zzz").text


def test_list_polls_fast_only_while_something_is_in_flight(seed: Seed, admin: UIClient) -> None:
    cid = seed.connector()
    seed.set(cid, sync_status="synced")
    rows = admin.page("/connectors").by_id("rows")
    assert "every 30s" in rows.attrs["hx-trigger"]
    seed.run(cid, status="running", finished_at=None, rows_loaded=None)
    rows = admin.page("/connectors").by_id("rows")
    assert "every 3s" in rows.attrs["hx-trigger"]
    # The poll itself returns just the table.
    resp = admin.htmx("GET", "/connectors", headers={"HX-Target": "rows"})
    assert resp.status_code == 200 and resp.text.lstrip().startswith('<div id="rows"')


def test_toggle_pauses_and_resumes_from_the_list(seed: Seed, admin: UIClient) -> None:
    cid = seed.connector()
    resp = admin.htmx("POST", f"/connectors/{cid}/toggle")
    assert resp.status_code == 200
    row = parse_html(resp.text).find("tr", id=f"connector-{cid}")
    assert row.find("button").attrs["aria-checked"] == "false"
    assert seed.get(cid).is_active is False
    assert seed.get(cid).sync_status == "pending"
    resp = admin.post(f"/connectors/{cid}/toggle")
    assert resp.status_code == 303
    assert seed.get(cid).is_active is True


def test_detail_page(seed: Seed, admin: UIClient, settings: Settings) -> None:
    cid = seed.connector(name="orders-sync", schedule="30 2 * * *", timezone="Europe/Paris")
    seed.set(cid, sync_status="synced", prefect_deployment_id="dep-123")
    r1 = seed.run(cid, rows_loaded=10)
    seed.run(cid, status="failed", rows_loaded=None, error="connection reset by peer")
    doc = admin.page(f"/connectors/{cid}")
    assert doc.find("h1").text == "orders-sync"
    assert "At 02:30, Europe/Paris" in doc.text
    assert len(doc.find("h2", id="h-schedule").parent.find("ol").find_all("li")) == 5
    assert "CET" in doc.text or "CEST" in doc.text
    link = doc.find("a", class_="ext")
    base = settings.prefect_api_url.removesuffix("/api")
    assert link.attrs["href"] == f"{base}/deployments/deployment/dep-123"
    assert "Tables: orders" in doc.text
    runs = doc.find("table", class_="list runs").find("tbody").find_all("tr")
    assert len(runs) == 2
    assert "connection reset by peer" in runs[0].text
    assert runs[1].find("a").attrs["href"] == f"/runs/{r1}"
    chart = doc.find("svg")  # one bar a day: both runs fall on today, one of them failed
    assert chart is not None and len(chart.find_all("rect")) == 1
    assert "2 runs, 1 failed · 10 rows · 42 s per run" in chart.find("rect").text
    for label in ("Run now", "Pause", "Edit", "Delete…"):
        assert any(b.text == label for b in doc.find_all("button") + doc.find_all("a"))


def test_prefect_ui_url_setting_wins(seed: Seed, settings: Settings) -> None:
    s = settings.model_copy(update={"prefect_ui_url": "https://prefect.example.com/"})
    ui = UIClient(s).login("alice")
    cid = seed.connector()
    seed.set(cid, prefect_deployment_id="abc")
    link = ui.page(f"/connectors/{cid}").find("a", class_="ext")
    assert link.attrs["href"] == "https://prefect.example.com/deployments/deployment/abc"


def test_live_part_polls_while_busy(seed: Seed, admin: UIClient) -> None:
    cid = seed.connector()
    live = admin.page(f"/connectors/{cid}").by_id("live")
    assert "every 2s" in live.attrs["hx-trigger"]  # sync pending
    seed.set(cid, sync_status="synced")
    assert "every 15s" in admin.page(f"/connectors/{cid}").by_id("live").attrs["hx-trigger"]
    run = seed.run(cid, status="running", finished_at=None, rows_loaded=None)
    resp = admin.get(f"/connectors/{cid}/live")
    doc = parse_html(resp.text)
    assert "every 2s" in doc.by_id("live").attrs["hx-trigger"]
    assert "running" in doc.text
    # The run finishes: the next poll shows it, with its rows.
    from datetime import UTC, datetime

    from conveyor.db.models import ConnectorRun

    with session_scope(seed.settings.effective_database_url) as session:
        r = session.get(ConnectorRun, run)
        r.status, r.rows_loaded, r.finished_at = "succeeded", 777, datetime.now(UTC)
    doc = parse_html(admin.get(f"/connectors/{cid}/live").text)
    assert "succeeded" in doc.text and "777" in doc.text
    assert "every 15s" in doc.by_id("live").attrs["hx-trigger"]


def test_pause_resume_and_run_now(seed: Seed, admin: UIClient) -> None:
    cid = seed.connector()
    assert admin.post(f"/connectors/{cid}/pause").status_code == 303
    assert seed.get(cid).is_active is False
    doc = admin.page(f"/connectors/{cid}")
    # One wording for paused (the flash, the schedule card, the API's 409), and Run now
    # stays in place, disabled, saying why (issue 22: it disappeared).
    paused = f"Paused: {PAUSED_MEANS}."
    assert doc.find("div", class_="flash ok").text.strip() == paused
    assert paused in doc.find("p", class_="notice").text
    run_now = doc.find("button", id="run-now")
    assert run_now is not None and run_now.text == "Run now"
    assert "disabled" in run_now.attrs
    why = doc.find("span", id=run_now.attrs["aria-describedby"])
    assert why is not None and why.text == RESUME_TO_RUN == "Resume the connector to run it"
    assert any(b.text == "Resume" for b in doc.find_all("button"))
    admin.post(f"/connectors/{cid}/resume")
    assert seed.get(cid).is_active is True
    resp = admin.post(f"/connectors/{cid}/run")
    assert resp.status_code == 303
    # Not synced to Prefect yet: the reason is shown on the page, nothing crashes.
    page = admin.page(f"/connectors/{cid}")
    flash = page.find("div", class_="flash error")
    assert flash is not None and "not synced to Prefect yet" in flash.text


def test_delete_asks_first_naming_what_goes(seed: Seed, admin: UIClient) -> None:
    src = seed.endpoint("source", name="Sales DB")
    cid = seed.connector(name="orders-sync", source_id=src)
    for _ in range(3):
        seed.run(cid)
    doc = admin.page(f"/connectors/{cid}/delete")
    text = doc.text
    assert "orders-sync" in text and "3 runs" in text
    assert f"connector-{cid}" in text  # the Prefect deployment
    assert "Kept: the source Sales DB" in text
    assert seed.get(cid) is not None  # asking deleted nothing
    resp = admin.post(f"/connectors/{cid}/delete")
    assert resp.headers["location"] == "/connectors"
    assert seed.get(cid) is None
    assert "Deleted connector 'orders-sync'" in admin.page("/connectors").text


def test_run_page_shows_rows_per_table_and_log(seed: Seed, admin: UIClient) -> None:
    cid = seed.connector(name="orders-sync")
    rid = seed.run(
        cid,
        table_stats={"orders": {"rows": 1000}, "order_lines": 234},
        log_summary="Extracted 2 tables\nLoaded 1234 rows",
    )
    doc = admin.page(f"/runs/{rid}")
    rows = {
        tr.find_all("td")[0].text: tr.find_all("td")[1].text
        for tr in doc.find_all("tbody")[0].find_all("tr")
    }
    assert rows == {"order_lines": "234", "orders": "1 000"}
    assert "Loaded 1234 rows" in doc.find("pre").text
    assert doc.by_id("run-live").attrs.get("hx-trigger") is None  # finished: no polling
    running = seed.run(cid, status="running", finished_at=None, rows_loaded=None)
    assert "every 2s" in admin.page(f"/runs/{running}").by_id("run-live").attrs["hx-trigger"]
    admin.page("/runs/999999", status=404)


def test_viewer_sees_everything_but_no_change_controls(seed: Seed, viewer: UIClient) -> None:
    cid = seed.connector(name="orders-sync")
    seed.run(cid)
    listing = viewer.page("/connectors")
    assert "orders-sync" in listing.text
    assert listing.find("a", href="/connectors/new") is None
    assert listing.find("button", role="switch") is None
    detail = viewer.page(f"/connectors/{cid}")
    assert [
        f for f in detail.find_all("form") if f.attrs.get("action", "").startswith("/connectors")
    ] == []
    assert detail.find("a", href=f"/connectors/{cid}/edit") is None
    # The confirmation page itself is refused (403), not a page with a disabled button.
    assert "cannot delete this connector" in viewer.page(f"/connectors/{cid}/delete", 403).text


def test_viewer_posting_directly_is_refused_and_changes_nothing(
    seed: Seed, viewer: UIClient
) -> None:
    cid = seed.connector(name="orders-sync")
    before = seed.get(cid)
    for url in ("pause", "resume", "toggle", "run", "delete", "edit"):
        resp = viewer.post(
            f"/connectors/{cid}/{url}", {"name": "hacked", "schedule_preset": "manual"}
        )
        assert resp.status_code == 403, url
    resp = viewer.post("/connectors/new", {"name": "x", "schedule_preset": "manual"})
    assert resp.status_code == 403
    after = seed.get(cid)
    assert (after.name, after.is_active, after.version) == (
        before.name,
        before.is_active,
        before.version,
    )
    with session_scope(seed.settings.effective_database_url) as session:
        assert session.query(Connector).count() == 1


def test_editor_cannot_change_someone_elses_connector(seed: Seed, settings: Settings) -> None:
    cid = seed.connector(by="alice")
    editor = UIClient(settings).login("eddie")
    doc = editor.page(f"/connectors/{cid}")
    assert doc.find("a", href=f"/connectors/{cid}/edit") is None
    assert editor.post(f"/connectors/{cid}/pause").status_code == 403
    assert seed.get(cid).is_active is True
    own = seed.connector(by="eddie")
    assert editor.post(f"/connectors/{own}/pause").status_code == 303


def test_missing_connector_is_a_404_page(admin: UIClient) -> None:
    doc = admin.page("/connectors/424242", status=404)
    assert "does not exist" in doc.text


def test_every_page_links_the_api_reference(admin: UIClient) -> None:
    doc = admin.page("/connectors")
    link = doc.find("a", href="/docs")
    assert link is not None and link.text == "API docs"
    assert admin.get("/docs").status_code == 200
