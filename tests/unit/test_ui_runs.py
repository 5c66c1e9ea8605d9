"""A run's page (issue 17): the failure class in words with a link to the endpoint at fault,
earlier attempts, the waiting reason, the full log and its download, Retry / Cancel shown
only to those allowed, new statuses and classes in the connector's run history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conveyor.settings import Settings
from tests.fixtures.ui import Seed, UIClient, cheap_password_hashing, make_user


@pytest.fixture
def seed(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Seed:
    cheap_password_hashing(monkeypatch)
    for name, role in (("alice", "admin"), ("eddie", "editor"), ("victor", "viewer")):
        make_user(settings, name, role)
    return Seed(settings)


@pytest.fixture
def admin(settings: Settings, seed: Seed) -> UIClient:
    return UIClient(settings).login("alice")


def _failed(seed: Seed, cid: int, **data: object) -> int:
    body: dict[str, object] = {
        "status": "failed",
        "rows_loaded": None,
        "table_stats": {},
        "error": "password authentication failed for user 'shop'",
        "failure_class": "config",
        "failure_side": "source",
    }
    body.update(data)
    return seed.run(cid, **body)


def test_config_failure_says_what_to_do_and_links_the_source(seed: Seed, admin: UIClient) -> None:
    src = seed.endpoint("source", name="Shop DB")
    cid = seed.connector(name="orders", source_id=src)
    rid = _failed(seed, cid)
    doc = admin.page(f"/runs/{rid}")
    failure = doc.by_id("run-failure")
    assert failure is not None
    assert "Settings problem" in failure.text and "config" in failure.text
    assert "Check them on the source's page, test the connection, then Retry" in failure.text
    assert "does not retry this on its own" in failure.text
    link = failure.find("a")
    assert link is not None and link.attrs["href"] == f"/sources/{src}"
    assert "Shop DB" in link.text
    assert "password authentication failed" in doc.by_id("run-error").text
    buttons = [b.text for b in doc.by_id("run-live").find_all("button")]
    assert buttons == ["Retry"]
    form = doc.by_id("run-live").find("form")
    assert form.attrs["action"] == f"/runs/{rid}/retry"
    assert form.find("input", name="csrf_token") is not None


def test_destination_side_links_the_destination(seed: Seed, admin: UIClient) -> None:
    dst = seed.endpoint("destination", name="Warehouse")
    cid = seed.connector(name="orders", destination_id=dst)
    rid = _failed(seed, cid, failure_side="destination", error="permission denied")
    failure = admin.page(f"/runs/{rid}").by_id("run-failure")
    assert "destination refused" in failure.text
    assert failure.find("a").attrs["href"] == f"/destinations/{dst}"


@pytest.mark.parametrize(
    ("cls", "words"),
    [
        ("data", "The data did not fit"),
        ("internal", "looks like a bug"),
        ("transient", "usually passes on its own"),
    ],
)
def test_each_class_in_words(seed: Seed, admin: UIClient, cls: str, words: str) -> None:
    cid = seed.connector(name="orders")
    rid = _failed(seed, cid, failure_class=cls, failure_side=None)
    failure = admin.page(f"/runs/{rid}").by_id("run-failure")
    assert words in failure.text
    assert failure.find("a") is None  # no side: no link


def test_retrying_run_shows_attempts_next_time_and_cancel(seed: Seed, admin: UIClient) -> None:
    cid = seed.connector(name="orders")
    first = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    rid = seed.run(
        cid,
        status="retrying",
        finished_at=None,
        rows_loaded=None,
        table_stats={},
        failure_class="transient",
        failure_side="source",
        error="connection refused",
        attempt=2,
        max_attempts=3,
        next_attempt_at=datetime.now(UTC) + timedelta(minutes=5),
        waiting_reason="retrying in 300 s: attempt 2 of 3 — the source did not answer",
        attempts=[
            {
                "attempt": 1,
                "prefect_flow_run_id": "f1",
                "started_at": first.isoformat(),
                "finished_at": (first + timedelta(seconds=3)).isoformat(),
                "status": "failed",
                "failure_class": "transient",
                "error": "connection refused",
            }
        ],
    )
    doc = admin.page(f"/runs/{rid}")
    live = doc.by_id("run-live")
    assert "every 2s" in live.attrs["hx-trigger"]
    assert "Conveyor retries it: attempt 2 of 3, next at" in doc.by_id("run-failure").text
    waiting = doc.by_id("run-waiting").text
    assert waiting == "Retrying in 300 s: attempt 2 of 3 — the source did not answer"
    assert doc.by_id("run-attempt").text.startswith("2 of 3")
    rows = doc.by_id("run-attempts").find("tbody").find_all("tr")
    assert len(rows) == 1
    cells = {td.attrs["data-label"]: td.text for td in rows[0].find_all("td")}
    assert cells["Attempt"] == "1" and cells["Class"] == "transient"
    assert cells["Started"] == "2026-03-01 10:00 UTC"
    assert "connection refused" in cells["Error"]
    assert [b.text for b in live.find_all("button")] == ["Cancel run"]
    assert live.find("form").attrs["action"] == f"/runs/{rid}/cancel"


def test_waiting_reason_only_while_open(seed: Seed, admin: UIClient) -> None:
    cid = seed.connector(name="orders")
    open_id = seed.run(
        cid,
        status="running",
        finished_at=None,
        waiting_reason="waiting for the DuckDB file held by another process",
        attempt=2,
        max_attempts=5,
        rows_loaded=None,
    )
    assert admin.page(f"/runs/{open_id}").by_id("run-waiting").text == (
        "Waiting for the DuckDB file held by another process, attempt 2 of 5"
    )
    done = seed.run(cid, waiting_reason="waiting: destination busy")
    assert admin.page(f"/runs/{done}").by_id("run-waiting") is None
    assert admin.page(f"/runs/{done}").by_id("run-failure") is None  # succeeded: no advice


def test_viewer_and_other_editor_see_no_buttons(seed: Seed, settings: Settings) -> None:
    cid = seed.connector(name="orders", by="alice")
    failed = _failed(seed, cid)
    running = seed.run(cid, status="running", finished_at=None)
    for who in ("victor", "eddie"):
        client = UIClient(settings).login(who)
        for rid in (failed, running):
            live = client.page(f"/runs/{rid}").by_id("run-live")
            assert live.find_all("button") == [], (who, rid)
        for action, rid in (("retry", failed), ("cancel", running)):
            resp = client.post(f"/runs/{rid}/{action}")
            assert resp.status_code == 403, (who, action, resp.text[:300])


def test_history_shows_new_statuses_and_the_class(seed: Seed, admin: UIClient) -> None:
    cid = seed.connector(name="orders")
    _failed(seed, cid)
    seed.run(cid, status="skipped", trigger="schedule", started_at=None, finished_at=None)
    seed.run(cid, status="retrying", failure_class="transient", finished_at=None)
    rows = admin.page(f"/connectors/{cid}").find("table", class_="list runs").find_all("tr")[1:]
    statuses = [tr.find("td", **{"data-label": "Status"}).text for tr in rows]
    assert statuses == ["retrying transient", "skipped", "failed config"]
    badge = rows[0].find("span", class_="badge run")
    assert badge is not None  # an open run: the spinner badge


def test_full_log_tail_on_the_page_and_whole_in_the_download(
    seed: Seed, admin: UIClient, settings: Settings
) -> None:
    from conveyor.db.session import session_scope
    from conveyor.services import run_logs

    cid = seed.connector(name="orders")
    rid = seed.run(cid, log_summary="loaded 2 tables")
    with session_scope(settings.effective_database_url) as session:
        for start in (1, 301):  # two chunks, as the flow writes them
            text = "".join(f"line {i}\n" for i in range(start, start + 300))
            run_logs.append_chunk(rid, text, session=session)
    doc = admin.page(f"/runs/{rid}")
    shown = doc.by_id("run-log").text.split(" ")
    assert shown[:2] == ["line", "101"] and shown[-2:] == ["line", "600"]
    assert (
        "the download has the whole log" in doc.find("section", **{"aria-labelledby": "h-log"}).text
    )
    link = doc.find("a", href=f"/runs/{rid}/log")
    assert link is not None and link.text == "Download full log"
    resp = admin.get(f"/runs/{rid}/log")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    assert "attachment" in resp.headers["content-disposition"]
    assert resp.text.splitlines() == [f"line {i}" for i in range(1, 601)]
    assert admin.get("/runs/999999/log").status_code == 404


def test_cancel_of_a_run_not_started_closes_it(seed: Seed, admin: UIClient) -> None:
    cid = seed.connector(name="orders")
    rid = seed.run(cid, status="scheduled", started_at=None, finished_at=None, rows_loaded=None)
    resp = admin.post(f"/runs/{rid}/cancel")
    assert resp.status_code == 303 and resp.headers["location"] == f"/runs/{rid}"
    doc = admin.page(f"/runs/{rid}")
    assert f"Run {rid} cancelled." in doc.find("div", class_="flash ok").text
    assert "cancelled" in doc.find("dl", class_="summary").text
    assert [b.text for b in doc.by_id("run-live").find_all("button")] == ["Retry"]
    # Cancelling again: refused with the reason, nothing changes.
    admin.post(f"/runs/{rid}/cancel")
    assert "Could not cancel" in admin.page(f"/runs/{rid}").find("div", class_="flash error").text


def test_reset_asks_first_then_clears_the_state(seed: Seed, admin: UIClient) -> None:
    cid = seed.connector(name="orders")
    before = seed.get(cid).state_key
    detail = admin.page(f"/connectors/{cid}")
    assert detail.find("a", href=f"/connectors/{cid}/reset").text == "Reset…"
    confirm = admin.page(f"/connectors/{cid}/reset")
    form = confirm.by_id("reset-form")
    assert form.attrs["action"] == f"/connectors/{cid}/reset"
    assert confirm.find("label", **{"for": "f-drop-tables"}) is not None
    assert "next run then reads everything" in confirm.find("section").text
    assert seed.get(cid).state_key == before  # the page alone changes nothing
    resp = admin.post(f"/connectors/{cid}/reset", {"drop_tables": "false"})
    assert resp.status_code == 303 and resp.headers["location"] == f"/connectors/{cid}"
    assert seed.get(cid).state_key not in (None, before)
    flash = admin.page(f"/connectors/{cid}").find("div", class_="flash ok").text
    assert "next run reloads" in flash


def test_reset_refused_while_a_run_is_open(seed: Seed, admin: UIClient) -> None:
    cid = seed.connector(name="orders")
    seed.run(cid, status="running", finished_at=None)
    before = seed.get(cid).state_key
    admin.post(f"/connectors/{cid}/reset", {"drop_tables": "false"})
    assert (
        "Could not reset" in admin.page(f"/connectors/{cid}").find("div", class_="flash error").text
    )
    assert seed.get(cid).state_key == before


def test_schema_changes_are_a_table_and_a_system_pause_says_why(
    seed: Seed, admin: UIClient
) -> None:
    cid = seed.connector(name="orders", schema_changes="pause")
    rid = seed.run(
        cid,
        status="succeeded",
        rows_loaded=3,
        table_stats={"orders": 3},
        schema_changes=[
            {"table": "orders", "columns": ["discount"], "types": {"discount": "double"}},
            {"table": "orders", "columns": ["price__v_text"], "types": {"price__v_text": "text"}},
            {"table": "customers", "columns": ["id", "name"]},  # a run from before types
        ],
    )
    doc = admin.page(f"/runs/{rid}")
    table = doc.by_id("run-schema-changes")
    assert table is not None and "{" not in table.text
    rows = [[td.text.strip() for td in tr.find_all("td")] for tr in table.find_all("tr")[1:]]
    assert rows == [
        ["orders", "discount (double)", "price → text (stored in price__v_text)"],
        ["customers", "id, name", "—"],
    ]
    page = admin.page(f"/connectors/{cid}")
    assert "Pause (pause)" in page.by_id("schema-changes").text
    assert page.by_id("paused-reason") is None
    seed.set(cid, is_active=False, paused_reason="The source has a new column 'discount'")
    reason = admin.page(f"/connectors/{cid}").by_id("paused-reason")
    assert reason is not None and "new column 'discount'" in reason.text


def test_connector_and_run_pages_say_where_the_data_landed(
    seed: Seed, admin: UIClient, settings: Settings
) -> None:
    cid = seed.connector(name="orders")
    rid = seed.run(cid)  # loaded orders and order_lines
    for page in (admin.page(f"/connectors/{cid}"), admin.page(f"/runs/{rid}")):
        section = page.by_id("landing")
        assert section is not None
        path = settings.data_dir / "conveyor.duckdb"
        assert f"DuckDB file {path}, schema connector_{cid}" in section.text
        places = [li.text for li in section.find_all("li")]
        assert places == [f"connector_{cid}.order_lines", f"connector_{cid}.orders"]
        query = page.by_id("landing-query").attrs["value"]
        assert query == f'duckdb {path} -c "SELECT * FROM connector_{cid}.order_lines LIMIT 10"'
        assert f"connector_{cid}_staging" in section.text  # dlt's merge staging, explained
