"""Sources and destinations pages: forms from each type's schema, write-only secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.db.models import Source
from conveyor.db.session import session_scope
from conveyor.pipelines.registry import list_types
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
    for name, role in (("alice", "admin"), ("eddie", "editor"), ("victor", "viewer")):
        make_user(settings, name, role)
    return Seed(settings)


@pytest.fixture
def ui(settings: Settings, seed: Seed) -> UIClient:
    return UIClient(settings).login("alice")


@pytest.mark.parametrize("kind", ["source", "destination"])
def test_every_type_gets_a_labelled_form(seed: Seed, ui: UIClient, kind: str) -> None:
    for t in list_types(kind):  # type: ignore[arg-type]
        doc = ui.page(f"/{kind}s/new?type={t.name}")
        assert unlabelled_fields(doc) == [], t.name
        names = {
            n.attrs.get("name") for n in doc.iter() if n.tag in ("input", "select", "textarea")
        }
        for field in t.json_schema()["properties"]:
            shown = f"cfg.{field}" in names
            assert shown is not (field in t.copy_fields), field
        for secret in t.secret_fields:
            field = doc.find("input", name=f"cfg.{secret}")
            if field is None:  # a mapping of secrets (headers): JSON with masked values
                assert doc.find("textarea", name=f"cfg.{secret}") is not None, secret
            else:
                assert field.attrs["type"] == "password", secret


def test_create_source_with_errors_by_field_then_fixed(
    seed: Seed, ui: UIClient, settings: Settings
) -> None:
    data = {
        "name": "Sales DB",
        "type": "sql_database",
        "cfg.port": "99999",
        "cfg.password": "pw-1234",
    }
    resp = ui.post("/sources/new", data)
    assert resp.status_code == 422
    doc = parse_html(resp.text)
    assert "less than or equal to 65535" in doc.find("p", id="err-cfg-port").text
    assert doc.find("input", name="cfg.password").attrs["value"] == ""  # never echoed
    assert "pw-1234" not in resp.text
    data["cfg.port"] = "5432"
    doc = parse_html(ui.post("/sources/new", data).text)
    # A rule about several fields is shown at the top of the connection fields.
    assert "connection_string, or host and database" in doc.find("p", id="err-cfg").text
    data.update({"cfg.host": "db.example.com", "cfg.database": "sales"})
    resp = ui.post("/sources/new", data)
    assert resp.status_code == 303
    with session_scope(settings.effective_database_url) as session:
        src = session.query(Source).one()
        assert src.config["password"].startswith("fernet:")
        assert src.config["port"] == 5432


def test_edit_keeps_secrets_left_empty_and_shows_who_uses_it(
    seed: Seed, ui: UIClient, settings: Settings
) -> None:
    src = seed.endpoint("source", name="Sales DB")
    # Paused: an active one would have the change checked first (test_ui_save_check.py).
    seed.connector(name="orders-sync", source_id=src, is_active=False)
    doc = ui.page(f"/sources/{src}")
    pw = doc.find("input", name="cfg.password")
    assert pw.attrs["value"] == "" and "saved" in pw.attrs["placeholder"]
    assert "s3cret-pw" not in ui.get(f"/sources/{src}").text
    used = doc.find("h2", id="used-by").parent
    assert [a.text for a in used.find_all("a")] == ["orders-sync"]
    assert "can be deleted once no connector uses it" in used.text
    resp = ui.post(
        f"/sources/{src}",
        {
            "name": "Sales DB v2",
            "cfg.host": "db.example.com",
            "cfg.database": "sales",
            "cfg.username": "reader2",
            "cfg.password": "",
        },
    )
    assert resp.status_code == 303
    with session_scope(settings.effective_database_url) as session:
        obj = session.get(Source, src)
        assert obj.name == "Sales DB v2" and obj.config["username"] == "reader2"
        assert seed.box.decrypt(obj.config["password"]) == "s3cret-pw"


def test_test_connection_on_the_page(seed: Seed, ui: UIClient, tmp_path: Path) -> None:
    bad = {"type": "duckdb", "cfg.path": "/proc/nope/x.duckdb"}
    doc = parse_html(ui.htmx("POST", "/destinations/test", data=bad).text)
    assert doc.find("p", class_="check bad") is not None
    good = {"type": "duckdb", "cfg.path": str(tmp_path / "x.duckdb")}
    doc = parse_html(ui.htmx("POST", "/destinations/test", data=good).text)
    assert doc.find("p", class_="check ok") is not None, doc.text
    # Editing: what is on screen is tested, not what is stored.
    dst = seed.endpoint("destination", config={"path": str(tmp_path / "y.duckdb")})
    doc = parse_html(ui.htmx("POST", f"/destinations/{dst}/test", data=bad).text)
    assert doc.find("p", class_="check bad") is not None


def test_delete_only_when_unused(seed: Seed, ui: UIClient) -> None:
    dst = seed.endpoint("destination", name="Warehouse")
    cid = seed.connector(destination_id=dst)
    resp = ui.post(f"/destinations/{dst}/delete")
    assert resp.status_code == 303
    assert "still used by connectors" in ui.page(f"/destinations/{dst}").text
    ui.post(f"/connectors/{cid}/delete")
    ui.post(f"/destinations/{dst}/delete")
    ui.page(f"/destinations/{dst}", status=404)


def test_lists_count_connectors(seed: Seed, ui: UIClient) -> None:
    src = seed.endpoint("source", name="Sales DB")
    seed.connector(source_id=src)
    seed.connector(source_id=src)
    row = next(tr for tr in ui.page("/sources").find_all("tr") if "Sales DB" in tr.text)
    assert "2 connectors" in row.text and "SQL database" in row.text


def test_roles_on_endpoint_pages(seed: Seed, settings: Settings) -> None:
    src = seed.endpoint("source", name="Sales DB", by="alice")
    viewer = UIClient(settings).login("victor")
    doc = viewer.page(f"/sources/{src}")
    assert doc.find("form", id="endpoint-form") is None
    assert "s3cret-pw" not in viewer.get(f"/sources/{src}").text
    assert viewer.page("/sources").find("a", href="/sources/new") is None
    assert viewer.post("/sources/new", {"name": "x", "type": "duckdb"}).status_code == 403
    assert viewer.post(f"/sources/{src}", {"name": "hacked"}).status_code == 403
    assert viewer.post(f"/sources/{src}/delete").status_code == 403
    editor = UIClient(settings).login("eddie")
    assert editor.page(f"/sources/{src}").find("form", id="endpoint-form") is None
    assert editor.post(f"/sources/{src}", {"name": "hacked"}).status_code == 403
    with session_scope(settings.effective_database_url) as session:
        assert session.get(Source, src).name == "Sales DB"
