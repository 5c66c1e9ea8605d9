"""The guided connector form: presets, inline sources, live helpers, errors by field."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from conveyor.db.models import Connector, Destination, Source
from conveyor.db.session import session_scope
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
    make_user(settings, "alice", "admin")
    return Seed(settings)


@pytest.fixture
def ui(settings: Settings, seed: Seed) -> UIClient:
    return UIClient(settings).login("alice")


@pytest.fixture
def sqlite_source(tmp_path: Path) -> str:
    """A real SQLite database with two tables, as a source's connection string."""
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL)")
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    return f"sqlite:///{path}"


def _form(seed: Seed, **fields: Any) -> dict[str, Any]:
    data = {
        "name": "orders-sync",
        "source_mode": "existing",
        "source_id": str(seed.endpoint("source")),
        "destination_mode": "existing",
        "destination_id": str(seed.endpoint("destination")),
        "copy_mode": "tables",
        "tables": "orders, order_lines",
        "schedule_preset": "every_6_hours",
        "schedule_time": "02:00",
        "schedule_weekday": "1",
        "cron": "",
        "timezone": "UTC",
        "is_active": ["false", "true"],
    }
    data.update(fields)
    return data


def _count(settings: Settings, model: Any) -> int:
    with session_scope(settings.effective_database_url) as session:
        return session.query(model).count()


def test_new_form_is_labelled_and_prefilled(seed: Seed, ui: UIClient) -> None:
    seed.endpoint("source", name="Sales DB")
    doc = ui.page("/connectors/new")
    assert unlabelled_fields(doc) == []
    presets = [i.attrs["value"] for i in doc.find_all("input", name="schedule_preset")]
    assert presets == ["hourly", "every_6_hours", "daily", "weekly", "manual", "cron"]
    assert doc.find("input", name="schedule_preset", checked="").attrs["value"] == "daily"
    assert "Next 5 runs in UTC" in doc.by_id("schedule-preview").text
    assert len(doc.by_id("schedule-preview").find_all("li")) == 5
    # A searchable list of IANA zones; the browser's zone replaces UTC (static/timezone.js).
    tz = doc.by_id("f-timezone")
    assert "data-browser-timezone" in tz.attrs and tz.attrs["list"] == "timezones"
    zones = [o.attrs["value"] for o in doc.by_id("timezones").find_all("option")]
    assert "Europe/Paris" in zones and "UTC" in zones
    assert doc.find("script", src="/static/timezone.js") is not None
    # An existing source is picked by default; its type decides the copy fields.
    assert doc.find("input", name="copy_mode") is not None
    assert doc.find("button", **{"hx-post": "/connectors/form/discover"}) is not None
    # Secret inputs of the inline panels never carry a value.
    for field in doc.find_all("input", type="password"):
        assert field.attrs["value"] == ""


@pytest.mark.parametrize(
    ("fields", "cron", "words"),
    [
        ({"schedule_preset": "hourly"}, "0 * * * *", "Every hour, UTC"),
        ({"schedule_preset": "every_6_hours"}, "0 */6 * * *", "Every 6 hours, UTC"),
        ({"schedule_preset": "daily", "schedule_time": "07:45"}, "45 7 * * *", "At 07:45, UTC"),
        (
            {"schedule_preset": "weekly", "schedule_time": "06:00", "schedule_weekday": "5"},
            "0 6 * * 5",
            "At 06:00, only on Friday, UTC",
        ),
        ({"schedule_preset": "manual"}, None, "Manual only"),
        ({"schedule_preset": "cron", "cron": "*/15 * * * 1-5"}, "*/15 * * * 1-5", None),
    ],
)
def test_create_with_each_preset(
    seed: Seed, ui: UIClient, fields: dict[str, str], cron: str | None, words: str | None
) -> None:
    resp = ui.post("/connectors/new", _form(seed, **fields))
    assert resp.status_code == 303, resp.text
    cid = int(resp.headers["location"].rsplit("/", 1)[1])
    c = seed.get(cid)
    assert c.schedule == cron
    assert c.managed_by == "ui"
    assert c.sync_status == "pending"
    assert c.source_config_override == {"tables": ["orders", "order_lines"]}
    doc = ui.page(resp.headers["location"])
    assert "Connector created" in doc.text
    if words:
        assert words in doc.text


