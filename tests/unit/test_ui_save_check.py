"""Check on save: a wrong password on a source that active connectors use is caught on the
form (nothing saved until "Save anyway"); a source no active connector uses saves at once.

The source is a real PostgreSQL cluster that checks passwords (tests/fixtures/scratch_pg.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.db.models import Destination, Source
from conveyor.db.session import session_scope
from conveyor.settings import Settings
from tests.fixtures.scratch_pg import PASSWORD, ScratchPostgres, scratch_pg  # noqa: F401
from tests.fixtures.ui import Seed, UIClient, cheap_password_hashing, make_user, parse_html
from tests.fixtures.web import ApiUser


@pytest.fixture
def seed(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Seed:
    cheap_password_hashing(monkeypatch)
    make_user(settings, "alice", "admin")
    return Seed(settings)


def _source(seed: Seed, pg: ScratchPostgres, name: str) -> int:
    config = {
        "drivername": "postgresql+psycopg",
        "host": "127.0.0.1",
        "port": pg.port,
        "database": "postgres",
        "username": "postgres",
        "password": PASSWORD,
    }
    return seed.endpoint("source", name=name, config=config)


def _form(pg: ScratchPostgres, name: str, password: str) -> dict[str, Any]:
    return {
        "name": name,
        "cfg.drivername": "postgresql+psycopg",
        "cfg.host": "127.0.0.1",
        "cfg.port": str(pg.port),
        "cfg.database": "postgres",
        "cfg.username": "postgres",
        "cfg.password": password,
    }


def _stored_password(seed: Seed, settings: Settings, source_id: int) -> str:
    with session_scope(settings.effective_database_url) as session:
        return seed.box.decrypt(session.get(Source, source_id).config["password"])


def test_wrong_password_on_a_used_source_asks_before_saving(
    seed: Seed,
    settings: Settings,
    scratch_pg: ScratchPostgres,  # noqa: F811
) -> None:
    src = _source(seed, scratch_pg, "Orders DB")
    seed.connector(name="orders-sync", source_id=src)
    ui = UIClient(settings).login("alice")
    resp = ui.post(f"/sources/{src}", _form(scratch_pg, "Orders DB", "wrong-pw-271"))
    assert resp.status_code == 409
    assert "wrong-pw-271" not in resp.text  # the typed secret is never echoed
    doc = parse_html(resp.text)
    box = doc.find("section", class_="flash error save-check")
    assert "nothing was saved" in box.text and "refused the user name or password" in box.text
    assert [a.text for a in box.find_all("a", href="/connectors/1")] == ["orders-sync"]
    assert _stored_password(seed, settings, src) == PASSWORD
    confirm = {i.attrs["name"]: i.attrs["value"] for i in box.find_all("input")}
    assert ui.post(f"/sources/{src}", confirm).status_code == 303
    assert _stored_password(seed, settings, src) == "wrong-pw-271"
    # The confirmation was for that change: once saved (the source changed), it is refused.
    assert ui.post(f"/sources/{src}", confirm).status_code == 422
    # The right password again: the check passes, saved at once.
    resp = ui.post(f"/sources/{src}", _form(scratch_pg, "Orders DB", PASSWORD))
    assert resp.status_code == 303
    assert _stored_password(seed, settings, src) == PASSWORD


def test_a_source_no_active_connector_uses_saves_at_once(
    seed: Seed,
    settings: Settings,
    scratch_pg: ScratchPostgres,  # noqa: F811
) -> None:
    unused = _source(seed, scratch_pg, "Spare DB")
    paused = _source(seed, scratch_pg, "Paused DB")
    seed.connector(name="paused-sync", source_id=paused, is_active=False)
    ui = UIClient(settings).login("alice")
    for src, name in ((unused, "Spare DB"), (paused, "Paused DB")):
        resp = ui.post(f"/sources/{src}", _form(scratch_pg, name, "wrong-pw-314"))
        assert resp.status_code == 303, name
        assert _stored_password(seed, settings, src) == "wrong-pw-314"


def test_api_patch_with_check_refuses_a_failing_config(
    admin: ApiUser,
    scratch_pg: ScratchPostgres,  # noqa: F811
) -> None:
    config = _form(scratch_pg, "", PASSWORD)
    body = {k.removeprefix("cfg."): v for k, v in config.items() if k.startswith("cfg.")}
    src = admin.post(
        "/api/v1/sources", json={"name": "Orders DB", "type": "sql_database", "config": body}
    ).json()
    url = f"/api/v1/sources/{src['id']}"
    wrong = {"config": {"password": "wrong-pw-161"}}
    resp = admin.patch(f"{url}?check=true", json=wrong)
    assert resp.status_code == 409, resp.text
    assert (
        "connection check failed" in resp.text and "refused the user name or password" in resp.text
    )
    assert "wrong-pw-161" not in resp.text
    assert admin.post(f"{url}/check").json()["ok"] is True  # nothing was saved
    assert (
        admin.patch(f"{url}?check=true", json={"config": {"password": PASSWORD}}).status_code == 200
    )
    assert admin.patch(url, json=wrong).status_code == 200  # without ?check: saved as before
    assert admin.post(f"{url}/check").json()["ok"] is False


def test_a_destination_that_fails_its_check_asks_too(seed: Seed, settings: Settings) -> None:
    """The same for a destination: a DuckDB path that cannot be opened (a folder)."""
    good = str(settings.data_dir / "warehouse.duckdb")
    dst = seed.endpoint("destination", name="Warehouse", config={"path": good})
    seed.connector(name="orders-sync", destination_id=dst)
    folder = settings.data_dir / "not-a-file.duckdb"
    folder.mkdir(parents=True)
    ui = UIClient(settings).login("alice")
    resp = ui.post(f"/destinations/{dst}", {"name": "Warehouse", "cfg.path": str(folder)})
    assert resp.status_code == 409, resp.text
    box = parse_html(resp.text).find("section", class_="flash error save-check")
    assert box is not None and "nothing was saved" in box.text
    with session_scope(settings.effective_database_url) as session:
        assert session.get(Destination, dst).config["path"] == good
