"""Accessibility: axe-core on every page of the UI, no serious or critical violation.

axe-core is shipped in tests/e2e/vendor/axe-core/ (see its README): nothing is downloaded
at test time. It goes in with ``add_init_script``, which Chromium runs through DevTools on
every new document, outside the page's Content-Security-Policy. So the pages are checked
with their real CSP in force (no ``bypass_csp``): an inline <script> tag would be refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Platform, login
from tests.fixtures.ui import Seed

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
BLOCKING = ("serious", "critical")

# Violations as text: rule, impact, and the first few elements it names.
_RUN_AXE = """async () => {
  const r = await axe.run(document, {resultTypes: ["violations"]});
  return r.violations.filter(v => ["serious", "critical"].includes(v.impact)).map(v =>
    `${v.id} (${v.impact}): ${v.help} — ` +
    v.nodes.slice(0, 3).map(n => n.target.join(" ") + " " +
      ((n.any[0] || n.all[0] || n.none[0] || {}).message || "").slice(0, 160)).join(" | "));
}"""


def axe_violations(page: Any) -> list[str]:
    """Serious and critical violations on the page as it is now (for states reached by
    clicking, in other browser tests); its context needs ``add_axe`` first."""
    return list(page.evaluate(_RUN_AXE))


def add_axe(page: Any) -> None:
    page.context.add_init_script(path=str(AXE))


def _violations(page: Any, base_url: str, path: str) -> list[str]:
    page.goto(base_url + path)
    page.wait_for_load_state("load")
    return [f"{path}: {v}" for v in axe_violations(page)]


def test_no_serious_or_critical_violation_on_any_page(web_only: Platform, new_page: Any) -> None:
    seed = Seed(web_only.settings)
    src = seed.endpoint("source", name="Sales DB")
    dst = seed.endpoint("destination", name="Warehouse")
    cid = seed.connector(name="orders-daily", source_id=src, destination_id=dst)
    failed = seed.run(cid, status="failed", error="connection reset by peer", rows_loaded=None)
    ok = seed.run(cid, status="succeeded", rows_loaded=1234)
    _change_schedule(seed, cid)  # so the history shows a changed field (issue 18)
    channel = _channel(seed)
    page = new_page()
    add_axe(page)
    base = web_only.base_url
    found = _violations(page, base, "/login")
    login(page, base, "alice")
    for path in (
        "/connectors",
        f"/connectors/{cid}",
        "/connectors/new",
        f"/connectors/{cid}/edit",
        f"/connectors/{cid}/delete",
        f"/connectors/{cid}/reset",
        "/sources",
        "/sources/new",
        f"/sources/{src}",
        "/destinations",
        "/destinations/new",
        f"/destinations/{dst}",
        f"/connectors/{cid}/history",
        f"/connectors/{cid}/history/1",
        f"/sources/{src}/history",
        f"/sources/{src}/history/1",
        f"/destinations/{dst}/history",
        f"/destinations/{dst}/history/1",
        f"/runs/{failed}",
        f"/runs/{ok}",
        "/admin/users",
        "/admin/tokens",
        "/admin/audit",
        "/admin/notifications",
        "/admin/notifications/new?type=email",
        f"/admin/notifications/{channel}",
        "/account/password",
        "/no/such/page",
        "/docs",
        "/redoc",
    ):
        found += _violations(page, base, path)
    # The connector form's Advanced section (job variables) is collapsed: opened, checked too.
    page.goto(base + f"/connectors/{cid}/edit")
    page.click("#advanced-step > summary")
    assert page.is_visible("#f-job-variables-env")
    found += [f"Advanced section: {v}" for v in axe_violations(page)]
    assert found == [], "\n".join(found)


def _change_schedule(seed: Seed, connector_id: int) -> None:
    from conveyor.db.session import session_scope
    from conveyor.domain.models import ConnectorPatch
    from conveyor.services import connectors

    with session_scope(seed.settings.effective_database_url) as s:
        patch = ConnectorPatch(schedule="15 3 * * *")
        connectors.update(connector_id, patch, session=s, actor=seed.actor("alice"), box=seed.box)


def _channel(seed: Seed) -> int:
    from conveyor.db.session import session_scope
    from conveyor.domain.notifications import ChannelCreate
    from conveyor.services import channels

    hook = {"url": "http://127.0.0.1:9/hook", "secret": "a11y-channel-secret-0123"}
    with session_scope(seed.settings.effective_database_url) as s:
        data = ChannelCreate(name="ops-hook", type="webhook", config=hook)
        made = channels.create(
            data, session=s, actor=seed.actor("alice"), box=seed.box, settings=seed.settings
        )
        return made.id
