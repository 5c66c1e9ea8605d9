"""Per-table choices in the connector form: discovered tables with columns, types and keys;
each ticked table's columns, write mode, primary key and cursor saved and shown again."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from conveyor.db.models import Connector
from conveyor.db.session import session_scope
from conveyor.settings import Settings
from tests.fixtures.ui import (
    Node,
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
def shop(seed: Seed, tmp_path: Path) -> int:
    """A source on a real SQLite database: two tables with different keys and cursors."""
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL, note TEXT,"
            " updated_at TIMESTAMP)"
        )
        db.execute(
            "CREATE TABLE customers (code TEXT, region TEXT, name TEXT, changed_at TIMESTAMP,"
            " PRIMARY KEY (code, region))"
        )
    return seed.endpoint("source", config={"connection_string": f"sqlite:///{path}"})


def form_of(node: Node) -> dict[str, Any]:
    """What a browser would submit from the inputs under ``node`` (ticked boxes only)."""
    form: dict[str, Any] = {}
    for el in node.iter():
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
    form.pop("csrf_token", None)
    return form


def _tick(form: dict[str, Any], key: str, values: list[str]) -> None:
    form[key] = values


def _discover(ui: UIClient, source_id: int, **extra: Any) -> Node:
    data = {"source_mode": "existing", "source_id": str(source_id), "tables": "", **extra}
    resp = ui.htmx("POST", "/connectors/form/discover", data=data)
    assert resp.status_code == 200, resp.text
    return parse_html(resp.text)


def _new_form(ui: UIClient, seed: Seed, source_id: int, discovered: Node) -> dict[str, Any]:
    """The new-connector page's form with the discovered list in place of #discovered."""
    doc = ui.page("/connectors/new")
    form = form_of(doc.find("form", id="connector-form"))
    form.update(
        name="shop-sync",
        source_id=str(source_id),
        destination_mode="existing",
        destination_id=str(seed.endpoint("destination")),
        schedule_preset="manual",
        tables="",
    )
    form.update(form_of(discovered))
    return form


def test_discover_shows_columns_types_and_keys(seed: Seed, ui: UIClient, shop: int) -> None:
    doc = _discover(ui, shop, table="orders")
    assert unlabelled_fields(doc) == []
    rows = {
        r.find("th").text: r.find_all("td") for r in doc.find_all("tr") if r.find("th", scope="row")
    }
    columns = [c.text for c in rows["orders"][1].find_all("span", class_="col")]
    assert columns == ["id (integer)", "total (real)", "note (text)", "updated_at (timestamp)"]
    assert rows["orders"][2].text == "id"
    assert rows["customers"][2].text == "code, region"
    # Ticked as chosen; each key prefilled from the discovered one; cursors among columns.
    ticked = {i.attrs["value"]: "checked" in i.attrs for i in doc.find_all("input", name="table")}
    assert ticked == {"customers": False, "orders": True}
    assert doc.find("input", name="table.orders.primary_key").attrs["value"] == "id"
    assert doc.find("input", name="table.customers.primary_key").attrs["value"] == "code, region"
    cursor = doc.find("select", name="table.customers.cursor_column")
    assert [o.attrs["value"] for o in cursor.find_all("option")] == [
        "",
        "code",
        "region",
        "name",
        "changed_at",
    ]


