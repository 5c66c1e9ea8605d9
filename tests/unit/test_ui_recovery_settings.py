"""The forms' issue-17 settings: a connector's retry policy and catch-up choice, a
destination's cap on runs at once — saved, shown back, and refused on the field when bad."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.db.models import Connector, Destination
from conveyor.db.session import session_scope
from conveyor.settings import Settings
from tests.fixtures.ui import Seed, UIClient, cheap_password_hashing, make_user, unlabelled_fields


@pytest.fixture
def seed(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Seed:
    cheap_password_hashing(monkeypatch)
    make_user(settings, "alice", "admin")
    return Seed(settings)


@pytest.fixture
def ui(settings: Settings, seed: Seed) -> UIClient:
    return UIClient(settings).login("alice")


def _form(seed: Seed, **fields: Any) -> dict[str, Any]:
    data = {
        "name": "orders-sync",
        "source_mode": "existing",
        "source_id": str(seed.endpoint("source")),
        "destination_mode": "existing",
        "destination_id": str(seed.endpoint("destination")),
        "copy_mode": "tables",
        "tables": "orders",
        "schedule_preset": "hourly",
        "timezone": "UTC",
        "is_active": ["false", "true"],
    }
    data.update(fields)
    return data


def _connectors(settings: Settings) -> list[Connector]:
    with session_scope(settings.effective_database_url) as session:
        return list(session.query(Connector))


def _value(doc: Any, name: str) -> str:
    node = doc.find("input", name=name)
    assert node is not None, name
    return str(node.attrs.get("value", ""))


def test_new_form_offers_the_defaults(seed: Seed, ui: UIClient) -> None:
    doc = ui.page("/connectors/new")
    assert unlabelled_fields(doc) == []
    assert _value(doc, "retry_max_attempts") == "3"
    assert _value(doc, "retry_backoff_seconds") == "60, 300, 900"
    select = doc.find("select", name="catch_up")
    options = {o.attrs["value"]: o for o in select.find_all("option")}
    assert list(options) == ["latest", "skip", "all"]
    assert "selected" in options["latest"].attrs
    helps = doc.by_id("f-catch-up-help").text
    assert "at most 24" in helps and "None of the missed times runs" in helps


def test_saved_and_shown_back(seed: Seed, ui: UIClient, settings: Settings) -> None:
    resp = ui.post(
        "/connectors/new",
        _form(seed, retry_max_attempts="5", retry_backoff_seconds="30, 120", catch_up="all"),
    )
    assert resp.status_code == 303, resp.text
    (c,) = _connectors(settings)
    assert c.retry_policy == {"max_attempts": 5, "backoff_seconds": [30, 120]}
    assert c.catch_up == "all"
    detail = ui.page(f"/connectors/{c.id}")
    assert detail.by_id("retry-policy").text.startswith("Up to 5 attempts, waiting 30, 120 s")
    assert detail.by_id("catch-up").text == "Run each (all)"
    edit = ui.page(f"/connectors/{c.id}/edit")
    assert _value(edit, "retry_max_attempts") == "5"
    assert _value(edit, "retry_backoff_seconds") == "30, 120"
    chosen = [
        o for o in edit.find("select", name="catch_up").find_all("option") if "selected" in o.attrs
    ]
    assert [o.attrs["value"] for o in chosen] == ["all"]
    # Emptied: back to the defaults (stored as null, shown as the defaults).
    form = _form(seed, retry_max_attempts="", retry_backoff_seconds="", catch_up="skip")
    form.update(source_id=str(c.source_id), destination_id=str(c.destination_id))
    form["version"] = str(c.version)
    resp = ui.post(f"/connectors/{c.id}/edit", form)
    assert resp.status_code == 303, resp.text
    (c,) = _connectors(settings)
    assert c.retry_policy is None and c.catch_up == "skip"
    assert _value(ui.page(f"/connectors/{c.id}/edit"), "retry_max_attempts") == "3"


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"retry_backoff_seconds": "60, soon"}, "retry_backoff_seconds", "'soon' is not a whole"),
        ({"retry_max_attempts": "two"}, "retry_max_attempts", "'two' is not a whole number"),
        ({"retry_max_attempts": "11"}, "retry_max_attempts", "10"),
        ({"catch_up": "sometimes"}, "catch_up", "latest"),
    ],
)
def test_bad_values_are_refused_on_their_field(
    seed: Seed, ui: UIClient, settings: Settings, fields: dict[str, str], field: str, words: str
) -> None:
    resp = ui.post("/connectors/new", _form(seed, **fields))
    assert resp.status_code == 422
    from tests.fixtures.ui import parse_html

    doc = parse_html(resp.text)
    error = doc.by_id(f"err-{field}")
    assert error is not None, resp.text[-3000:]
    assert words in error.text
    assert "Nothing was saved" in doc.by_id("form-errors").text
    assert _connectors(settings) == []


def _destinations(settings: Settings) -> list[Destination]:
    with session_scope(settings.effective_database_url) as session:
        return list(session.query(Destination).order_by(Destination.id))


def test_destination_cap_saved_shown_and_cleared(ui: UIClient, settings: Settings) -> None:
    doc = ui.page("/destinations/new")
    assert doc.find("input", name="max_concurrent_runs") is not None
    assert ui.page("/sources/new").find("input", name="max_concurrent_runs") is None
    resp = ui.post(
        "/destinations/new", {"name": "Warehouse", "type": "duckdb", "max_concurrent_runs": "0"}
    )
    assert resp.status_code == 422
    assert "1 or more" in ui.page("/destinations/new").text or "1 or more" in resp.text
    assert _destinations(settings) == []
    resp = ui.post(
        "/destinations/new", {"name": "Warehouse", "type": "duckdb", "max_concurrent_runs": "2"}
    )
    assert resp.status_code == 303, resp.text
    (d,) = _destinations(settings)
    assert d.max_concurrent_runs == 2
    assert _value(ui.page(f"/destinations/{d.id}"), "max_concurrent_runs") == "2"
    resp = ui.post(f"/destinations/{d.id}", {"name": "Warehouse", "max_concurrent_runs": ""})
    assert resp.status_code == 303, resp.text
    assert _destinations(settings)[0].max_concurrent_runs is None
