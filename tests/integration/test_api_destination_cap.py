"""A destination's cap on concurrent runs (max_concurrent_runs) through the REST API: set,
shown, audited, removed with null; refused, naming the field, out of range or on a source."""

from __future__ import annotations

from tests.fixtures.web import ApiUser
from tests.helpers import table_counts


def test_destination_cap_is_set_shown_audited_and_removed(admin: ApiUser) -> None:
    dst = admin.make_destination(max_concurrent_runs=2)
    url = f"/api/v1/destinations/{dst['id']}"
    assert dst["max_concurrent_runs"] == 2
    assert admin.get(url).json()["max_concurrent_runs"] == 2
    listed = {d["id"]: d for d in admin.get("/api/v1/destinations").json()}
    assert listed[dst["id"]]["max_concurrent_runs"] == 2

    resp = admin.patch(url, json={"max_concurrent_runs": 5})
    assert resp.status_code == 200, resp.text
    assert resp.json()["max_concurrent_runs"] == 5
    entry = admin.get("/api/v1/audit").json()[0]
    assert entry["action"] == "destination.update"
    assert (entry["before"]["max_concurrent_runs"], entry["after"]["max_concurrent_runs"]) == (2, 5)

    # Left out: unchanged; null: no cap any more.
    assert admin.patch(url, json={"name": "renamed"}).json()["max_concurrent_runs"] == 5
    assert (
        admin.patch(url, json={"max_concurrent_runs": None}).json()["max_concurrent_runs"] is None
    )
    assert admin.make_destination()["max_concurrent_runs"] is None  # no cap by default


def test_out_of_range_cap_is_422_naming_the_field(admin: ApiUser, database_url: str) -> None:
    dst = admin.make_destination(max_concurrent_runs=3)
    before = table_counts(database_url)
    for bad in (0, 101, "many"):
        resp = admin.post(
            "/api/v1/destinations",
            json={"name": "x", "type": "duckdb", "config": {}, "max_concurrent_runs": bad},
        )
        assert resp.status_code == 422, bad
        assert [e["field"] for e in resp.json()["errors"]] == ["max_concurrent_runs"]
        resp = admin.patch(f"/api/v1/destinations/{dst['id']}", json={"max_concurrent_runs": bad})
        assert resp.status_code == 422, bad
        assert [e["field"] for e in resp.json()["errors"]] == ["max_concurrent_runs"]
    assert table_counts(database_url) == before
    assert admin.get(f"/api/v1/destinations/{dst['id']}").json()["max_concurrent_runs"] == 3


def test_a_source_has_no_cap(admin: ApiUser, database_url: str) -> None:
    before = table_counts(database_url)
    body = {"name": "s", "type": "filesystem", "config": {"path": "/data/in"}}
    resp = admin.post("/api/v1/sources", json={**body, "max_concurrent_runs": 2})
    assert resp.status_code == 422
    (problem,) = resp.json()["errors"]
    assert problem["field"] == "max_concurrent_runs"
    assert "only a destination" in problem["reason"]
    assert table_counts(database_url) == before

    src = admin.make_source()
    resp = admin.patch(f"/api/v1/sources/{src['id']}", json={"max_concurrent_runs": 2})
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["field"] == "max_concurrent_runs"
    assert admin.get(f"/api/v1/sources/{src['id']}").json()["max_concurrent_runs"] is None
