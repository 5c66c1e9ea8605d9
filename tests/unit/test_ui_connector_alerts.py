"""The connector form's issue-18 settings (pause after N failed runs, freshness SLA) saved,
shown back, emptied and refused on their field; the list and the connector's page saying
"stale" and why Conveyor paused a connector."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from conveyor.db.base import utcnow
from conveyor.db.models import Connector
from conveyor.db.session import session_scope
from conveyor.settings import Settings
from tests.fixtures.ui import Seed, UIClient, cheap_password_hashing, make_user, parse_html


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


def test_auto_pause_and_freshness_saved_shown_and_emptied(
    seed: Seed, ui: UIClient, settings: Settings
) -> None:
    new = ui.page("/connectors/new")
    assert _value(new, "auto_pause_after_failures") == ""  # off by default
    assert _value(new, "freshness_sla_minutes") == ""
    resp = ui.post(
        "/connectors/new", _form(seed, auto_pause_after_failures="3", freshness_sla_minutes="90")
    )
    assert resp.status_code == 303, resp.text
    (c,) = _connectors(settings)
    assert (c.auto_pause_after_failures, c.freshness_sla_minutes) == (3, 90)
    detail = ui.page(f"/connectors/{c.id}")
    assert detail.by_id("auto-pause").text == "After 3 failed runs in a row"
    assert detail.by_id("freshness-sla").text == "A run succeeds at least every 90 minutes"
    edit = ui.page(f"/connectors/{c.id}/edit")
    assert _value(edit, "auto_pause_after_failures") == "3"
    assert _value(edit, "freshness_sla_minutes") == "90"
    form = _form(seed, auto_pause_after_failures="", freshness_sla_minutes="")
    form.update(source_id=str(c.source_id), destination_id=str(c.destination_id))
    form["version"] = str(c.version)
    assert ui.post(f"/connectors/{c.id}/edit", form).status_code == 303
    (c,) = _connectors(settings)
    assert (c.auto_pause_after_failures, c.freshness_sla_minutes) == (None, None)
    assert ui.page(f"/connectors/{c.id}").by_id("auto-pause").text == "Off"


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"auto_pause_after_failures": "three"}, "auto_pause_after_failures", "'three' is not"),
        ({"auto_pause_after_failures": "0"}, "auto_pause_after_failures", "1"),
        ({"freshness_sla_minutes": "1.5"}, "freshness_sla_minutes", "'1.5' is not a whole"),
        ({"freshness_sla_minutes": "600000"}, "freshness_sla_minutes", "527040"),
    ],
)
def test_bad_values_are_refused_on_their_field(
    seed: Seed, ui: UIClient, settings: Settings, fields: dict[str, str], field: str, words: str
) -> None:
    resp = ui.post("/connectors/new", _form(seed, **fields))
    assert resp.status_code == 422
    doc = parse_html(resp.text)
    error = doc.by_id(f"err-{field}")
    assert error is not None, resp.text[-3000:]
    assert words in error.text
    assert _connectors(settings) == []


def test_list_and_page_say_stale_and_why_conveyor_paused_it(
    seed: Seed, ui: UIClient, settings: Settings
) -> None:
    cid = seed.connector(name="orders")
    listed = ui.page("/connectors").by_id(f"connector-{cid}")
    assert "stale" not in listed.text and "paused by Conveyor" not in listed.text
    page = ui.page(f"/connectors/{cid}")
    assert page.by_id("stale") is None and page.by_id("paused-reason") is None
    since = utcnow() - timedelta(minutes=5)
    reason = "after 3 failed runs in a row (last: config)"
    seed.set(cid, freshness_sla_minutes=60, stale_since=since)
    seed.set(cid, is_active=False, paused_reason=reason, consecutive_failures=3)
    listed = ui.page("/connectors").by_id(f"connector-{cid}")
    badges = {b.text: b for b in listed.iter() if b.has_class("badge")}
    assert "stale" in badges and "paused by Conveyor" in badges
    assert badges["paused by Conveyor"].attrs["title"] == reason
    page = ui.page(f"/connectors/{cid}")
    stale = page.by_id("stale").text
    assert "freshness SLA of 60 minutes" in stale and "next successful run clears" in stale
    banner = page.by_id("paused-reason").text
    assert f"Paused by Conveyor: {reason}." in banner
    assert "count of failed runs starts again" in banner
    with session_scope(settings.effective_database_url) as session:
        assert session.get(Connector, cid).consecutive_failures == 3  # type: ignore[union-attr]
