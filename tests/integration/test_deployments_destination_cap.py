"""A destination's cap (max_concurrent_runs) in deployment files: applied, planned as a change,
exported and applied back unchanged; refused at file:line on a source or out of range."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.fixtures.web import ApiUser

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = (REPO / "deployments" / "example-connector-deployment.yaml").read_text()
BASE = str(REPO / "deployments")
URL = "/api/v1/deployments"
DESTINATION = """  destination:
    name: local-duckdb
    type: duckdb
"""


def with_cap(cap: int | None, text: str = EXAMPLE) -> dict[str, Any]:
    assert DESTINATION in text
    extra = f"    max_concurrent_runs: {cap}\n" if cap is not None else ""
    return {
        "files": {"example.yaml": text.replace(DESTINATION, DESTINATION + extra)},
        "base_dir": BASE,
    }


def destination(admin: ApiUser) -> dict[str, Any]:
    (found,) = [d for d in admin.get("/api/v1/destinations").json() if d["name"] == "local-duckdb"]
    return found  # type: ignore[no-any-return]


def changes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for e in plan["endpoints"] for c in e["changes"]]


def test_cap_goes_from_file_to_destination_and_back(admin: ApiUser) -> None:
    applied = admin.post(f"{URL}/apply", json=with_cap(2))
    assert applied.status_code == 200, applied.text
    assert destination(admin)["max_concurrent_runs"] == 2

    plan = admin.post(f"{URL}/plan", json=with_cap(3)).json()
    assert changes(plan) == [{"field": "max_concurrent_runs", "old": 2, "new": 3}]
    assert admin.post(f"{URL}/apply", json=with_cap(3)).status_code == 200
    assert destination(admin)["max_concurrent_runs"] == 3

    exported = admin.get(f"{URL}/export").json()["files"]
    (text,) = exported.values()
    assert "max_concurrent_runs: 3" in text
    assert admin.post(f"{URL}/plan", json={"files": exported}).json()["has_changes"] is False

    # The file is the truth: a file without the cap removes it.
    plan = admin.post(f"{URL}/plan", json=with_cap(None)).json()
    assert changes(plan) == [{"field": "max_concurrent_runs", "old": 3, "new": None}]
    assert admin.post(f"{URL}/apply", json=with_cap(None)).status_code == 200
    assert destination(admin)["max_concurrent_runs"] is None


def test_cap_on_a_source_or_out_of_range_is_refused_at_its_line(admin: ApiUser) -> None:
    bad = with_cap(0)
    resp = admin.post(f"{URL}/validate", json=bad).json()
    assert resp["valid"] is False
    assert [p["loc"].split(":")[0] for p in resp["problems"]] == ["example.yaml"]
    assert resp["problems"][0]["reason"].startswith("connector.destination.max_concurrent_runs:")

    source = EXAMPLE.replace(
        "    type: filesystem\n", "    type: filesystem\n    max_concurrent_runs: 2\n"
    )
    resp = admin.post(f"{URL}/validate", json={"files": {"s.yaml": source}, "base_dir": BASE})
    problems = resp.json()["problems"]
    assert resp.json()["valid"] is False
    (problem,) = problems
    assert problem["loc"].startswith("s.yaml:") and "only a destination" in problem["reason"]
    assert (
        admin.post(f"{URL}/apply", json={"files": {"s.yaml": source}, "base_dir": BASE}).status_code
        == 422
    )
    assert admin.get("/api/v1/destinations").json() == []
