"""Every route by every kind of caller → the status the role model says (issue 15).

The routes come from the app's own route table, so a route added without a rule here fails
``test_every_route_has_a_rule``. Each route is then called, with a valid request, by:
anonymous, a viewer, the editor who owns the object, another editor, an admin, a revoked
API token and a disabled user. The role model (README, docs/security.md):

- ``public``: anyone;
- ``login``: any signed-in user (their own password, tokens, reading everything);
- ``editor``: creating sources, destinations and connectors, testing and discovering;
- ``owner``: changing, running or deleting a connector, source, destination or token —
  the editor who created it, or an admin;
- ``admin``: users, the audit log, deployment files.

API routes answer 401 to callers without valid credentials and 403 to a role too low; UI
routes send the first to the login page and answer 403 to the second.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conveyor.db.models import ConnectorRun
from conveyor.db.session import session_scope
from conveyor.domain.models import ConnectorCreate, EndpointCreate, UserCreate
from conveyor.domain.notifications import ChannelCreate
from conveyor.services import catalog, channels, connectors
from conveyor.services import users as users_svc
from conveyor.services.authz import SYSTEM
from conveyor.settings import Settings
from conveyor.web.app import create_app
from tests.fixtures.db import migrated_sqlite_url
from tests.fixtures.ui import PASSWORD, UIClient, cheap_password_hashing

RULES: dict[str, str] = {
    # --- JSON API -----------------------------------------------------------------------
    "GET /api/v1/openapi.json": "public",
    "GET /openapi.json": "public",
    "GET /api/v1/health": "public",
    "GET /api/v1/health/live": "public",
    "GET /api/v1/me": "login",
    "POST /api/v1/me/password": "login",
    "GET /api/v1/sources": "login",
    "POST /api/v1/sources": "editor",
    "GET /api/v1/sources/{endpoint_id}": "login",
    "PATCH /api/v1/sources/{endpoint_id}": "owner",
    "DELETE /api/v1/sources/{endpoint_id}": "owner",
    "POST /api/v1/sources/{endpoint_id}/check": "editor",
    "GET /api/v1/sources/{endpoint_id}/discover": "editor",
    "GET /api/v1/destinations": "login",
    "POST /api/v1/destinations": "editor",
    "GET /api/v1/destinations/{endpoint_id}": "login",
    "PATCH /api/v1/destinations/{endpoint_id}": "owner",
    "DELETE /api/v1/destinations/{endpoint_id}": "owner",
    "POST /api/v1/destinations/{endpoint_id}/check": "editor",
    "GET /api/v1/source-types": "login",
    "GET /api/v1/destination-types": "login",
    "GET /api/v1/connectors": "login",
    "POST /api/v1/connectors": "editor",
    "GET /api/v1/connectors/{connector_id}": "login",
    "PATCH /api/v1/connectors/{connector_id}": "owner",
    "DELETE /api/v1/connectors/{connector_id}": "owner",
    "POST /api/v1/connectors/{connector_id}/pause": "owner",
    "POST /api/v1/connectors/{connector_id}/resume": "owner",
    "POST /api/v1/connectors/{connector_id}/run": "owner",
    "POST /api/v1/connectors/{connector_id}/reset": "owner",
    "GET /api/v1/connectors/{connector_id}/runs": "login",
    "GET /api/v1/connectors/{connector_id}/versions": "login",
    "GET /api/v1/connectors/{connector_id}/versions/{number}": "login",
    "POST /api/v1/connectors/{connector_id}/versions/{number}/restore": "owner",
    "GET /api/v1/sources/{endpoint_id}/versions": "login",
    "GET /api/v1/sources/{endpoint_id}/versions/{number}": "login",
    "POST /api/v1/sources/{endpoint_id}/versions/{number}/restore": "owner",
    "GET /api/v1/destinations/{endpoint_id}/versions": "login",
    "GET /api/v1/destinations/{endpoint_id}/versions/{number}": "login",
    "POST /api/v1/destinations/{endpoint_id}/versions/{number}/restore": "owner",
    "GET /api/v1/runs/{run_id}": "login",
    "POST /api/v1/runs/{run_id}/retry": "owner",
    "POST /api/v1/runs/{run_id}/cancel": "owner",
    "GET /api/v1/runs/{run_id}/logs": "login",
    "GET /api/v1/sync": "login",
    "GET /api/v1/users": "admin",
    "POST /api/v1/users": "admin",
    "PATCH /api/v1/users/{user_id}": "admin",
    "DELETE /api/v1/users/{user_id}": "admin",
    "POST /api/v1/users/{user_id}/password": "admin",
    "GET /api/v1/tokens": "login",
    "POST /api/v1/tokens": "login",
    "DELETE /api/v1/tokens/{token_id}": "owner",
    "GET /api/v1/audit": "admin",
    "GET /api/v1/deployments/export": "admin",
    "POST /api/v1/deployments/validate": "admin",
    "POST /api/v1/deployments/plan": "admin",
    "POST /api/v1/deployments/apply": "admin",
    # Notification channels hold secrets and reach out: admins only, reading too.
    "GET /api/v1/notification-channels": "admin",
    "POST /api/v1/notification-channels": "admin",
    "GET /api/v1/notification-channels/{channel_id}": "admin",
    "PATCH /api/v1/notification-channels/{channel_id}": "admin",
    "DELETE /api/v1/notification-channels/{channel_id}": "admin",
    "POST /api/v1/notification-channels/{channel_id}/test": "admin",
    "GET /metrics": "public",
    "GET /docs": "public",
    "GET /redoc": "public",
    # --- UI ----------------------------------------------------------------------------
    "GET /login": "public",
    "POST /login": "public",
    "POST /logout": "login",
    "GET /": "login",
    "GET /account/password": "login",
    "POST /account/password": "login",
    "GET /connectors": "login",
    "GET /connectors/new": "editor",
    "POST /connectors/new": "editor",
    "GET /connectors/form/schedule": "editor",
    "GET /connectors/form/copy": "editor",
    "GET /connectors/form/endpoint": "editor",
    "POST /connectors/form/test": "editor",
    "POST /connectors/form/discover": "editor",
    "GET /connectors/{connector_id:int}": "login",
    "GET /connectors/{connector_id:int}/live": "login",
    "GET /connectors/{connector_id:int}/edit": "owner",
    "POST /connectors/{connector_id:int}/edit": "owner",
    "POST /connectors/{connector_id:int}/pause": "owner",
    "POST /connectors/{connector_id:int}/resume": "owner",
    "POST /connectors/{connector_id:int}/toggle": "owner",
    "POST /connectors/{connector_id:int}/run": "owner",
    "GET /connectors/{connector_id:int}/delete": "owner",
    "POST /connectors/{connector_id:int}/delete": "owner",
    "GET /connectors/{connector_id:int}/reset": "owner",
    "POST /connectors/{connector_id:int}/reset": "owner",
    "GET /connectors/{connector_id:int}/history": "login",
    "GET /connectors/{connector_id:int}/history/{number:int}": "login",
    "POST /connectors/{connector_id:int}/history/{number:int}/restore": "owner",
    "GET /sources/{endpoint_id:int}/history": "login",
    "GET /sources/{endpoint_id:int}/history/{number:int}": "login",
    "POST /sources/{endpoint_id:int}/history/{number:int}/restore": "owner",
    "GET /destinations/{endpoint_id:int}/history": "login",
    "GET /destinations/{endpoint_id:int}/history/{number:int}": "login",
    "POST /destinations/{endpoint_id:int}/history/{number:int}/restore": "owner",
    "GET /runs/{run_id:int}": "login",
    "GET /runs/{run_id:int}/live": "login",
    "GET /runs/{run_id:int}/log": "login",
    "POST /runs/{run_id:int}/retry": "owner",
    "POST /runs/{run_id:int}/cancel": "owner",
    "GET /sources": "login",
    "GET /sources/new": "editor",
    "GET /sources/fields": "editor",
    "POST /sources/new": "editor",
    "GET /sources/{endpoint_id:int}": "login",
    "POST /sources/{endpoint_id:int}": "owner",
    "POST /sources/{endpoint_id:int}/delete": "owner",
    "POST /sources/test": "editor",
    "POST /sources/{endpoint_id:int}/test": "editor",
    "GET /destinations": "login",
    "GET /destinations/new": "editor",
    "GET /destinations/fields": "editor",
    "POST /destinations/new": "editor",
    "GET /destinations/{endpoint_id:int}": "login",
    "POST /destinations/{endpoint_id:int}": "owner",
    "POST /destinations/{endpoint_id:int}/delete": "owner",
    "POST /destinations/test": "editor",
    "POST /destinations/{endpoint_id:int}/test": "editor",
    "GET /admin/users": "admin",
    "POST /admin/users": "admin",
    "POST /admin/users/{user_id:int}/role": "admin",
    "POST /admin/users/{user_id:int}/password": "admin",
    "POST /admin/users/{user_id:int}/disable": "admin",
    "POST /admin/users/{user_id:int}/enable": "admin",
    "POST /admin/users/{user_id:int}/delete": "admin",
    "GET /admin/tokens": "login",
    "POST /admin/tokens": "login",
    "POST /admin/tokens/{token_id:int}/revoke": "owner",
    "GET /admin/audit": "admin",
    "GET /admin/notifications": "admin",
    "GET /admin/notifications/new": "admin",
    "POST /admin/notifications/new": "admin",
    "GET /admin/notifications/{channel_id:int}": "admin",
    "POST /admin/notifications/{channel_id:int}": "admin",
    "POST /admin/notifications/{channel_id:int}/delete": "admin",
    "POST /admin/notifications/{channel_id:int}/test": "admin",
}

CALLERS = (
    "anonymous",
    "viewer",
    "editor_owner",
    "editor_other",
    "admin",
    "revoked_token",
    "disabled_user",
)
# Who each rule lets through; everyone else is refused.
ALLOWED = {
    "public": set(CALLERS),
    "login": {"viewer", "editor_owner", "editor_other", "admin"},
    "editor": {"editor_owner", "editor_other", "admin"},
    "owner": {"editor_owner", "admin"},
    "admin": {"admin"},
}
SIGNED_IN = {"viewer", "editor_owner", "editor_other", "admin"}
LOGIN_PROBE = "login-probe"  # who POST /login signs in as
# Routes that change the caller's own login, password or tokens.
CHANGES_THE_CALLER = {
    "POST /api/v1/me/password",
    "POST /account/password",
    "POST /login",
    "POST /logout",
}
_n = itertools.count(1)
# A webhook channel nobody listens to (port 9 on loopback: refused at once when tested).
HOOK = {"url": "http://127.0.0.1:9/hook", "secret": "authz-matrix-secret-0123"}


def app_routes(app: Any) -> Iterator[tuple[str, str]]:
    """(method, path) of every route the app serves (HEAD and static files aside)."""

    def walk(routes: Any) -> Iterator[tuple[str, str]]:
        for route in routes:
            if hasattr(route, "effective_route_contexts"):  # an included router
                for ctx in route.effective_route_contexts():
                    for method in getattr(ctx.original_route, "methods", None) or ():
                        yield method, ctx.path
            else:
                for method in getattr(route, "methods", None) or ():
                    yield method, route.path

    for method, path in walk(app.router.routes):
        if method != "HEAD":
            yield method, path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from cryptography.fernet import Fernet

    mp = pytest.MonkeyPatch()
    cheap_password_hashing(mp)
    tmp = tmp_path_factory.mktemp("authz")
    url = migrated_sqlite_url(tmp / "conveyor.db")
    home = tmp / "home"
    (home / "data").mkdir(parents=True)
    settings = Settings(home=home, database_url=url, secret_key=Fernet.generate_key().decode())
    with TestClient(create_app(settings)) as client:
        world = World(settings, client, tmp)
        with session_scope(url) as s:
            users_svc.create_user(
                UserCreate(username=LOGIN_PROBE, password=PASSWORD, role="viewer"),
                session=s,
                actor=SYSTEM,
            )
        yield world
    mp.undo()


@dataclass
class World:
    settings: Settings
    client: TestClient
    tmp: Path
    shared_callers: tuple[dict[str, Any], str] | None = None

    def user(self, role: str) -> tuple[str, int, str]:
        """A new user: (username, id, API token)."""
        name = f"u{next(_n)}-{role}"
        with session_scope(self.settings.effective_database_url) as s:
            user = users_svc.create_user(
                UserCreate(username=name, password=PASSWORD, role=role),  # type: ignore[arg-type]
                session=s,
                actor=SYSTEM,
            )
            uid = user.id
            _row, token = users_svc.create_token(name, "t", session=s, actor=SYSTEM)
        return name, uid, token

    def actor(self, username: str) -> Any:
        with session_scope(self.settings.effective_database_url) as s:
            user = users_svc.get_by_username(username, session=s)
            assert user is not None
            return users_svc.actor_for(user)


@dataclass
class Objects:
    """What the path parameters name, all owned by the owning editor."""

    connector_id: int
    source_id: int
    destination_id: int
    spare_source_id: int
    spare_destination_id: int
    run_id: int
    user_id: int
    token_id: int
    channel_id: int = 0


def make_objects(world: World, owner: str) -> Objects:
    from conveyor.secrets import SecretBox

    box = SecretBox(world.settings.secret_keys())
    actor = world.actor(owner)
    data = world.settings.data_dir
    with session_scope(world.settings.effective_database_url) as s:

        def endpoint(kind: str) -> int:
            config = (
                {"path": str(data / "in"), "file_pattern": "*.csv"}
                if kind == "source"
                else {"path": str(data / f"out-{next(_n)}.duckdb")}
            )
            type_name = "filesystem" if kind == "source" else "duckdb"
            obj = catalog.create(
                kind,  # type: ignore[arg-type]
                EndpointCreate(name=f"{kind}-{next(_n)}", type=type_name, config=config),
                session=s,
                actor=actor,
                box=box,
            )
            return int(obj.id)

        src, dst = endpoint("source"), endpoint("destination")
        c = connectors.create(
            ConnectorCreate(name=f"c-{next(_n)}", source_id=src, destination_id=dst),
            session=s,
            actor=actor,
            box=box,
        )
        run = ConnectorRun(connector_id=c.id, status="succeeded", trigger="manual")
        s.add(run)
        s.flush()
        ids = (c.id, src, dst, endpoint("source"), endpoint("destination"), run.id)
        spare = users_svc.create_user(
            UserCreate(username=f"spare-{next(_n)}", password=PASSWORD, role="viewer"),  # type: ignore[arg-type]
            session=s,
            actor=SYSTEM,
        )
        token, _ = users_svc.create_token(owner, "spare", session=s, actor=SYSTEM)
        channel = channels.create(
            ChannelCreate(name=f"ch-{next(_n)}", type="webhook", config=HOOK),
            session=s,
            actor=SYSTEM,
            box=box,
            settings=world.settings,
        )
        return Objects(*ids, user_id=spare.id, token_id=token.id, channel_id=channel.id)


def _fill(path: str, o: Objects) -> str:
    source_like = "/sources/" in path
    values = {
        "connector_id": o.connector_id,
        "endpoint_id": o.spare_source_id if source_like else o.spare_destination_id,
        "run_id": o.run_id,
        "user_id": o.user_id,
        "token_id": o.token_id,
        "channel_id": o.channel_id,
        "number": 1,  # every object has its version 1 (restoring it changes nothing: 409)
    }
    for name, value in values.items():
        path = path.replace("{" + name + ":int}", str(value)).replace("{" + name + "}", str(value))
    return path


def _request(method: str, path: str, o: Objects) -> dict[str, Any]:
    """A valid request for the route (so a refusal cannot hide behind a 422)."""
    key = f"{method} {path}"
    n = next(_n)
    csv_source = {"path": "in", "file_pattern": "*.csv"}
    json_bodies: dict[str, Any] = {
        "POST /api/v1/me/password": {
            "current_password": PASSWORD,
            "new_password": "another-long-password",
        },
        "POST /api/v1/sources": {"name": f"s{n}", "type": "filesystem", "config": csv_source},
        "PATCH /api/v1/sources/{endpoint_id}": {"name": f"s{n}"},
        "POST /api/v1/destinations": {"name": f"d{n}", "type": "duckdb", "config": {}},
        "PATCH /api/v1/destinations/{endpoint_id}": {"name": f"d{n}"},
        "POST /api/v1/connectors": {
            "name": f"c{n}",
            "source_id": o.source_id,
            "destination_id": o.destination_id,
        },
        "PATCH /api/v1/connectors/{connector_id}": {"description": "changed"},
        "POST /api/v1/users": {"username": f"new{n}", "password": PASSWORD, "role": "viewer"},
        "PATCH /api/v1/users/{user_id}": {"role": "editor"},
        "POST /api/v1/users/{user_id}/password": {"password": "another-long-password"},
        "POST /api/v1/tokens": {"name": "mine"},
        "POST /api/v1/deployments/validate": {"files": {}},
        "POST /api/v1/deployments/plan": {"files": {}},
        "POST /api/v1/deployments/apply": {"files": {}},
        "POST /api/v1/notification-channels": {"name": f"ch{n}", "type": "webhook", "config": HOOK},
        "PATCH /api/v1/notification-channels/{channel_id}": {"name": f"ch{n}"},
    }
    forms: dict[str, dict[str, Any]] = {
        "POST /login": {"username": LOGIN_PROBE, "password": PASSWORD},
        "POST /account/password": {
            "current_password": PASSWORD,
            "new_password": "another-long-password",
            "confirm_password": "another-long-password",
        },
        "POST /connectors/new": {
            "name": f"c{n}",
            "source_mode": "existing",
            "source_id": str(o.source_id),
            "destination_mode": "existing",
            "destination_id": str(o.destination_id),
        },
        "POST /connectors/{connector_id:int}/edit": {
            "name": f"c{n}",
            "source_mode": "existing",
            "source_id": str(o.source_id),
            "destination_mode": "existing",
            "destination_id": str(o.destination_id),
        },
        "POST /connectors/form/test": {"source_mode": "existing", "source_id": str(o.source_id)},
        "POST /connectors/form/discover": {
            "source_mode": "existing",
            "source_id": str(o.source_id),
        },
        "POST /sources/new": {"name": f"s{n}", "type": "filesystem", "cfg.path": "in"},
        "POST /sources/{endpoint_id:int}": {"name": f"s{n}", "cfg.path": "in"},
        "POST /sources/test": {"type": "filesystem", "cfg.path": "in"},
        "POST /sources/{endpoint_id:int}/test": {"name": "x", "cfg.path": "in"},
        "POST /destinations/new": {"name": f"d{n}", "type": "duckdb"},
        "POST /destinations/{endpoint_id:int}": {"name": f"d{n}"},
        "POST /destinations/test": {"type": "duckdb"},
        "POST /destinations/{endpoint_id:int}/test": {"name": "x"},
        "POST /connectors/{connector_id:int}/history/{number:int}/restore": {"confirm": "yes"},
        "POST /sources/{endpoint_id:int}/history/{number:int}/restore": {"confirm": "yes"},
        "POST /destinations/{endpoint_id:int}/history/{number:int}/restore": {"confirm": "yes"},
        "POST /admin/users": {"username": f"new{n}", "password": PASSWORD, "role": "viewer"},
        "POST /admin/users/{user_id:int}/role": {"role": "editor"},
        "POST /admin/users/{user_id:int}/password": {"password": "another-long-password"},
        "POST /admin/tokens": {"name": "mine"},
        "POST /admin/notifications/new": {"type": "webhook", "name": f"ch{n}", **HOOK},
        "POST /admin/notifications/{channel_id:int}": {"name": f"ch{n}", "url": HOOK["url"]},
    }
    params: dict[str, dict[str, str]] = {
        "GET /connectors/form/endpoint": {"kind": "source"},
        "POST /connectors/form/test": {"kind": "source"},
        "GET /sources/fields": {"type": "filesystem"},
        "GET /destinations/fields": {"type": "duckdb"},
    }
    out: dict[str, Any] = {"params": params.get(key, {})}
    if key in json_bodies:
        out["json"] = json_bodies[key]
    if key in forms:
        out["data"] = forms[key]
    return out


def _call(
    world: World, caller: str, method: str, path: str, o: Objects, who: dict[str, Any]
) -> Any:
    url = _fill(path, o)
    req = _request(method, path, o)
    api = path.startswith("/api/") or path in ("/metrics", "/docs", "/redoc")
    if api:
        token = who.get(caller)
        headers = {"Authorization": f"Bearer {token}"} if isinstance(token, str) else {}
        return world.client.request(method, url, headers=headers, follow_redirects=False, **req)
    ui: UIClient | None = who.get(f"ui:{caller}")
    if ui is None:  # anonymous, or a bearer token (which the UI does not take)
        fresh = UIClient(world.settings)
        token = who.get(caller)
        headers = {"Authorization": f"Bearer {token}"} if isinstance(token, str) else {}
        fresh.csrf = _csrf(fresh)
        data = {"csrf_token": fresh.csrf, **req.pop("data", {})} if method == "POST" else None
        return fresh.http.request(
            method, url, data=data, headers=headers, follow_redirects=False, **req
        )
    if method == "POST":
        return ui.post(url, req.get("data", {}), params=req["params"])
    return ui.http.get(url, params=req["params"], follow_redirects=False)


def _csrf(ui: UIClient) -> str:
    from tests.fixtures.ui import csrf_of

    return csrf_of(ui.http.get("/login").text)


def _callers(world: World) -> tuple[dict[str, Any], str]:
    """API tokens and logged-in UI clients for every caller; the owning editor's name."""
    who: dict[str, Any] = {"anonymous": None}
    for caller, role in (
        ("viewer", "viewer"),
        ("editor_owner", "editor"),
        ("editor_other", "editor"),
        ("admin", "admin"),
    ):
        name, _uid, token = world.user(role)
        who[caller] = token
        who[f"name:{caller}"] = name
        who[f"ui:{caller}"] = UIClient(world.settings).login(name)
    # A token revoked by its owner, and a user disabled after logging in.
    name, _uid, token = world.user("editor")
    owner = world.actor(name)
    with session_scope(world.settings.effective_database_url) as s:
        row = users_svc.list_tokens(session=s, actor=owner)[0]
        users_svc.revoke_token(row.id, session=s, actor=owner)
    who["revoked_token"] = token
    name, uid, token = world.user("editor")
    disabled_ui = UIClient(world.settings).login(name)
    with session_scope(world.settings.effective_database_url) as s:
        users_svc.set_active(uid, False, session=s, actor=SYSTEM)
    who["disabled_user"] = token
    who["ui:disabled_user"] = disabled_ui
    return who, who["name:editor_owner"]


