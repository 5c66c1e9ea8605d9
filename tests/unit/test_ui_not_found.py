"""An address no route matches: a browser gets a titled HTML page with a way back, an API
client keeps the JSON error."""

from __future__ import annotations

import pytest

from conveyor.settings import Settings
from tests.fixtures.ui import UIClient, cheap_password_hashing, make_user, parse_html


def test_unknown_page_is_html_for_browsers_and_json_for_the_api(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    cheap_password_hashing(monkeypatch)
    make_user(settings, "alice", "admin")
    ui = UIClient(settings).login("alice")
    resp = ui.get("/no/such/page", headers={"Accept": "text/html"})
    assert resp.status_code == 404
    doc = parse_html(resp.text)
    assert doc.find("html").attrs.get("lang") == "en"
    assert "Not found" in doc.find("title").text
    assert "There is no page at /no/such/page." in doc.find("p", class_="reason").text
    assert doc.find("a", href="/connectors") is not None
    api = ui.get("/api/v1/no-such-thing", headers={"Accept": "text/html"})
    assert api.status_code == 404 and api.json() == {"detail": "Not Found"}