def test_invalid_cron_is_explained_next_to_the_field_and_nothing_saved(
    seed: Seed, ui: UIClient, settings: Settings
) -> None:
    form = _form(seed, schedule_preset="cron", cron="61 * * * *")
    resp = ui.post("/connectors/new", form)
    assert resp.status_code == 422
    doc = parse_html(resp.text)
    preview = doc.by_id("schedule-preview")
    err = preview.find("p", id="err-cron")
    assert err is not None and "61 * * * *" in err.text and "not a valid cron" in err.text
    assert doc.find("input", name="cron").attrs["aria-invalid"] == "true"
    assert "Nothing was saved" in doc.text
    # What the user typed is still there.
    assert doc.find("input", name="name").attrs["value"] == "orders-sync"
    assert doc.find("input", name="schedule_preset", checked="").attrs["value"] == "cron"
    assert _count(settings, Connector) == 0
    # Too few fields gets its own explanation.
    resp = ui.post("/connectors/new", _form(seed, schedule_preset="cron", cron="0 2 * *"))
    assert "expected 5 fields" in parse_html(resp.text).find("p", id="err-cron").text
    assert _count(settings, Connector) == 0


def test_schedule_preview_is_live_and_in_the_chosen_timezone(ui: UIClient) -> None:
    resp = ui.htmx(
        "GET",
        "/connectors/form/schedule",
        params={"schedule_preset": "daily", "schedule_time": "09:30", "timezone": "Asia/Tokyo"},
    )
    doc = parse_html(resp.text)
    assert "At 09:30, Asia/Tokyo" in doc.text
    times = [t.text for t in doc.find_all("time")]
    assert len(times) == 5 and all(t.endswith("09:30 JST") for t in times)
    bad = parse_html(
        ui.htmx(
            "GET", "/connectors/form/schedule", params={"schedule_preset": "cron", "cron": "x"}
        ).text
    )
    assert "not a cron expression" in bad.find("p", id="err-cron").text
    tz = parse_html(
        ui.htmx(
            "GET",
            "/connectors/form/schedule",
            params={"schedule_preset": "hourly", "timezone": "Mars/Base"},
        ).text
    )
    assert "not an IANA timezone" in tz.find("p", id="err-timezone").text
    manual = parse_html(
        ui.htmx("GET", "/connectors/form/schedule", params={"schedule_preset": "manual"}).text
    )
    assert "Manual only" in manual.text and not manual.find_all("time")


def test_errors_sit_next_to_their_fields(seed: Seed, ui: UIClient, settings: Settings) -> None:
    form = _form(seed, name="bad/name", tags="ok, no spaces allowed", timezone="Nowhere/City")
    resp = ui.post("/connectors/new", form)
    assert resp.status_code == 422
    doc = parse_html(resp.text)
    assert "string should match pattern" in doc.find("p", id="err-name").text.lower()
    assert doc.find("p", id="err-tags") is not None
    assert "not an IANA timezone" in doc.find("p", id="err-timezone").text
    assert _count(settings, Connector) == 0


def test_query_and_merge_need_their_parts(seed: Seed, ui: UIClient, settings: Settings) -> None:
    resp = ui.post(
        "/connectors/new",
        _form(seed, copy_mode="query", query="DELETE FROM orders", write_disposition="merge"),
    )
    assert resp.status_code == 422
    doc = parse_html(resp.text)
    text = doc.find("fieldset", id="copy-section").text
    assert "query must be a SELECT statement, not DELETE" in text
    # A valid query: now the missing merge key is reported.
    resp = ui.post(
        "/connectors/new",
        _form(seed, copy_mode="query", query="SELECT * FROM orders", write_disposition="merge"),
    )
    assert resp.status_code == 422
    assert "needs primary_key" in parse_html(resp.text).find("fieldset", id="copy-section").text
    assert _count(settings, Connector) == 0
    resp = ui.post(
        "/connectors/new",
        _form(
            seed,
            copy_mode="query",
            query="SELECT * FROM orders",
            write_disposition="merge",
            primary_key="id",
        ),
    )
    assert resp.status_code == 303
    assert _count(settings, Connector) == 1