def test_two_tables_saved_with_their_own_settings_and_shown_again(
    seed: Seed, ui: UIClient, shop: int
) -> None:
    form = _new_form(ui, seed, shop, _discover(ui, shop))
    _tick(form, "table", ["orders", "customers"])
    _tick(form, "table.orders.columns", ["id", "total", "updated_at"])
    form.update(
        {
            "table.orders.write_disposition": "append",
            "table.orders.cursor_column": "updated_at",
            "table.customers.write_disposition": "merge",
            "table.customers.cursor_column": "changed_at",
        }
    )
    resp = ui.post("/connectors/new", form)
    assert resp.status_code == 303, resp.text
    cid = int(resp.headers["location"].rsplit("/", 1)[1])
    stored = seed.get(cid).source_config_override["tables"]
    assert stored == [
        {
            "name": "orders",
            "columns": ["id", "total", "updated_at"],
            "primary_key": "id",
            "cursor_column": "updated_at",
            "write_disposition": "append",
        },
        {
            "name": "customers",
            "primary_key": ["code", "region"],
            "cursor_column": "changed_at",
            "write_disposition": "merge",
        },
    ]
    # The edit page shows both as chosen with their settings; the typed box stays empty.
    doc = ui.page(f"/connectors/{cid}/edit")
    assert unlabelled_fields(doc) == []
    assert doc.find("input", name="tables").attrs["value"] == ""
    ticked = [i.attrs["value"] for i in doc.find_all("input", name="table", checked="")]
    assert ticked == ["orders", "customers"]
    assert doc.find("input", name="table.orders.columns").attrs["value"] == "id, total, updated_at"
    assert doc.find("input", name="table.customers.primary_key").attrs["value"] == "code, region"
    merge = doc.find("select", name="table.customers.write_disposition")
    assert merge.find("option", selected="").attrs["value"] == "merge"
    # Saved again unchanged, nothing changes; discovering again keeps the choices.
    edit = form_of(doc.find("form", id="connector-form"))
    assert ui.post(f"/connectors/{cid}/edit", edit).status_code == 303
    assert seed.get(cid).source_config_override["tables"] == stored
    again = _discover(ui, shop, **{k: v for k, v in edit.items() if k.startswith("table")})
    boxes = again.find_all("input", name="table.orders.columns")
    assert {b.attrs["value"]: "checked" in b.attrs for b in boxes} == {
        "id": True,
        "total": True,
        "note": False,
        "updated_at": True,
    }


def test_bad_per_table_choices_are_named_next_to_the_table(
    seed: Seed, ui: UIClient, shop: int
) -> None:
    form = _new_form(ui, seed, shop, _discover(ui, shop))
    _tick(form, "table", ["orders", "customers"])
    _tick(form, "table.orders.columns", ["total", "note"])  # leaves out key and cursor
    form.update(
        {
            "table.orders.cursor_column": "updated_at",
            "table.customers.primary_key": "",
            "table.customers.write_disposition": "merge",
        }
    )
    resp = ui.post("/connectors/new", form)
    assert resp.status_code == 422
    doc = parse_html(resp.text)
    picks = doc.find("table", class_="list compact table-picks")
    errors = {p.attrs["id"]: p.text for p in picks.find_all("p", class_="field-error")}
    assert errors == {
        "err-t0-pk": "merge needs a primary key",  # customers (tables in name order)
        "err-t1-pk": "id is not among the columns to copy",  # orders
        "err-t1-cursor": "updated_at is not among the columns to copy",
    }
    # The discovered list and the choices are kept for the next try.
    assert [i.attrs["value"] for i in picks.find_all("input", name="table", checked="")] == [
        "customers",
        "orders",
    ]
    with session_scope(seed.settings.effective_database_url) as session:
        assert session.query(Connector).count() == 0


def test_copy_inputs_use_hints_not_values(seed: Seed, ui: UIClient) -> None:
    doc = ui.page("/connectors/new")
    for name in ("primary_key", "cursor_column"):
        field = doc.find("input", name=name)
        assert "placeholder" not in field.attrs
        assert field.attrs["value"] == ""
    assert "e.g. id" in doc.by_id("f-primary-key-help").text
    assert "e.g. updated_at" in doc.by_id("f-cursor-column-help").text


@pytest.mark.parametrize(
    ("table", "reason"),
    [
        ({"name": "a", "write_disposition": "merge"}, "write mode merge needs a primary key"),
        ({"name": "a", "columns": ["x"], "primary_key": "id"}, "primary key column id is not"),
        ({"name": "a", "columns": ["x"], "cursor_column": "u"}, "cursor column u is not among"),
        ({"name": "a", "columns": []}, "columns is empty"),
    ],
)
def test_the_api_shape_refuses_per_table_settings_that_cannot_work(
    table: dict[str, Any], reason: str
) -> None:
    from conveyor.errors import ValidationFailed
    from conveyor.pipelines.registry import validate_config

    config = {"connection_string": "sqlite://", "tables": [table]}
    with pytest.raises(ValidationFailed) as caught:
        validate_config("source", "sql_database", config, loc="source_config_override")
    (problem,) = caught.value.problems
    assert problem.loc == "source_config_override"
    assert problem.reason.startswith(f"table 'a': {reason}")
    # The same table with a key and its columns is fine.
    validate_config("source", "sql_database", {**config, "tables": [{"name": "a"}]})
