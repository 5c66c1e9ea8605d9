"""Sources, destinations and their type catalogues through the REST API."""

from __future__ import annotations

from sqlalchemy import select

from conveyor.db.models import AuditEntry, Source
from conveyor.db.session import session_scope
from tests.fixtures.web import ApiUser
from tests.helpers import table_counts


def test_type_catalogues_list_every_type_with_its_schema(admin: ApiUser) -> None:
    sources = {t["name"]: t for t in admin.get("/api/v1/source-types").json()}
    dests = {t["name"]: t for t in admin.get("/api/v1/destination-types").json()}
    assert set(sources) == {"sql_database", "filesystem", "rest_api"}
    assert set(dests) == {"duckdb", "ducklake", "postgres", "filesystem", "sftp", "rest_api"}
    assert set(dests["ducklake"]["secret_fields"]) == {"catalog_url", "aws_secret_access_key"}
    sql = sources["sql_database"]
    assert set(sql["secret_fields"]) == {"password", "connection_string"}
    props = sql["config_schema"]["properties"]
    assert props["password"]["writeOnly"] is True
    assert {"host", "port", "database", "username", "query", "tables", "batch_size"} <= set(props)


def test_source_secrets_are_write_only_and_encrypted_at_rest(
    admin: ApiUser, database_url: str
) -> None:
    src = admin.make_source(name="crm")
    assert src["config"]["password"] == "********"
    assert src["config"]["host"] == "db.example.com"
    assert admin.get(f"/api/v1/sources/{src['id']}").json()["config"]["password"] == "********"
    with session_scope(database_url) as session:
        stored = session.get(Source, src["id"]).config  # type: ignore[union-attr]
        audit = [e.after for e in session.scalars(select(AuditEntry))]
    assert stored["password"].startswith("fernet:")
    assert "s3cret-pw" not in str(stored)
    assert "s3cret-pw" not in str(audit) and "********" in str(audit)


def test_patch_without_secret_keeps_it(admin: ApiUser, app_settings, database_url: str) -> None:
    from conveyor.secrets import SecretBox

    src = admin.make_source()
    resp = admin.patch(
        f"/api/v1/sources/{src['id']}",
        json={"config": {"username": "reader2", "database": "sales", "password": "********"}},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["config"]["username"] == "reader2"
    box = SecretBox(app_settings.secret_keys())
    with session_scope(database_url) as session:
        stored = session.get(Source, src["id"]).config  # type: ignore[union-attr]
    assert box.decrypt(stored["password"]) == "s3cret-pw"


def test_unknown_type_and_bad_config_name_the_field(admin: ApiUser, database_url: str) -> None:
    before = table_counts(database_url)
    resp = admin.post("/api/v1/sources", json={"name": "x", "type": "oracle", "config": {}})
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["field"] == "type"
    assert "unknown source type 'oracle'" in resp.json()["errors"][0]["reason"]

    resp = admin.post(
        "/api/v1/sources",
        json={"name": "x", "type": "sql_database", "config": {"host": "h", "port": "abc"}},
    )
    assert resp.status_code == 422
    fields = {e["field"] for e in resp.json()["errors"]}
    assert "config.port" in fields

    resp = admin.post(
        "/api/v1/destinations",
        json={"name": "x", "type": "sftp", "config": {"host": "h", "username": "u", "colour": 1}},
    )
    assert resp.status_code == 422
    reasons = {e["field"]: e["reason"] for e in resp.json()["errors"]}
    assert reasons["config.colour"] == "Extra inputs are not permitted"
    assert table_counts(database_url) == before


def test_duplicate_name_is_409(admin: ApiUser, database_url: str) -> None:
    admin.make_destination(name="warehouse")
    before = table_counts(database_url)
    resp = admin.post(
        "/api/v1/destinations", json={"name": "warehouse", "type": "duckdb", "config": {}}
    )
    assert resp.status_code == 409
    assert "already exists" in resp.json()["detail"]
    assert table_counts(database_url) == before


def test_delete_in_use_is_409_naming_the_connectors(admin: ApiUser, database_url: str) -> None:
    conn = admin.make_connector(name="nightly-orders")
    before = table_counts(database_url)
    resp = admin.delete(f"/api/v1/sources/{conn['source_id']}")
    assert resp.status_code == 409
    assert "nightly-orders" in resp.json()["detail"]
    assert table_counts(database_url) == before
    assert admin.delete(f"/api/v1/connectors/{conn['id']}").status_code == 204
    assert admin.delete(f"/api/v1/sources/{conn['source_id']}").status_code == 204
    assert admin.get(f"/api/v1/sources/{conn['source_id']}").status_code == 404


def test_missing_source_is_404(admin: ApiUser) -> None:
    resp = admin.get("/api/v1/sources/999")
    assert resp.status_code == 404
    assert resp.json()["detail"] == "source 999 does not exist"


def test_patch_merges_config_and_null_removes_a_key(admin: ApiUser) -> None:
    src = admin.make_source(
        config={"host": "h", "database": "d", "username": "u1", "schema": "s", "password": "pw1"}
    )
    resp = admin.patch(
        f"/api/v1/sources/{src['id']}", json={"config": {"schema": None, "username": "u2"}}
    )
    assert resp.status_code == 200, resp.text
    config = resp.json()["config"]
    assert config == {"host": "h", "database": "d", "username": "u2", "password": "********"}
