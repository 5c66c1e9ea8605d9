"""A stored secret is only ever sent to the target it was stored with (issue 15, points 1,
2 and 8), attacked the way a viewer or an editor would: a fake PostgreSQL server and an HTTP
sink record what they receive, and a canary secret must never arrive. Each attack has a
control beside it showing the same recorder does receive the canary where it belongs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from conveyor.db.models import Connector, Source
from conveyor.db.session import session_scope
from conveyor.pipelines.flow import RunFailed, run_connector
from conveyor.settings import Settings
from tests.fixtures.pipelines import last_run
from tests.fixtures.recorders import FakePostgres, HttpSink
from tests.fixtures.ui import Seed, UIClient, cheap_password_hashing, make_user

CANARY = "canary-7f3a9c1e5d2b"


@pytest.fixture
def seed(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Seed:
    cheap_password_hashing(monkeypatch)
    for name, role in (("alice", "admin"), ("eddie", "editor"), ("erin", "editor")):
        make_user(settings, name, role)
    make_user(settings, "victor", "viewer")
    return Seed(settings)


def _pg_source(seed: Seed, host: str, port: int, by: str = "alice") -> int:
    return seed.endpoint(
        "source",
        by=by,
        config={
            "host": host,
            "port": port,
            "database": "sales",
            "username": "reader",
            "password": CANARY,
        },
    )


def _form(fake: FakePostgres) -> dict[str, str]:
    """The edit form as a browser submits it, pointed at the fake server."""
    return {
        "name": "x",
        "cfg.host": fake.host,
        "cfg.port": str(fake.port),
        "cfg.database": "sales",
        "cfg.username": "reader",
    }


def _stored_config(settings: Settings, source_id: int) -> dict[str, Any]:
    with session_scope(settings.effective_database_url) as session:
        obj = session.get(Source, source_id)
        assert obj is not None
        return dict(obj.config)


# --- 1. Test connection and check with the stored password against another host ----------


def test_ui_test_of_a_stored_source_never_sends_its_password_elsewhere(
    settings: Settings, seed: Seed, fake_postgres: FakePostgres
) -> None:
    source_id = _pg_source(seed, "db.invalid", 5432)
    editor = UIClient(settings).login("eddie")
    form = _form(fake_postgres)
    resp = editor.htmx("POST", f"/sources/{source_id}/test", data=form)
    assert resp.status_code == 200
    assert fake_postgres.connections >= 1  # the test did connect, without the password
    assert not fake_postgres.got(CANARY)


def test_control_the_fake_server_records_a_password_sent_to_it(
    settings: Settings, seed: Seed, fake_postgres: FakePostgres
) -> None:
    # The source is stored pointing at the fake: there the password belongs, and arrives.
    source_id = _pg_source(seed, fake_postgres.host, fake_postgres.port)
    editor = UIClient(settings).login("eddie")
    form = _form(fake_postgres)
    resp = editor.htmx("POST", f"/sources/{source_id}/test", data=form)
    assert resp.status_code == 200
    assert fake_postgres.got(CANARY)
    assert CANARY not in resp.text


def test_ui_test_with_the_password_entered_again_may_go_to_the_new_host(
    settings: Settings, seed: Seed, fake_postgres: FakePostgres
) -> None:
    source_id = _pg_source(seed, "db.invalid", 5432)
    editor = UIClient(settings).login("eddie")
    form = {**_form(fake_postgres), "cfg.password": "typed-again-1234"}
    editor.htmx("POST", f"/sources/{source_id}/test", data=form)
    assert fake_postgres.got("typed-again-1234") and not fake_postgres.got(CANARY)


@pytest.mark.parametrize(
    "method,url,data",
    [
        ("POST", "/sources/{id}/test", {"cfg.host": "{host}", "cfg.port": "{port}"}),
        ("POST", "/sources/test", {"type": "sql_database", "cfg.host": "{host}"}),
        ("POST", "/connectors/form/test?kind=source", {"source_id": "{id}"}),
        ("POST", "/connectors/form/discover", {"source_id": "{id}"}),
    ],
)
def test_viewers_cannot_test_or_discover_in_the_ui(
    settings: Settings,
    seed: Seed,
    fake_postgres: FakePostgres,
    method: str,
    url: str,
    data: dict[str, str],
) -> None:
    source_id = _pg_source(seed, fake_postgres.host, fake_postgres.port)
    viewer = UIClient(settings).login("victor")
    fill = {"id": str(source_id), "host": fake_postgres.host, "port": str(fake_postgres.port)}
    body = {k: v.format(**fill) for k, v in data.items()}
    resp = viewer.post(url.format(**fill), data=body)
    assert resp.status_code == 403, resp.text
    assert fake_postgres.connections == 0


def test_viewers_cannot_check_or_discover_in_the_api(
    admin: Any, viewer: Any, fake_postgres: FakePostgres
) -> None:
    config = {
        "host": fake_postgres.host,
        "port": fake_postgres.port,
        "database": "d",
        "username": "r",
    }
    source_id = admin.make_source(config={**config, "password": CANARY})["id"]
    assert viewer.post(f"/api/v1/sources/{source_id}/check").status_code == 403
    assert viewer.get(f"/api/v1/sources/{source_id}/discover").status_code == 403
    assert fake_postgres.connections == 0
    admin.post(f"/api/v1/sources/{source_id}/check")  # control: an admin's check arrives
    assert fake_postgres.got(CANARY)


def test_api_moving_a_source_needs_its_password_again(
    settings: Settings, admin: Any, fake_postgres: FakePostgres
) -> None:
    source = admin.make_source(
        config={"host": "db.invalid", "database": "sales", "username": "r", "password": CANARY}
    )
    before = _stored_config(settings, source["id"])
    moved = {"host": fake_postgres.host, "port": fake_postgres.port}
    resp = admin.patch(f"/api/v1/sources/{source['id']}", json={"config": moved})
    assert resp.status_code == 422
    assert [e["field"] for e in resp.json()["errors"]] == ["config.password"]
    assert "host" in resp.json()["errors"][0]["reason"]
    assert _stored_config(settings, source["id"]) == before  # nothing changed
    # Sent back masked is not entered again either.
    masked = {**moved, "password": "********"}
    assert (
        admin.patch(f"/api/v1/sources/{source['id']}", json={"config": masked}).status_code == 422
    )
    # Entered again (or removed with null), the move is accepted and the check uses it.
    again = {**moved, "password": "new-one-5678"}
    assert admin.patch(f"/api/v1/sources/{source['id']}", json={"config": again}).status_code == 200
    admin.post(f"/api/v1/sources/{source['id']}/check")
    assert fake_postgres.got("new-one-5678") and not fake_postgres.got(CANARY)
    # A change that does not move it keeps the stored secret.
    same = {"username": "other"}
    assert admin.patch(f"/api/v1/sources/{source['id']}", json={"config": same}).status_code == 200


def test_ui_edit_moving_a_source_needs_its_password_again(
    settings: Settings, seed: Seed, fake_postgres: FakePostgres
) -> None:
    source_id = _pg_source(seed, "db.invalid", 5432)
    before = _stored_config(settings, source_id)
    admin = UIClient(settings).login("alice")
    form = {
        "name": "moved",
        "cfg.host": fake_postgres.host,
        "cfg.port": str(fake_postgres.port),
        "cfg.database": "sales",
    }
    resp = admin.post(f"/sources/{source_id}", data=form)
    assert resp.status_code == 422
    assert "enter it again" in resp.text
    assert _stored_config(settings, source_id) == before


# --- 2. A connector's override never moves someone else's source --------------------------


def _rest_source(base_url: str) -> dict[str, Any]:
    return {
        "type": "rest_api",
        "config": {
            "base_url": base_url,
            "auth_type": "bearer_token",
            "token": CANARY,
            "resources": ["items"],
        },
    }


@pytest.mark.parametrize(
    "override",
    [{"base_url": "{sink}/"}, {"host": "127.0.0.1"}],
    ids=["rest-base-url", "sql-host"],
)
def test_editor_cannot_point_an_admins_source_elsewhere(
    admin: Any, editor: Any, http_sink: HttpSink, override: dict[str, str]
) -> None:
    if "base_url" in override:
        source = admin.make_source(**_rest_source("http://api.invalid/"))
    else:
        source = admin.make_source()
    body = {k: v.format(sink=http_sink.url) for k, v in override.items()}
    resp = editor.post(
        "/api/v1/connectors",
        json={
            "name": "borrowed",
            "source_id": source["id"],
            "destination_id": editor.make_destination()["id"],
            "source_config_override": body,
        },
    )
    assert resp.status_code == 422, resp.text
    field = next(iter(body))
    assert resp.json()["errors"][0]["field"] == f"source_config_override.{field}"


def test_an_override_stored_past_the_service_never_runs(factory: Any, http_sink: HttpSink) -> None:
    cid = factory(("rest_api", _rest_source("http://api.invalid/")["config"]), ("duckdb", {}))
    with session_scope(factory.settings.effective_database_url) as session:
        c = session.get(Connector, cid)
        assert c is not None
        c.source_config_override = {"base_url": http_sink.url + "/"}
    with pytest.raises(RunFailed) as failed:
        run_connector(cid, settings=factory.settings)
    assert "source_config_override.base_url" in str(failed.value)
    assert last_run(factory.settings, cid).status == "failed"
    assert http_sink.requests == []


def test_resource_paths_elsewhere_get_no_credentials(factory: Any, http_sink: HttpSink) -> None:
    # One recorder plays both parts: its own origin is the API, the same server reached as
    # ``localhost`` (another origin) is the attacker. The override adds a resource whose
    # path is a full URL at the attacker's sink.
    elsewhere = http_sink.url.replace("127.0.0.1", "localhost") + "/steal"
    cid = factory(
        (
            "rest_api",
            {**_rest_source(http_sink.url + "/")["config"], "headers": {"X-Team": CANARY}},
        ),
        ("duckdb", {}),
        source_override={"resources": ["items", {"name": "x", "endpoint": elsewhere}]},
    )
    run_connector(cid, settings=factory.settings)
    to_legit = [r for r in http_sink.requests if r.path.startswith("/items")]
    stolen = [r for r in http_sink.requests if r.path.startswith("/steal")]
    assert to_legit and all(CANARY in r.text() for r in to_legit)  # control: sent at home
    assert stolen and not any(CANARY in r.text() for r in stolen)


def test_a_redirect_elsewhere_is_not_followed_with_credentials(
    factory: Any, http_sink: HttpSink
) -> None:
    elsewhere = http_sink.url.replace("127.0.0.1", "localhost") + "/steal"
    http_sink.routes["/items"] = (302, {"Location": elsewhere}, b"")
    cid = factory(
        (
            "rest_api",
            {
                **_rest_source(http_sink.url + "/")["config"],
                "auth_type": "api_key",
                "api_key": CANARY,
                "token": None,
            },
        ),
        ("duckdb", {}),
    )
    with pytest.raises(RunFailed) as failed:
        run_connector(cid, settings=factory.settings)
    assert "redirected" in str(failed.value) and CANARY not in str(failed.value)
    assert [r.path for r in http_sink.requests] == ["/items"]  # never followed


# --- roles: editors run and change only their own connectors -----------------------------


def test_editors_run_only_their_own_connectors(
    admin: Any, editor: Any, editor2: Any, settings: Settings
) -> None:
    mine = editor.make_connector()
    theirs = admin.make_connector()
    for who, cid in ((editor, theirs["id"]), (editor2, mine["id"])):
        resp = who.post(f"/api/v1/connectors/{cid}/run")
        assert resp.status_code == 403, resp.text
        assert who.post(f"/api/v1/connectors/{cid}/pause").status_code == 403
    with session_scope(settings.effective_database_url) as session:
        assert session.scalars(select(Connector.is_active)).all() == [True, True]


# --- 8. header values are secrets --------------------------------------------------------


def test_rest_header_values_are_write_only(admin: Any, viewer: Any, app_settings: Settings) -> None:
    body = _rest_source("http://api.invalid/")
    body["config"]["headers"] = {"Authorization": f"Token {CANARY}", "Accept": "text/csv"}
    source = admin.make_source(**body)
    shown = viewer.get(f"/api/v1/sources/{source['id']}").json()
    assert shown["config"]["headers"] == {"Authorization": "********", "Accept": "********"}
    assert CANARY not in json.dumps(shown)
    assert CANARY not in json.dumps(_stored_config(app_settings, source["id"]))  # encrypted
    assert CANARY not in json.dumps(admin.get("/api/v1/audit").json())
    # A PATCH sending the masked values back keeps them; the base URL moving drops them.
    keep = {"headers": {"Authorization": "********", "Accept": "********"}, "timeout": 5}
    assert admin.patch(f"/api/v1/sources/{source['id']}", json={"config": keep}).status_code == 200
    moved = {"base_url": "http://elsewhere.invalid/", "token": "t-again-1234"}
    resp = admin.patch(f"/api/v1/sources/{source['id']}", json={"config": moved})
    assert resp.status_code == 422
    assert [e["field"] for e in resp.json()["errors"]] == ["config.headers"]
