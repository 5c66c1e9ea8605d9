"""POST /api/v1/connectors/{id}/reset: the next run of an incremental connector reloads in
full; with drop_tables the connector's tables are gone first; refused while a run is open
and, with drop_tables, for a destination that cannot drop; audited."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conveyor.db.models import ConnectorRun
from conveyor.db.session import session_scope
from conveyor.pipelines.flow import run_connector
from conveyor.settings import Settings
from tests.fixtures.pipelines import duckdb_rows, pg_rows
from tests.fixtures.web import ApiUser


def write_csv(path: Path, n: int) -> None:
    path.write_text("id,v\n" + "".join(f"{i},{i * 2}\n" for i in range(n)))


def append_connector(user: ApiUser, folder: Path, **destination: Any) -> int:
    src = user.make_source(type="filesystem", config={"path": str(folder), "file_pattern": "*.csv"})
    dst = user.make_destination(**destination) if destination else user.make_destination()
    made = user.make_connector(
        source_id=src["id"],
        destination_id=dst["id"],
        schedule=None,
        source_config_override={"table_name": "t", "write_disposition": "append"},
    )
    return int(made["id"])


def tables(settings: Settings, cid: int) -> list[str]:
    rows = duckdb_rows(
        settings,
        f"SELECT table_name FROM duckdb_tables() WHERE schema_name = 'connector_{cid}'"
        " AND table_name NOT LIKE '_dlt%' ORDER BY 1",
    )
    return [r[0] for r in rows]


def test_reset_reloads_in_full_and_drop_tables_starts_from_an_empty_table(
    admin: ApiUser, app_settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write_csv(folder / "a.csv", 100)
    cid = append_connector(admin, folder)
    assert run_connector(cid, settings=app_settings)["rows_loaded"] == 100
    assert run_connector(cid, settings=app_settings)["rows_loaded"] == 0  # incremental

    resp = admin.post(f"/api/v1/connectors/{cid}/reset", json={"drop_tables": False})
    assert resp.status_code == 200, resp.text
    assert resp.json()["dropped_tables"] == []
    assert "next run reloads" in resp.json()["message"]
    assert run_connector(cid, settings=app_settings)["rows_loaded"] == 100  # in full again
    count = f"SELECT count(*) FROM connector_{cid}.t"
    assert duckdb_rows(app_settings, count) == [(200,)]  # appended: kept, not dropped

    resp = admin.post(f"/api/v1/connectors/{cid}/reset", json={"drop_tables": True})
    assert resp.status_code == 200, resp.text
    assert resp.json()["dropped_tables"] == ["t"]
    assert tables(app_settings, cid) == []  # gone before the next run
    assert run_connector(cid, settings=app_settings)["rows_loaded"] == 100
    assert duckdb_rows(app_settings, count) == [(100,)]  # exactly the source's rows

    audit = admin.get(
        "/api/v1/audit", params={"action": "connector.reset", "entity_id": str(cid)}
    ).json()
    assert [e["after"] for e in audit] == [
        {"drop_tables": True, "dropped_tables": ["t"]},
        {"drop_tables": False, "dropped_tables": []},
    ]
    assert all(e["actor"] == admin.username for e in audit)


def test_reset_refused_while_a_run_is_open_and_for_others(
    admin: ApiUser, editor: ApiUser, viewer: ApiUser, app_settings: Settings, tmp_path: Path
) -> None:
    cid = append_connector(editor, tmp_path)
    assert viewer.post(f"/api/v1/connectors/{cid}/reset").status_code == 403
    with session_scope(app_settings.effective_database_url) as s:
        s.add(ConnectorRun(connector_id=cid, status="running", trigger="manual"))
    resp = editor.post(f"/api/v1/connectors/{cid}/reset", json={})
    assert resp.status_code == 409 and "run in progress" in resp.text
    assert admin.get("/api/v1/audit", params={"action": "connector.reset"}).json() == []


def test_drop_tables_refused_where_the_destination_cannot_drop(
    admin: ApiUser, tmp_path: Path
) -> None:
    rest = {"type": "rest_api", "config": {"url": "http://127.0.0.1:9/upload"}}
    cid = append_connector(admin, tmp_path, **rest)
    resp = admin.post(f"/api/v1/connectors/{cid}/reset", json={"drop_tables": True})
    assert resp.status_code == 422, resp.text
    assert "drop_tables" in resp.text and "cannot drop tables" in resp.text
    bad = admin.post(f"/api/v1/connectors/{cid}/reset", json={"drop_table": True})
    assert bad.status_code == 422 and "drop_table" in bad.text
    assert admin.post(f"/api/v1/connectors/{cid}/reset").status_code == 200


def test_drop_tables_in_postgres_only_the_connectors_own(
    factory: Any, pg_database: Any, tmp_path: Path
) -> None:
    from conveyor.services.authz import SYSTEM
    from conveyor.services.reset import reset
    from tests.fixtures.pipelines import pg_exec

    db = pg_database()
    folder = tmp_path / "in"
    folder.mkdir()
    write_csv(folder / "a.csv", 30)
    cid = factory(
        ("filesystem", {"path": str(folder), "file_pattern": "*.csv", "table_name": "Odd Name"}),
        ("postgres", {"connection_string": db}),
        source_override={"write_disposition": "append"},
    )
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 30
    pg_exec(db, f'CREATE TABLE connector_{cid}."someone_elses" (x int)')
    done = reset(cid, settings=factory.settings, actor=SYSTEM, drop_tables=True)
    assert done.dropped_tables == ["odd_name"]
    left = pg_rows(
        db,
        "SELECT table_name FROM information_schema.tables"
        f" WHERE table_schema = 'connector_{cid}' AND table_name NOT LIKE '_dlt%'",
    )
    assert left == [("someone_elses",)]
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 30
    assert pg_rows(db, f"SELECT count(*) FROM connector_{cid}.odd_name") == [(30,)]