def test_inline_source_and_destination_are_created_with_the_connector(
    seed: Seed, ui: UIClient, settings: Settings, sqlite_source: str
) -> None:
    form = _form(
        seed,
        source_mode="new",
        **{
            "source.new.name": "Shop DB",
            "source.new.type": "sql_database",
            "source.cfg.connection_string": sqlite_source,
            "destination_mode": "new",
            "destination.new.name": "Local DuckDB",
            "destination.new.type": "duckdb",
        },
    )
    before_src, before_dst = _count(settings, Source), _count(settings, Destination)
    resp = ui.post("/connectors/new", form)
    assert resp.status_code == 303, resp.text
    c = seed.get(int(resp.headers["location"].rsplit("/", 1)[1]))
    assert c.source.name == "Shop DB" and c.destination.name == "Local DuckDB"
    # The secret is stored encrypted.
    assert c.source.config["connection_string"].startswith("fernet:")
    assert (_count(settings, Source), _count(settings, Destination)) == (
        before_src + 1,
        before_dst + 1,
    )


def test_a_bad_inline_source_saves_nothing_at_all(
    seed: Seed, ui: UIClient, settings: Settings
) -> None:
    form = _form(
        seed,
        source_mode="new",
        **{
            "source.new.name": "Half DB",
            "source.new.type": "sql_database",
            "source.cfg.host": "db.example.com",
            "source.cfg.port": "not-a-port",
            "destination_mode": "new",
            "destination.new.name": "Fine DuckDB",
            "destination.new.type": "duckdb",
        },
    )
    before = (_count(settings, Source), _count(settings, Destination), _count(settings, Connector))
    resp = ui.post("/connectors/new", form)
    assert resp.status_code == 422
    doc = parse_html(resp.text)
    assert "not a whole number" in doc.find("p", id="err-source-cfg-port").text
    # The inline panel keeps what was typed, except secrets.
    assert doc.find("input", name="source.cfg.host").attrs["value"] == "db.example.com"
    assert doc.find("input", name="source_mode", value="new").attrs.get("checked") == ""
    after = (_count(settings, Source), _count(settings, Destination), _count(settings, Connector))
    assert after == before
    # A duplicate connector name after the inline endpoints were written rolls them back.
    seed.connector(name="taken")
    form.update({"source.cfg.port": "5432", "source.cfg.database": "sales", "name": "taken"})
    resp = ui.post("/connectors/new", form)
    assert resp.status_code == 422
    assert "already exists" in parse_html(resp.text).find("p", id="err-name").text
    assert _count(settings, Source) == before[0] + 1  # only the one seed.connector made
    assert _count(settings, Connector) == 1


def test_test_connection_in_the_form_fails_then_passes(
    seed: Seed, ui: UIClient, sqlite_source: str, tmp_path: Path
) -> None:
    base = {"source_mode": "new", "source.new.type": "sql_database"}
    bad = {**base, "source.cfg.connection_string": f"sqlite:///{tmp_path}/missing/dir/x.db"}
    doc = parse_html(ui.htmx("POST", "/connectors/form/test?kind=source", data=bad).text)
    assert doc.find("p", class_="check bad") is not None
    assert "Connection failed" in doc.text
    good = {**base, "source.cfg.connection_string": sqlite_source}
    doc = parse_html(ui.htmx("POST", "/connectors/form/test?kind=source", data=good).text)
    assert doc.find("p", class_="check ok") is not None, doc.text
    # An existing destination is tested with its stored settings.
    dst = seed.endpoint("destination", config={"path": str(tmp_path / "out.duckdb")})
    data = {"destination_mode": "existing", "destination_id": str(dst)}
    doc = parse_html(ui.htmx("POST", "/connectors/form/test?kind=destination", data=data).text)
    assert doc.find("p", class_="check ok") is not None, doc.text


def test_discover_lists_tables_to_tick(seed: Seed, ui: UIClient, sqlite_source: str) -> None:
    src = seed.endpoint("source", config={"connection_string": sqlite_source})
    data = {"source_mode": "existing", "source_id": str(src), "tables": "orders"}
    doc = parse_html(ui.htmx("POST", "/connectors/form/discover", data=data).text)
    boxes = {i.attrs["value"]: "checked" in i.attrs for i in doc.find_all("input", name="table")}
    assert boxes == {"customers": False, "orders": True}
    # Ticked tables are saved with the typed ones.
    resp = ui.post(
        "/connectors/new", _form(seed, source_id=str(src), tables="", table=["customers", "orders"])
    )
    assert resp.status_code == 303
    c = seed.get(int(resp.headers["location"].rsplit("/", 1)[1]))
    assert c.source_config_override["tables"] == ["customers", "orders"]


