"""Authentication and the role matrix, checked against the server for each endpoint class."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.fixtures.web import ApiUser
from tests.helpers import table_counts


def test_health_needs_no_auth_and_everything_else_does(client: TestClient) -> None:
    assert client.get("/api/v1/health").status_code == 200
    for method, url in [
        ("GET", "/api/v1/connectors"),
        ("POST", "/api/v1/connectors"),
        ("GET", "/api/v1/sources"),
        ("GET", "/api/v1/me"),
        ("GET", "/api/v1/users"),
        ("GET", "/api/v1/runs/1"),
    ]:
        resp = client.request(method, url)
        assert resp.status_code == 401, (method, url)
        assert resp.json()["detail"] == "authentication required"


def test_invalid_and_revoked_tokens_are_refused(admin: ApiUser, client: TestClient) -> None:
    bad = client.get("/api/v1/me", headers={"Authorization": "Bearer cvt_nope"})
    assert bad.status_code == 401
    created = admin.post("/api/v1/tokens", json={"name": "ci"}).json()
    assert created["token"].startswith("cvt_")
    h = {"Authorization": f"Bearer {created['token']}"}
    assert client.get("/api/v1/me", headers=h).json()["username"] == "alice"
    listed = admin.get("/api/v1/tokens").json()
    assert all("token" not in t for t in listed)  # shown once, never again
    assert admin.delete(f"/api/v1/tokens/{created['id']}").status_code == 204
    assert client.get("/api/v1/me", headers=h).status_code == 401


def test_connector_writes_check_the_token_and_change_nothing_when_it_is_bad(
    admin: ApiUser, client: TestClient, database_url: str
) -> None:
    # These endpoints check the token inside the transaction that makes the change.
    conn = admin.make_connector()
    cid = conn["id"]
    created = admin.post("/api/v1/tokens", json={"name": "soon-revoked"}).json()
    assert admin.delete(f"/api/v1/tokens/{created['id']}").status_code == 204
    new = {
        "name": "not-made",
        "source_id": conn["source_id"],
        "destination_id": conn["destination_id"],
        "schedule": "0 1 * * *",
    }
    before = table_counts(database_url)
    for token in ["cvt_nope", created["token"]]:
        h = {"Authorization": f"Bearer {token}"}
        for method, url, body in [
            ("POST", "/api/v1/connectors", new),
            ("PATCH", f"/api/v1/connectors/{cid}", {"schedule": "0 1 * * *"}),
            ("POST", f"/api/v1/connectors/{cid}/pause", None),
            ("POST", f"/api/v1/connectors/{cid}/resume", None),
        ]:
            resp = client.request(method, url, json=body, headers=h)
            assert resp.status_code == 401, (method, url, resp.text)
            assert resp.json()["detail"] == "the API token is invalid or revoked"
    assert table_counts(database_url) == before
    after = admin.get(f"/api/v1/connectors/{cid}").json()
    assert (after["schedule"], after["is_active"]) == ("0 */6 * * *", True)


def test_viewer_reads_everything_and_changes_nothing(
    admin: ApiUser, viewer: ApiUser, database_url: str
) -> None:
    conn = admin.make_connector()
    cid, sid, did = conn["id"], conn["source_id"], conn["destination_id"]
    for url in [
        "/api/v1/connectors",
        f"/api/v1/connectors/{cid}",
        f"/api/v1/connectors/{cid}/runs",
        "/api/v1/sources",
        f"/api/v1/sources/{sid}",
        "/api/v1/destinations",
        "/api/v1/source-types",
        "/api/v1/destination-types",
        "/api/v1/me",
    ]:
        assert viewer.get(url).status_code == 200, url
    before = table_counts(database_url)
    attempts = [
        viewer.post("/api/v1/sources", json={"name": "v", "type": "duckdb", "config": {}}),
        viewer.post("/api/v1/destinations", json={"name": "v", "type": "duckdb", "config": {}}),
        viewer.patch(f"/api/v1/sources/{sid}", json={"name": "renamed"}),
        viewer.delete(f"/api/v1/destinations/{did}"),
        viewer.post(
            "/api/v1/connectors", json={"name": "v", "source_id": sid, "destination_id": did}
        ),
        viewer.patch(f"/api/v1/connectors/{cid}", json={"schedule": "0 * * * *"}),
        viewer.post(f"/api/v1/connectors/{cid}/pause"),
        viewer.post(f"/api/v1/connectors/{cid}/resume"),
        viewer.delete(f"/api/v1/connectors/{cid}"),
        viewer.post(f"/api/v1/connectors/{cid}/run"),
        viewer.post(
            "/api/v1/users", json={"username": "x", "password": "long-enough", "role": "admin"}
        ),
        viewer.get("/api/v1/users"),
        viewer.get("/api/v1/audit"),
    ]
    assert [r.status_code for r in attempts] == [403] * len(attempts)
    assert table_counts(database_url) == before


def test_editor_changes_own_connectors_only(
    admin: ApiUser, editor: ApiUser, editor2: ApiUser, database_url: str
) -> None:
    mine = editor.make_connector()
    assert mine["owner"] == "eddie"
    theirs = editor2.make_connector()
    ok = editor.patch(f"/api/v1/connectors/{mine['id']}", json={"description": "mine"})
    assert ok.status_code == 200
    before = table_counts(database_url)
    for resp in [
        editor.patch(f"/api/v1/connectors/{theirs['id']}", json={"description": "x"}),
        editor.post(f"/api/v1/connectors/{theirs['id']}/pause"),
        editor.delete(f"/api/v1/connectors/{theirs['id']}"),
        editor.get("/api/v1/users"),
        editor.post(
            "/api/v1/users", json={"username": "x", "password": "long-enough", "role": "viewer"}
        ),
    ]:
        assert resp.status_code == 403, resp.text
    assert table_counts(database_url) == before
    # Admins change anything.
    assert (
        admin.patch(
            f"/api/v1/connectors/{theirs['id']}", json={"description": "by admin"}
        ).status_code
        == 200
    )


def test_admin_manages_users_and_audit_is_masked(admin: ApiUser) -> None:
    resp = admin.post(
        "/api/v1/users", json={"username": "bob", "password": "bob-password-1", "role": "viewer"}
    )
    assert resp.status_code == 201
    assert "password" not in resp.json()
    dup = admin.post(
        "/api/v1/users", json={"username": "bob", "password": "bob-password-1", "role": "viewer"}
    )
    assert dup.status_code == 409
    short = admin.post("/api/v1/users", json={"username": "c", "password": "x", "role": "viewer"})
    assert short.status_code == 422 and short.json()["errors"][0]["field"] == "password"
    entries = admin.get("/api/v1/audit?action=user.create").json()
    assert entries[0]["after"] == {"username": "bob", "role": "viewer"}
    assert "bob-password-1" not in str(admin.get("/api/v1/audit").json())


@pytest.mark.parametrize("role", ["viewer", "editor"])
def test_session_cookie_login_is_accepted(role: str, client: TestClient, app_settings) -> None:
    """The UI's session cookie authenticates API calls too (set by the login page)."""
    from conveyor.db.session import session_scope
    from conveyor.domain.models import UserCreate
    from conveyor.services import users
    from conveyor.services.authz import SYSTEM

    with session_scope(app_settings.effective_database_url) as session:
        users.create_user(
            UserCreate(username="kim", password="kims-password", role=role),
            session=session,
            actor=SYSTEM,
        )
    assert client.get("/api/v1/me").status_code == 401
    # Without the UI, simulate its login by signing a session cookie the same way.
    import base64
    import json

    from itsdangerous import TimestampSigner

    from conveyor.web.app import _session_secret

    signer = TimestampSigner(_session_secret(app_settings.secret_keys()))
    with session_scope(app_settings.effective_database_url) as session:
        kim = users.get_by_username("kim", session=session)
        assert kim is not None
        uid, token = kim.id, users.start_ui_session(kim, session=session)

    def cookie(payload: dict[str, object]) -> str:
        return signer.sign(base64.b64encode(json.dumps(payload).encode())).decode()

    client.cookies.set("conveyor_session", cookie({"uid": uid, "sid": token}))
    assert client.get("/api/v1/me").json() == {"username": "kim", "role": role, "id": uid}
    # A signed cookie is not enough by itself: it must name a login that has not ended.
    for forged in ({"uid": uid}, {"uid": uid, "sid": "made-up"}, {"uid": uid + 1, "sid": token}):
        client.cookies.set("conveyor_session", cookie(forged))
        assert client.get("/api/v1/me").status_code == 401, forged
    with session_scope(app_settings.effective_database_url) as session:
        users.end_ui_session(token, session=session)
    client.cookies.set("conveyor_session", cookie({"uid": uid, "sid": token}))
    assert client.get("/api/v1/me").status_code == 401


def test_liveness_answers_without_database_or_auth(client: TestClient) -> None:
    assert client.get("/api/v1/health/live").json() == {"status": "alive"}