def test_every_route_has_a_rule(world: World) -> None:
    served = {f"{m} {p}" for m, p in app_routes(world.client.app)}
    assert sorted(served - RULES.keys()) == [], "routes without a rule: add them to RULES"
    assert sorted(RULES.keys() - served) == [], "rules for no route"


@pytest.mark.parametrize("route", sorted(RULES), ids=str)
def test_route_answers_each_caller_as_its_rule_says(world: World, route: str) -> None:
    method, path = route.split(" ", 1)
    served = {f"{m} {p}" for m, p in app_routes(world.client.app)}
    if route not in served:
        pytest.skip(f"{route} is not served")
    rule = RULES[route]
    # Callers are made once per module, but a route that changes its caller's own login or
    # password gets callers of its own.
    if route in CHANGES_THE_CALLER:
        who, owner = _callers(world)
    else:
        if world.shared_callers is None:
            world.shared_callers = _callers(world)
        who, owner = world.shared_callers
    api = path.startswith("/api/") or path in ("/metrics", "/docs", "/redoc")
    wrong: list[str] = []
    for caller in CALLERS:
        objects = make_objects(world, owner)
        resp = _call(world, caller, method, path, objects, who)
        to_login = resp.status_code in (302, 303) and "/login" in resp.headers.get("location", "")
        if caller in ALLOWED[rule]:
            ok = resp.status_code not in (401, 403) and not (to_login and path != "/logout")
        elif caller in SIGNED_IN:
            ok = resp.status_code == 403
        else:
            ok = resp.status_code == 401 if api else to_login
        if not ok:
            wrong.append(f"{caller}: {resp.status_code} {resp.text[:160]!r}")
    assert wrong == [], f"{route} ({rule})"
