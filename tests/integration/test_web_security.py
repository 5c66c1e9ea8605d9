"""Web hardening: security headers on every route's answers, no inline script in any page,
and CSRF for the JSON API when the UI's session cookie authenticates it.

The header test walks ``app.routes``: a route added later is called too, and a kind of
route the walk does not know how to call fails the test instead of being skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from conveyor.db.session import session_scope
from conveyor.services import users as users_service
from conveyor.settings import Settings
from conveyor.web.app import create_app
from tests.fixtures.ui import Node, Seed, UIClient, cheap_password_hashing, make_user, parse_html
from tests.helpers import table_counts

UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


@dataclass
class World:
    settings: Settings
    app: FastAPI
    ui: UIClient  # alice (admin), logged in with the session cookie
    token: str  # alice's API token
    ids: dict[str, int]


@pytest.fixture
def world(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    cheap_password_hashing(monkeypatch)
    make_user(settings, "alice", "admin")
    make_user(settings, "victor", "viewer")
    seed = Seed(settings)
    src = seed.endpoint("source")
    dst = seed.endpoint("destination")
    cid = seed.connector(source_id=src, destination_id=dst)
    rid = seed.run(cid, rows_loaded=10)
    with session_scope(settings.effective_database_url) as session:
        _row, token = users_service.create_token(
            "alice", "walk", session=session, actor=seed.actor("alice")
        )
    ui = UIClient(settings).login("alice")
    ids = {"connector_id": cid, "source_id": src, "destination_id": dst, "run_id": rid}
    yield World(settings, ui.http.app, ui, token, ids)  # type: ignore[arg-type]


# --- what every response must carry -----------------------------------------------------


def assert_security_headers(resp: Any, what: str, *, hsts: bool = False) -> None:
    h = resp.headers
    csp = h.get("content-security-policy", "")
    directives = {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}
    assert directives.get("default-src") == ["'self'"], (what, csp)
    assert directives.get("script-src") == ["'self'"], (what, csp)  # no inline, no eval
    assert "'unsafe-eval'" not in csp, (what, csp)
    assert directives.get("object-src") == ["'none'"], (what, csp)
    assert directives.get("base-uri") == ["'self'"], (what, csp)
    assert directives.get("frame-ancestors") == ["'none'"], (what, csp)
    assert directives.get("form-action") == ["'self'"], (what, csp)
    assert h.get("x-content-type-options") == "nosniff", what
    assert h.get("x-frame-options") == "DENY", what
    assert h.get("referrer-policy") == "same-origin", what
    assert "camera=()" in h.get("permissions-policy", ""), what
    assert h.get("cross-origin-opener-policy") == "same-origin", what
    if hsts:
        assert h.get("strict-transport-security", "").startswith("max-age="), what
    else:
        assert "strict-transport-security" not in h, what


# --- what no page may contain -------------------------------------------------------------

_EVAL_TRIGGER = re.compile(r"\[[^\]]*\]")  # an hx-trigger filter is evaluated JavaScript


def inline_code(doc: Node) -> list[str]:
    """Everything in a page the CSP would block or that needs eval."""
    found = []
    for el in doc.iter():
        if el.tag == "script" and ("src" not in el.attrs or el.text):
            found.append(f"inline <script>: {el.text[:60]}")
        if el.tag == "style":
            found.append("inline <style>")
        for name, value in el.attrs.items():
            value = value or ""
            if name.startswith("on") or name.startswith(("hx-on", "data-hx-on")):
                found.append(f"<{el.tag} {name}>")
            elif name == "style":
                found.append(f"<{el.tag} style>")
            elif name in ("hx-vars", "data-hx-vars"):
                found.append(f"<{el.tag} {name}> (always evaluated)")
            elif name in ("hx-vals", "hx-headers") and value.strip().startswith(
                ("js:", "javascript:")
            ):
                found.append(f"<{el.tag} {name}={value[:30]}>")
            elif name == "hx-trigger" and _EVAL_TRIGGER.search(value):
                found.append(f"<{el.tag} hx-trigger={value}> (filter needs eval)")
            elif name in ("href", "action", "formaction") and value.strip().lower().startswith(
                "javascript:"
            ):
                found.append(f"<{el.tag} {name}=javascript:>")
    return found


# --- the route walk ---------------------------------------------------------------------------


def _fill(path: str, ids: dict[str, int]) -> str:
    def value(m: re.Match[str]) -> str:
        name = m[1].split(":")[0]
        return str(ids.get(name, 1)) if name.endswith("id") else "x"

    return re.sub(r"{([^}]+)}", value, path)


def _static_files(app: FastAPI) -> list[str]:
    for route in app.routes:
        if isinstance(route, Mount) and isinstance(route.app, StaticFiles):
            root = Path(str(route.app.directory))
            return [f"{route.path}/{p.relative_to(root)}" for p in root.rglob("*") if p.is_file()]
    raise AssertionError("no static files mount")


def test_every_route_answers_with_the_security_headers(world: World) -> None:
    anonymous = TestClient(world.app, raise_server_exceptions=False)
    admin = world.ui.http
    bearer = {"Authorization": f"Bearer {world.token}"}
    called: list[str] = []
    statuses: set[int] = set()
    pages = 0
    # Routes of included routers are flattened (FastAPI includes them lazily).
    contexts = list(iter_route_contexts(world.app.routes))
    for ctx in contexts:
        route = ctx.original_route
        if isinstance(route, Mount) and isinstance(route.app, StaticFiles):
            files = _static_files(world.app)
            assert any(f.endswith("/app.js") for f in files)
            for url in [*files, "/static/no-such-file.js"]:
                resp = anonymous.get(url)
                statuses.add(resp.status_code)
                assert_security_headers(resp, url)
            called.append(route.path)
            continue
        if not isinstance(route, Route):  # APIRoute is a Route; anything else is new here
            raise AssertionError(f"the walk does not know how to call {route!r}")
        full_path = str(ctx.path)
        path = _fill(full_path, world.ids)
        for method in sorted(ctx.methods or {"GET"}):
            what = f"{method} {full_path}"
            # Anonymous: 401 / login redirect / 403 (UI CSRF) / 200 for public pages.
            resp = anonymous.request(method, path, follow_redirects=False)
            statuses.add(resp.status_code)
            assert_security_headers(resp, f"anonymous {what} → {resp.status_code}")
            if method in UNSAFE and full_path.startswith("/api/"):
                # As admin, on ids that do not exist and with no body: 404/422, so the walk
                # changes nothing and every route is still reached.
                missing = _fill(full_path, {k: 999_999 for k in world.ids})
                resp = anonymous.request(method, missing, headers=bearer)
            elif method in UNSAFE:
                # The logged-in admin without the form's token: the UI's 403 page.
                resp = admin.request(method, path, follow_redirects=False)
            else:
                resp = admin.request(method, path, follow_redirects=False)
            statuses.add(resp.status_code)
            assert_security_headers(resp, f"admin {what} → {resp.status_code}")
            if method == "GET" and resp.headers.get("content-type", "").startswith("text/html"):
                assert inline_code(parse_html(resp.text)) == [], what
                pages += 1
            if isinstance(route, APIRoute) and method == "GET":
                # A malformed id: 422 (JSON) or an error page.
                bad = re.sub(r"{[^}]*_id(:int)?}", "not-a-number", full_path)
                if bad != full_path:
                    resp = admin.get(bad, follow_redirects=False)
                    statuses.add(resp.status_code)
                    assert_security_headers(resp, f"admin GET {bad} → {resp.status_code}")
        called.append(full_path)
    assert {"/docs", "/redoc", "/api/v1/openapi.json", "/metrics", "/connectors"} <= set(called)
    assert "/api/v1/connectors/{connector_id}" in called
    assert len(called) == len(contexts)
    # The walk met the answers the brief names, not only 200s.
    assert {200, 303, 401, 403, 404, 422} <= statuses, statuses
    assert pages >= 10


def test_errors_outside_the_routes_carry_the_headers_too(settings: Settings) -> None:
    app = create_app(settings)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("unhandled")

    http = TestClient(app, raise_server_exceptions=False)
    for method, url, kw, status in [
        ("GET", "/no/such/page", {}, 404),
        ("DELETE", "/api/v1/health", {}, 405),
        ("POST", "/api/v1/connectors", {"content": b"x" * (1024 * 1024 + 1)}, 413),
        ("GET", "/boom", {}, 500),  # Starlette's error middleware answers this one
    ]:
        resp = http.request(method, url, **kw)
        assert resp.status_code == status, (url, resp.status_code)
        assert_security_headers(resp, f"{method} {url} → {status}")


def test_hsts_only_with_secure_cookies(settings: Settings) -> None:
    secure = settings.model_copy(update={"session_secure_cookie": True})
    http = TestClient(create_app(secure), base_url="https://testserver")
    for url in ("/login", "/api/v1/health/live", "/static/app.css", "/nope"):
        assert_security_headers(http.get(url), url, hsts=True)
    plain = TestClient(create_app(settings))
    assert_security_headers(plain.get("/login"), "/login", hsts=False)


def test_the_api_reference_pages_load_nothing_from_elsewhere(world: World) -> None:
    http = world.ui.http
    for url in ("/docs", "/redoc"):
        doc = parse_html(http.get(url).text)
        refs = [el.attrs.get("src") or el.attrs.get("href") or "" for el in doc.iter()]
        assert all(r.startswith("/static/") for r in refs if r), (url, refs)
        assert inline_code(doc) == [], url
        assert doc.find("div", **{"data-openapi-url": "/api/v1/openapi.json"}) is not None
    # The vendored bundles are served (with a JavaScript type: nosniff is strict about it).
    for url in (
        "/static/vendor/swagger-ui/swagger-ui-bundle.js",
        "/static/vendor/redoc/redoc.standalone.js",
    ):
        resp = http.get(url)
        assert resp.status_code == 200 and "javascript" in resp.headers["content-type"], url
    spec = http.get("/api/v1/openapi.json").json()
    assert http.get("/openapi.json").json() == spec  # at the root too, where tools look
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    ops = {(p, m): op for p, item in spec["paths"].items() for m, op in item.items()}
    assert ops[("/api/v1/me", "get")]["security"] == [{"bearerAuth": []}]
    assert ops[("/api/v1/connectors", "post")]["security"] == [{"bearerAuth": []}]
    assert "security" not in ops[("/api/v1/health", "get")]  # public


# --- CSRF on the JSON API ---------------------------------------------------------------------


def _connector(world: World) -> dict[str, Any]:
    resp = world.ui.http.get(f"/api/v1/connectors/{world.ids['connector_id']}")
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


def test_cookie_authenticated_api_writes_need_the_csrf_header(
    world: World, database_url: str
) -> None:
    http = world.ui.http
    cid = world.ids["connector_id"]
    good = {"X-CSRF-Token": world.ui.csrf}
    new_source = {"name": "csrf-src", "type": "duckdb", "config": {}}
    before = table_counts(database_url)
    schedule = _connector(world)["schedule"]
    attempts: list[tuple[str, str, dict[str, Any] | None]] = [
        ("POST", "/api/v1/destinations", new_source),
        ("PATCH", f"/api/v1/connectors/{cid}", {"schedule": "5 4 * * *"}),
        ("POST", f"/api/v1/connectors/{cid}/pause", None),
        ("POST", "/api/v1/tokens", {"name": "csrf"}),
        ("DELETE", f"/api/v1/connectors/{cid}", None),
    ]
    for headers in ({}, {"X-CSRF-Token": "forged"}, {"X-CSRF-Token": ""}):
        for method, url, body in attempts:
            resp = http.request(method, url, json=body, headers=headers)
            assert resp.status_code == 403, (method, url, headers, resp.text)
            assert "X-CSRF-Token" in resp.json()["detail"], resp.text
    assert table_counts(database_url) == before
    after = _connector(world)
    assert after["schedule"] == schedule and after["is_active"] is True
    # Reading needs no token; writing with the page's token works.
    assert http.get("/api/v1/me").json()["username"] == "alice"
    assert http.post("/api/v1/destinations", json=new_source, headers=good).status_code == 201
    resp = http.patch(f"/api/v1/connectors/{cid}", json={"schedule": "5 4 * * *"}, headers=good)
    assert resp.status_code == 200, resp.text
    assert http.post(f"/api/v1/connectors/{cid}/pause", headers=good).json()["is_active"] is False
    assert http.delete(f"/api/v1/connectors/{cid}", headers=good).status_code == 204
    assert http.get(f"/api/v1/connectors/{cid}").status_code == 404


def test_bearer_requests_need_no_csrf_header(world: World) -> None:
    # A fresh client: no session cookie at all, only the token.
    http = TestClient(world.app)
    h = {"Authorization": f"Bearer {world.token}"}
    cid = world.ids["connector_id"]
    resp = http.post(
        "/api/v1/destinations", json={"name": "b", "type": "duckdb", "config": {}}, headers=h
    )
    assert resp.status_code == 201, resp.text
    assert (
        http.patch(
            f"/api/v1/connectors/{cid}", json={"schedule": "1 2 * * *"}, headers=h
        ).status_code
        == 200
    )
    assert http.delete(f"/api/v1/connectors/{cid}", headers=h).status_code == 204
    # With the login cookie present as well, the bearer token decides and needs no CSRF header.
    resp = world.ui.http.post("/api/v1/tokens", json={"name": "both"}, headers=h)
    assert resp.status_code == 201, resp.text


def test_a_cross_site_form_post_to_the_api_is_refused(world: World, database_url: str) -> None:
    """What a page on another site can make a browser send: a form POST (urlencoded or
    text/plain, no custom header) that carries the login cookie."""
    http = world.ui.http
    cid = world.ids["connector_id"]
    before = table_counts(database_url)
    evil = {"Origin": "https://evil.example", "Referer": "https://evil.example/page"}
    for url, kw in [
        (f"/api/v1/connectors/{cid}/pause", {"data": {"csrf_token": "guess"}}),
        (f"/api/v1/connectors/{cid}/run", {}),
        ("/api/v1/tokens", {"data": {"name": "stolen"}}),
        (
            "/api/v1/tokens",
            {"content": b'{"name": "stolen"}', "headers": {"Content-Type": "text/plain"}},
        ),
        (
            "/api/v1/destinations",
            {
                "content": b'{"name":"x","type":"duckdb","config":{}}',
                "headers": {"Content-Type": "text/plain"},
            },
        ),
    ]:
        headers = {**evil, **kw.pop("headers", {})}
        resp = http.post(url, headers=headers, **kw)
        assert resp.status_code in (403, 422), (url, resp.status_code, resp.text)
        if resp.status_code == 403:
            assert "X-CSRF-Token" in resp.json()["detail"]
    assert table_counts(database_url) == before
    assert _connector(world)["is_active"] is True


def test_the_ui_pages_still_send_their_token(world: World) -> None:
    """htmx sends X-CSRF-Token from <body hx-headers> (parsed as JSON, not evaluated), so
    the page's own token is the one the API accepts."""
    doc = parse_html(world.ui.http.get("/connectors").text)
    body = doc.find("body")
    assert body is not None
    assert body.attrs["hx-headers"] == f'{{"X-CSRF-Token": "{world.ui.csrf}"}}'
    meta = doc.find("meta", name="htmx-config")
    assert meta is not None
    for setting in ('"allowEval": false', '"includeIndicatorStyles": false'):
        assert setting in meta.attrs["content"]


def test_the_page_showing_a_new_token_has_no_inline_code(world: World) -> None:
    resp = world.ui.post("/admin/tokens", {"name": "shown-once"})
    assert resp.status_code == 201, resp.text[:500]
    doc = parse_html(resp.text)
    shown = doc.find("input", id="new-token")
    assert shown is not None and "data-select-on-focus" in shown.attrs
    assert inline_code(doc) == []
    assert_security_headers(resp, "POST /admin/tokens")
