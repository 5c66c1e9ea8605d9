"""Issue 21: every id and integer bounded as the database stores it, and an OpenAPI
document that says what the API answers. An id at or past 2^63 was a 500 (OverflowError
on SQLite, "bigint out of range" on PostgreSQL); now it is refused like any bad input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from conveyor.deployments_io import load_files
from conveyor.domain.models import DB_BIGINT_MAX
from conveyor.settings import Settings
from conveyor.web.app import create_app
from tests.fixtures.web import ApiUser
from tests.unit.test_deployments_files import GOOD

TOO_BIG = 2**63  # one past what a BIGINT (and SQLite's INTEGER) holds


def _app() -> Any:
    from cryptography.fernet import Fernet

    return create_app(Settings(secret_key=Fernet.generate_key().decode()))


def _int_params(route: APIRoute) -> list[tuple[str, Any]]:
    params = [*route.dependant.path_params, *route.dependant.query_params]
    return [(p.name, p.field_info) for p in params if p.name.endswith("_id")]


def _api_routes(routes: Any) -> Iterator[tuple[str, APIRoute]]:
    """(path, route) of every route, those of included routers too (FastAPI keeps an
    included router as one entry of ``app.routes``, its routes inside it)."""
    for route in routes:
        if hasattr(route, "effective_route_contexts"):
            for ctx in route.effective_route_contexts():
                if isinstance(ctx.original_route, APIRoute):
                    yield ctx.path, ctx.original_route
        elif isinstance(route, APIRoute):
            yield route.path, route


def test_every_id_parameter_of_every_route_is_bounded() -> None:
    """A new route (API or UI) with a plain ``int`` id fails here: use ``domain.models.Id``."""
    unbounded = []
    routes = list(_api_routes(_app().router.routes))
    assert len(routes) > 100  # the walk sees the included routers' routes
    for path, route in routes:
        for name, info in _int_params(route):
            if "int" not in str(info.annotation):
                continue  # a text id (the audit log's entity_id)
            # The bounds sit in the field's metadata, or in its Annotated type (inside an
            # Optional for a query parameter).
            marks = [*info.metadata]
            for part in (info.annotation, *get_args(info.annotation)):
                marks += get_args(part)[1:]
            bounds = {type(m).__name__: getattr(m, "le", None) for m in marks}
            if bounds.get("Le") != DB_BIGINT_MAX:
                unbounded.append(f"{sorted(route.methods)} {path} {name}")
    assert unbounded == []


def test_every_integer_in_the_openapi_document_has_an_upper_bound() -> None:
    """Path and query integers and every integer of a request body: none unbounded."""
    doc = _app().openapi()
    loose: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "integer" and "maximum" not in node:
                loose.append(where)
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    schemas = doc["components"]["schemas"]
    bodies: list[str] = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            walk(op.get("parameters", []), f"{method} {path}")
            bodies += _refs(op.get("requestBody", {}))
    seen: set[str] = set()
    while bodies:  # every schema a request body uses, nested ones too
        name = bodies.pop()
        if name not in seen:
            seen.add(name)
            walk(schemas[name], f"components.{name}")
            bodies += _refs(schemas[name])
    assert loose == []


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"].rsplit("/", 1)[1]] if "$ref" in node else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


PAST_THE_COLUMN: list[tuple[str, str, dict[str, Any] | None]] = [
    ("get", f"/api/v1/connectors/{TOO_BIG}", None),
    ("get", f"/api/v1/connectors/{TOO_BIG}/runs", None),
    ("get", f"/api/v1/connectors?source_id={TOO_BIG}", None),
    ("get", f"/api/v1/connectors/1/runs?before_id={TOO_BIG}", None),
    ("get", f"/api/v1/runs/{TOO_BIG}", None),
    ("get", f"/api/v1/sources/{TOO_BIG}", None),
    ("delete", f"/api/v1/tokens/{TOO_BIG}", None),
    ("patch", f"/api/v1/users/{TOO_BIG}", {"role": "viewer"}),
    ("get", f"/api/v1/audit?before_id={TOO_BIG}", None),
    ("post", "/api/v1/connectors", {"name": "c", "source_id": TOO_BIG, "destination_id": 1}),
    ("patch", "/api/v1/connectors/1", {"version": 2**31}),
]


def test_an_id_past_the_column_is_a_422_naming_it(admin: ApiUser) -> None:
    for method, url, body in PAST_THE_COLUMN:
        resp = getattr(admin, method)(url, **({"json": body} if body is not None else {}))
        assert resp.status_code == 422, (url, resp.text)
        assert resp.json()["errors"], resp.text


def test_the_largest_id_is_a_404_not_a_500(admin: ApiUser) -> None:
    for url in (f"/api/v1/connectors/{DB_BIGINT_MAX}", f"/api/v1/runs/{DB_BIGINT_MAX}"):
        assert admin.get(url).status_code == 404


def test_a_connector_patch_refuses_null_where_its_schema_does(admin: ApiUser) -> None:
    schema = _app().openapi()["components"]["schemas"]["ConnectorPatch"]["properties"]
    assert schema["name"] == {k: v for k, v in schema["name"].items() if k != "anyOf"}
    assert "null" not in str(schema["name"]) and "null" not in str(schema["timezone"])
    resp = admin.patch("/api/v1/connectors/1", json={"name": None})
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["field"] == "name"


def test_error_bodies_are_documented_as_the_api_sends_them(client: TestClient) -> None:
    doc = _app().openapi()
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    op = doc["paths"]["/api/v1/connectors/{connector_id}"]["patch"]
    for status in ("400", "401", "403", "404", "409", "422"):
        assert status in op["responses"], status
    ref = op["responses"]["422"]["content"]["application/json"]["schema"]["$ref"]
    assert ref.endswith("/ValidationErrorOut")
    resp = client.patch("/api/v1/connectors/1", json={})  # no credentials
    assert resp.status_code == 401 and set(resp.json()) <= {"detail", "hint", "errors"}


def test_a_405_allows_every_method_of_the_path(client: TestClient) -> None:
    resp = client.put("/api/v1/connectors/1")
    assert resp.status_code == 405
    assert resp.headers["allow"] == "DELETE, GET, PATCH"


def test_a_deployment_file_with_a_connector_id_past_bigint_is_refused_with_its_line() -> None:
    text = GOOD.replace("connector_id: 7", "connector_id: 99999999999999999999")
    loaded = load_files({"a.yaml": text}, base_dir=Path("/srv/deploy"), strict=False)
    problem = next(p for p in loaded.problems if "connector_id:" in p.reason)
    assert problem.loc == "a.yaml:8:17"
    assert problem.reason == (
        "parameters.connector_id: Input should be less than or equal to 9223372036854775807"
    )


def test_text_with_a_nul_character_is_a_422_not_a_500(admin: ApiUser) -> None:
    """PostgreSQL cannot store NUL in text: POST /tokens with one was a 500 (the fuzz)."""
    resp = admin.post("/api/v1/tokens", json={"name": "a\u0000b"})
    assert resp.status_code == 422, resp.text
    assert "NUL" in resp.json()["detail"]
    resp = admin.post(
        "/api/v1/sources", json={"name": "s", "type": "sql_database", "config": {"host": "h\u0000"}}
    )
    assert resp.status_code == 422 and "config.host" in resp.json()["detail"]