def test_copy_section_follows_the_source_type(seed: Seed, ui: UIClient) -> None:
    files = seed.endpoint("source", type="filesystem", config={"path": "/data"})
    doc = parse_html(
        ui.htmx(
            "GET", "/connectors/form/copy", params={"source_mode": "existing", "source_id": files}
        ).text
    )
    assert doc.find("input", name="file_pattern") is not None
    assert doc.find("input", name="copy_mode") is None
    doc = parse_html(
        ui.htmx(
            "GET",
            "/connectors/form/copy",
            params={"source_mode": "new", "source.new.type": "rest_api"},
        ).text
    )
    assert doc.find("input", name="resources") is not None
    fields = parse_html(
        ui.htmx(
            "GET",
            "/connectors/form/endpoint",
            params={"kind": "source", "source.new.type": "rest_api"},
        ).text
    )
    names = {i.attrs.get("name") for i in fields.iter() if i.tag in ("input", "select", "textarea")}
    assert "source.cfg.base_url" in names and "source.cfg.tables" not in names


def test_edit_shows_the_preset_and_changes_the_schedule(seed: Seed, ui: UIClient) -> None:
    cid = seed.connector(schedule="15 4 * * 2", timezone="Europe/Berlin", tags=["a", "b"])
    # Synced, as the reconciler leaves it: the save sets it back to pending, which once
    # cost a second UPDATE and a second version (issue 22).
    seed.set(cid, sync_status="synced")
    doc = ui.page(f"/connectors/{cid}/edit")
    assert unlabelled_fields(doc) == []
    assert doc.find("input", name="schedule_preset", checked="").attrs["value"] == "weekly"
    assert doc.find("input", name="schedule_time").attrs["value"] == "04:15"
    assert doc.find("option", value="2", selected="") is not None
    assert doc.find("input", name="tags").attrs["value"] == "a, b"
    form: dict[str, Any] = {}
    for el in doc.find("form", id="connector-form").iter():
        name = el.attrs.get("name")
        if not name or el.attrs.get("disabled") is not None:
            continue
        if el.tag == "input" and el.attrs.get("type") in ("radio", "checkbox"):
            if "checked" in el.attrs:
                form.setdefault(name, []).append(el.attrs["value"])
        elif el.tag == "input" and el.attrs.get("type") == "hidden" and name == "is_active":
            form.setdefault(name, []).append(el.attrs["value"])
        elif el.tag == "input":
            form[name] = el.attrs.get("value", "")
        elif el.tag == "select":
            chosen = el.find("option", selected="") or el.find("option")
            form[name] = chosen.attrs["value"] if chosen else ""
        elif el.tag == "textarea":
            form[name] = el.text
    form.pop("csrf_token")
    version = seed.get(cid).version
    form.update(schedule_preset="daily", schedule_time="05:00")
    resp = ui.post(f"/connectors/{cid}/edit", form)
    assert resp.status_code == 303, resp.text
    c = seed.get(cid)
    assert c.schedule == "0 5 * * *" and c.timezone == "Europe/Berlin"
    assert c.tags == ["a", "b"] and c.source_config_override == {"tables": ["orders"]}
    assert c.version == version + 1
    # Saving again with the old version is refused: someone else changed it.
    form.update(schedule_time="06:00")
    resp = ui.post(f"/connectors/{cid}/edit", form)
    assert resp.status_code == 422
    assert "changed by someone else" in parse_html(resp.text).text
    assert seed.get(cid).schedule == "0 5 * * *"


def test_file_managed_connectors_ask_before_editing(seed: Seed, ui: UIClient) -> None:
    cid = seed.connector(managed_by="file", name="from-yaml")
    doc = ui.page(f"/connectors/{cid}/edit")
    assert "managed by a deployment file" in doc.text
    assert doc.find("form", id="connector-form") is None
    assert doc.find("a", href=f"/connectors/{cid}/edit?confirm=yes") is not None
    doc = ui.page(f"/connectors/{cid}/edit?confirm=yes")
    assert doc.find("input", name="confirm_file").attrs["value"] == "yes"
    # Posting without the confirmation changes nothing.
    resp = ui.post(
        f"/connectors/{cid}/edit", _form(seed, name="from-yaml", schedule_preset="manual")
    )
    assert resp.status_code == 422
    assert seed.get(cid).schedule == "0 */6 * * *"
    assert "file" in ui.page("/connectors").find("tr", id=f"connector-{cid}").text
