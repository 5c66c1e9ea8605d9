"""History pages (issue 18): versions listed, a version side by side with now (changed
fields marked), restore behind a confirmation; viewers read, only owners restore."""

from __future__ import annotations

import pytest

from conveyor.db.session import session_scope
from conveyor.domain.models import ConnectorPatch
from conveyor.services import connectors
from conveyor.settings import Settings
from tests.fixtures.ui import Seed, UIClient, cheap_password_hashing, make_user, parse_html


@pytest.fixture
def seed(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Seed:
    cheap_password_hashing(monkeypatch)
    for name, role in (("alice", "admin"), ("victor", "viewer")):
        make_user(settings, name, role)
    return Seed(settings)


def _change(seed: Seed, connector_id: int, **fields: object) -> None:
    with session_scope(seed.settings.effective_database_url) as s:
        connectors.update(
            connector_id, ConnectorPatch(**fields), session=s, actor=seed.actor("alice"),
            box=seed.box,
        )  # fmt: skip


def test_connector_history_diff_and_restore(settings: Settings, seed: Seed) -> None:
    cid = seed.connector(schedule="0 */6 * * *")
    _change(seed, cid, schedule="15 3 * * *")
    ui = UIClient(settings).login("alice")
    assert ui.page(f"/connectors/{cid}").by_id("history-link") is not None

    rows = ui.page(f"/connectors/{cid}/history").by_id("versions").find_all("tr")[1:]
    assert [r.text.split()[:2] for r in rows] == [["Version", "2"], ["Version", "1"]]
    assert "schedule" in rows[0].text and "created" in rows[1].text

    doc = ui.page(f"/connectors/{cid}/history/1")
    changed = [r for r in doc.by_id("diff").find_all("tr") if r.attrs.get("data-changed")]
    assert [r.text.split()[:4] for r in changed] == [
        ["schedule", "changed", "0", "*/6"],
    ]
    assert "15 3 * * *" in changed[0].text and "s3cret" not in doc.text

    unconfirmed = ui.post(f"/connectors/{cid}/history/1/restore")
    assert unconfirmed.status_code == 303
    assert seed.get(cid).schedule == "15 3 * * *"
    done = ui.post(f"/connectors/{cid}/history/1/restore", {"confirm": "yes"})
    assert done.status_code == 303 and done.headers["location"] == f"/connectors/{cid}"
    c = seed.get(cid)
    assert (c.schedule, c.version) == ("0 */6 * * *", 3)
    top = ui.page(f"/connectors/{cid}/history").by_id("versions").find_all("tr")[1]
    assert "restored from version 1" in top.text

    viewer = UIClient(settings).login("victor")
    page = viewer.page(f"/connectors/{cid}/history/2")
    assert page.by_id("restore-form") is None
    assert (
        viewer.post(f"/connectors/{cid}/history/2/restore", {"confirm": "yes"}).status_code == 403
    )


def test_source_history_page_masks_secrets(settings: Settings, seed: Seed) -> None:
    sid = seed.endpoint("source")
    ui = UIClient(settings).login("alice")
    assert ui.page(f"/sources/{sid}").by_id("history-link") is not None
    resp = ui.get(f"/sources/{sid}/history/1")
    assert resp.status_code == 200
    assert "s3cret-pw" not in resp.text and "********" in resp.text
    doc = parse_html(resp.text)
    assert doc.by_id("restore-form") is None  # version 1 is what it is now
