"""The pages work under the Content-Security-Policy, in Chromium, with no network but Conveyor.

Every page the walk opens fails the test on a CSP violation (the browser's console message
or the ``securitypolicyviolation`` event), an uncaught script error, or a request to any
other host (those are cut off, as on a server without internet access).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from conveyor.db.session import session_scope
from conveyor.services import users as users_service
from conveyor.services.authz import SYSTEM
from tests.e2e.conftest import Platform, login
from tests.fixtures.ui import Seed

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

# Runs before any script of each document: the browser reports every blocked action here,
# report-only ones and those it does not print included.
RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  const where = `${e.sourceFile}:${e.lineNumber}`;
  window.__csp.push(`${e.effectiveDirective} blocked ${e.blockedURI || "inline"} at ${where}`);
});
"""


@dataclass
class Watch:
    """What went wrong on the pages of one browser context."""

    base_url: str
    problems: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> Any:
        page.add_init_script(RECORD_VIOLATIONS)
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))

        def offline(route: Any) -> None:
            url = route.request.url
            if url.startswith(self.base_url + "/"):
                route.continue_()
            else:
                self.problems.append(f"request to another host: {url}")
                route.abort()

        page.route("**/*", offline)
        return page

    def _console(self, msg: Any) -> None:
        text = msg.text
        if "Content Security Policy" in text or "Content-Security-Policy" in text:
            self.problems.append(f"console {msg.type}: {text[:300]}")
        elif msg.type == "error":
            self.problems.append(f"console error: {text[:300]}")

    def check(self, page: Any, what: str) -> None:
        violations = page.evaluate("window.__csp || []")
        self.problems.extend(f"{what}: {v}" for v in violations)
        assert self.problems == [], f"{what}:\n" + "\n".join(self.problems)


def _token(platform: Platform, username: str) -> str:
    with session_scope(platform.settings.effective_database_url) as session:
        _row, token = users_service.create_token(
            username, "e2e-docs", session=session, actor=SYSTEM
        )
    return token


def test_main_pages_run_under_the_csp(web_only: Platform, new_page: Any) -> None:
    base = web_only.base_url
    seed = Seed(web_only.settings)
    src = seed.endpoint("source", name="Sales DB")
    dst = seed.endpoint("destination", name="Warehouse")
    cid = seed.connector(name="orders-sync", source_id=src, destination_id=dst)
    rid = seed.run(cid, rows_loaded=1200)
    watch = Watch(base)
    page = watch.attach(new_page())
    login(page, base, "alice")
    watch.check(page, "login")
    for path in (
        "/connectors",
        f"/connectors/{cid}",
        "/connectors/new",
        f"/connectors/{cid}/edit",
        f"/runs/{rid}",
        "/sources",
        f"/sources/{src}",
        "/destinations",
        f"/destinations/{dst}",
        "/admin/users",
        "/admin/tokens",
        "/admin/audit",
    ):
        resp = page.goto(base + path)
        assert resp is not None and resp.status == 200, path
        assert "script-src 'self'" in resp.headers["content-security-policy"]
        page.wait_for_load_state("load")
        watch.check(page, path)

    # htmx still works with allowEval off: the list's switch posts through htmx, with the
    # CSRF header it takes from <body hx-headers> (JSON, not evaluated).
    page.goto(base + "/connectors")
    page.get_by_role("switch", name="Pause orders-sync").click()
    page.get_by_role("switch", name="Resume orders-sync").wait_for()
    assert seed.get(cid).is_active is False
    # The connector form's live parts (schedule preview) answer htmx triggers too.
    page.goto(base + "/connectors/new")
    page.wait_for_load_state("load")
    watch.check(page, "htmx on the list and the form")

    # A new API token's field selects itself on focus (from app.js, not an onfocus=).
    page.goto(base + "/admin/tokens")
    page.get_by_label("What is it for?").fill("ci")
    with page.expect_navigation(wait_until="load"):  # app.js (deferred) has run by "load"
        page.get_by_role("button", name="Create token").click()
    token_field = page.locator("#new-token")
    token_field.focus()
    selected = page.evaluate(
        "() => { const f = document.getElementById('new-token');"
        " return f.selectionEnd - f.selectionStart; }"
    )
    assert selected == len(token_field.input_value()) > 0
    watch.check(page, "new token")


def test_api_reference_pages_render_offline(web_only: Platform, new_page: Any) -> None:
    base = web_only.base_url
    spec = httpx.get(base + "/api/v1/openapi.json").json()
    operations = sum(len(item) for item in spec["paths"].values())
    assert operations > 20
    token = _token(web_only, "alice")
    watch = Watch(base)
    page = watch.attach(new_page())  # not logged in: the token does the authenticating

    page.goto(base + "/docs")
    expect(page.locator(".opblock")).to_have_count(operations)
    # Authorize with a bearer token, then call GET /api/v1/me from the page.
    page.get_by_role("button", name="Authorize").first.click()
    page.locator(".modal-ux input").fill(token)
    page.locator(".modal-ux button.authorize").click()
    page.locator(".modal-ux button.btn-done").click()
    me = page.locator("#operations-meta-me_api_v1_me_get")
    me.locator(".opblock-summary").click()
    me.get_by_role("button", name="Try it out").click()
    me.get_by_role("button", name="Execute").click()
    live = me.locator(".live-responses-table")
    expect(live.locator("tbody td.response-col_status")).to_have_text("200")
    expect(live.locator("tbody td.response-col_description")).to_contain_text('"username": "alice"')
    watch.check(page, "/docs")

    page.goto(base + "/redoc")
    page.get_by_role("heading", name="Who am I").wait_for()
    expect(page.get_by_role("heading", name="Pause its schedule")).to_be_attached()
    watch.check(page, "/redoc")
