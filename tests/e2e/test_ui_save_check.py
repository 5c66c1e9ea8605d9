"""Check on save in the browser: a wrong password typed on a source that an active connector
uses is caught before anything is saved; "Save anyway" saves it. The source is a real
PostgreSQL cluster that checks passwords (tests/fixtures/scratch_pg.py)."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from conveyor.db.models import Source
from conveyor.db.session import session_scope
from tests.e2e.conftest import Platform, login
from tests.e2e.test_ui_a11y import add_axe, axe_violations
from tests.fixtures.scratch_pg import PASSWORD, ScratchPostgres, scratch_pg  # noqa: F401
from tests.fixtures.ui import Seed

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def test_a_wrong_password_on_a_used_source_asks_before_saving(
    web_only: Platform,
    new_page: Any,
    scratch_pg: ScratchPostgres,  # noqa: F811
) -> None:
    seed = Seed(web_only.settings)
    config = {
        "drivername": "postgresql+psycopg",
        "host": "127.0.0.1",
        "port": scratch_pg.port,
        "database": "postgres",
        "username": "postgres",
        "password": PASSWORD,
    }
    src = seed.endpoint("source", name="Orders DB", config=config)
    seed.connector(name="orders-sync", source_id=src)

    def stored() -> str:
        with session_scope(web_only.settings.effective_database_url) as session:
            return str(seed.box.decrypt(session.get(Source, src).config["password"]))

    page = new_page()
    add_axe(page)
    login(page, web_only.base_url, "alice")
    page.goto(f"{web_only.base_url}/sources/{src}")
    page.get_by_label("Password").fill("wrong-pw-271")
    page.get_by_role("button", name="Save changes").click()
    warning = page.locator("section.save-check")
    expect(warning).to_contain_text("nothing was saved")
    expect(warning).to_contain_text("refused the user name or password")
    expect(warning.get_by_role("link", name="orders-sync")).to_be_visible()
    assert "wrong-pw-271" not in page.content()  # the typed secret is never echoed
    assert stored() == PASSWORD
    assert axe_violations(page) == []  # the warning with its Save anyway
    warning.get_by_role("button", name="Save anyway").click()
    expect(page.locator(".flash")).not_to_contain_text("nothing was saved")
    assert stored() == "wrong-pw-271"
