"""The soak's end checks, each read from the systems themselves (SQL on Conveyor's database,
Prefect's REST API, the source and destination databases), never from Conveyor's own
view of them: deployments match connectors, no duplicate, no orphan, no run stuck open,
no change lost, and every destination equals its source."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

from tests.system.changes import Expected

FLOW_NAME = "run_connector_pipeline"
OWNER_TAG = "conveyor"
SCHEDULED_TAG = "scheduled"
OPEN = ("scheduled", "running", "retrying")

# A source row as text, the same expression on both sides.
ROW = "concat_ws('|', id::text, label, amount::text, happened_at::text)"


@dataclass
class Check:
    name: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        more = (
            f" ({len(self.problems)} problems; first: {self.problems[0]})" if self.problems else ""
        )
        return f"  [{mark}] {self.name}{more}"


def connectors(conveyor_url: str) -> dict[int, dict[str, Any]]:
    with psycopg.connect(conveyor_url) as conn:
        rows = conn.execute(
            "SELECT id, name, schedule, timezone, is_active, tags, deployment_name,"
            " sync_status, sync_error, source_id FROM connectors"
        ).fetchall()
    keys = ("id", "name", "schedule", "timezone", "is_active", "tags", "deployment_name",
            "sync_status", "sync_error", "source_id")  # fmt: skip
    out = {}
    for row in rows:
        item = dict(zip(keys, row, strict=True))
        tags = item["tags"]
        if isinstance(tags, str):
            import json

            tags = json.loads(tags)
        item["tags"] = tuple(sorted(tags or []))
        out[int(item["id"])] = item
    return out


def prefect_post(api: str, path: str, body: dict[str, Any]) -> Any:
    resp = httpx.post(f"{api}{path}", json=body, timeout=30)
    resp.raise_for_status()
    return resp.json()


def deployments(api: str) -> list[dict[str, Any]]:
    """Every deployment of Conveyor's flow or carrying its owner tag."""
    flows = prefect_post(api, "/flows/filter", {"flows": {"name": {"any_": [FLOW_NAME]}}})
    flow_ids = {f["id"] for f in flows}
    found: dict[str, dict[str, Any]] = {}
    for body in (
        {"deployments": {"tags": {"all_": [OWNER_TAG]}}},
        {"flows": {"name": {"any_": [FLOW_NAME]}}},
    ):
        offset = 0
        while True:
            page = prefect_post(
                api, "/deployments/filter", {**body, "limit": 200, "offset": offset}
            )
            for d in page:
                found[d["id"]] = d
            if len(page) < 200:
                break
            offset += 200
    for d in found.values():
        d["_conveyor_flow"] = d.get("flow_id") in flow_ids
    return list(found.values())


def check_deployments(conns: dict[int, dict[str, Any]], deps: list[dict[str, Any]]) -> list[Check]:
    match, dupes, orphans = (
        Check("every connector's deployment matches it"),
        Check("no duplicate deployment"),
        Check("no orphan deployment"),
    )
    by_connector: dict[int, list[dict[str, Any]]] = {}
    for d in deps:
        ids = [
            int(t.split("-", 1)[1])
            for t in d["tags"]
            if t.startswith("connector-") and t.split("-", 1)[1].isdigit()
        ]
        if len(ids) != 1:
            orphans.problems.append(f"deployment {d['name']} has connector tags {ids}")
            continue
        by_connector.setdefault(ids[0], []).append(d)
    for cid, found in by_connector.items():
        if cid not in conns:
            orphans.problems.append(f"deployment {found[0]['name']} for deleted connector {cid}")
        if len(found) > 1:
            dupes.problems.append(f"connector {cid} has {len(found)} deployments")
    for cid, c in conns.items():
        found = by_connector.get(cid, [])
        if not found:
            match.problems.append(f"connector {cid} has no deployment")
            continue
        d = found[0]
        want_tags = {
            OWNER_TAG,
            f"connector-{cid}",
            *c["tags"],
            *([SCHEDULED_TAG] if c["schedule"] else []),
        }
        schedules = [
            (s["schedule"].get("cron"), s["schedule"].get("timezone"), s["active"])
            for s in d.get("schedules") or []
        ]
        want_schedules = (
            [(c["schedule"], c["timezone"], bool(c["is_active"]))] if c["schedule"] else []
        )
        problems = []
        if d["name"] != (c["deployment_name"] or f"connector-{cid}"):
            problems.append(f"name {d['name']}")
        if not d["_conveyor_flow"]:
            problems.append("not Conveyor's flow")
        if set(d["tags"]) != want_tags:
            problems.append(f"tags {sorted(d['tags'])} != {sorted(want_tags)}")
        if schedules != want_schedules:
            problems.append(f"schedules {schedules} != {want_schedules}")
        if bool(d["paused"]) != (not c["is_active"]):
            problems.append(f"paused={d['paused']} but is_active={c['is_active']}")
        if (d.get("parameters") or {}).get("connector_id") != cid:
            problems.append(f"parameters {d.get('parameters')}")
        if c["sync_status"] != "synced":
            problems.append(f"sync_status {c['sync_status']} ({c['sync_error']})")
        if problems:
            match.problems.append(f"connector {cid}: " + "; ".join(problems))
    return [match, dupes, orphans]


def check_log(
    conns: dict[int, dict[str, Any]],
    expected: dict[int, Expected],
    pending: dict[str, Expected],
    mismatches: list[str],
) -> tuple[Check, dict[str, int]]:
    """Every change the log says was made is in the database; one without an answer may
    or may not be (counted: how many of those landed)."""
    check = Check("no change lost (database against the change log)")
    check.problems.extend(f"seen during the soak: {m}" for m in mismatches)
    landed = {"unknown creates landed": 0, "unknown creates not landed": 0}
    by_name = {c["name"]: c for c in conns.values()}
    for cid, exp in expected.items():
        c = conns.get(cid)
        if c is None:
            if True not in exp.deleted:
                check.problems.append(f"connector {cid} is gone; the log never deleted it")
            continue
        if False not in exp.deleted:
            check.problems.append(f"connector {cid} exists; the log deleted it")
            continue
        for key in ("schedule", "timezone", "is_active", "tags"):
            if c[key] not in getattr(exp, key):
                check.problems.append(
                    f"connector {cid}: {key} {c[key]!r}, log says {getattr(exp, key)}"
                )
    for name, exp in pending.items():
        c = by_name.get(name)
        landed["unknown creates landed" if c else "unknown creates not landed"] += 1
        if c is not None and (c["schedule"] not in exp.schedule or c["tags"] not in exp.tags):
            check.problems.append(f"connector {name}: created as {c}, log asked {exp}")
    known_names = {e.name for e in expected.values()} | set(pending)
    for c in conns.values():
        if c["name"] not in known_names:
            check.problems.append(f"connector {c['id']} ({c['name']}) was never created by the log")
    return check, landed


def stuck_runs(conveyor_url: str, api: str, bound: float) -> Check:
    """No run stuck: no flow run Running or Pending in Prefect for longer than ``bound``; no
    run record ``running`` without a heartbeat for that long; no record ``scheduled`` or
    ``retrying`` that long unless its flow run is still waiting in Prefect's queue
    (Scheduled or Late: the work pool is full, which is the soak's normal state)."""
    check = Check(f"no run stuck running/scheduled past {bound:.0f} s (after the watchdog)")
    cutoff = datetime.now(UTC) - timedelta(seconds=bound)
    with psycopg.connect(conveyor_url) as conn:
        rows = conn.execute(
            "SELECT id, connector_id, status, coalesce(heartbeat_at, started_at, created_at),"
            " next_attempt_at, prefect_flow_run_id FROM connector_runs WHERE status = ANY(%s)",
            (list(OPEN),),
        ).fetchall()
    old = []
    for run_id, cid, status, life, next_at, flow_run_id in rows:
        last = max(_aware(life), _aware(next_at)) if next_at else _aware(life)
        if last < cutoff:
            old.append((run_id, cid, status, last, flow_run_id))
    ids = [r[4] for r in old if r[4]]
    states = {}
    if ids:
        body = {"flow_runs": {"id": {"any_": ids}}, "limit": 200}
        states = {
            fr["id"]: fr["state"]["type"] for fr in prefect_post(api, "/flow_runs/filter", body)
        }
    for run_id, cid, status, last, flow_run_id in old:
        state = states.get(flow_run_id or "")
        if status != "running" and state == "SCHEDULED":
            continue  # queued behind the pool's limit
        check.problems.append(
            f"run {run_id} (connector {cid}) {status} since {last:%H:%M:%S}, flow run {state}"
        )
    body = {"flow_runs": {"state": {"type": {"any_": ["RUNNING", "PENDING", "CANCELLING"]}}}}
    for fr in prefect_post(api, "/flow_runs/filter", {**body, "limit": 200}):
        since = datetime.fromisoformat(fr["state"]["timestamp"])
        if since < cutoff:
            check.problems.append(
                f"flow run {fr['id']} {fr['state']['type']} in Prefect since {since:%H:%M:%S}"
                f" (deployment {fr.get('deployment_id')})"
            )
    return check


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def check_data(
    conveyor_url: str, src_url: str, dst_url: str, tables: dict[int, str]
) -> tuple[Check, dict[str, int]]:
    """Each connector with a succeeded run: its destination table equals its source table,
    and every succeeded run loaded as many rows as the source has."""
    check = Check("each destination equals its source (connectors with a succeeded run)")
    with psycopg.connect(src_url) as src:
        truth = {
            t: src.execute(
                f"SELECT count(*), md5(string_agg({ROW}, ',' ORDER BY id)) FROM public.{t}"
            ).fetchone()
            for t in set(tables.values())
        }
    with psycopg.connect(conveyor_url) as conn:
        rows = conn.execute(
            "SELECT c.id, c.source_id, count(r.id), array_agg(DISTINCT r.rows_loaded)"
            " FROM connectors c JOIN connector_runs r ON r.connector_id = c.id"
            " WHERE r.status = 'succeeded' GROUP BY c.id, c.source_id"
        ).fetchall()
    compared = 0
    with psycopg.connect(dst_url) as dst:
        for cid, source_id, _n, loaded in rows:
            table = tables[source_id]
            want = truth[table]
            if any(x is not None and x != want[0] for x in loaded):
                check.problems.append(
                    f"connector {cid}: succeeded runs loaded {loaded} rows, source has {want[0]}"
                )
            try:
                got = dst.execute(
                    f"SELECT count(*), md5(string_agg({ROW}, ',' ORDER BY id))"
                    f' FROM "connector_{cid}"."{table}"'
                ).fetchone()
            except psycopg.Error as exc:
                dst.rollback()
                check.problems.append(
                    f"connector {cid}: cannot read its table: {exc}".splitlines()[0]
                )
                continue
            compared += 1
            if got != want:
                check.problems.append(f"connector {cid}: destination {got} != source {want}")
    return check, {"connectors compared": compared}


def run_counts(conveyor_url: str, api: str) -> dict[str, Any]:
    """Conveyor's run records by status (connectors still there) and Prefect's flow runs by
    state (all of them, deleted connectors' too)."""
    with psycopg.connect(conveyor_url) as conn:
        conveyor = dict(
            conn.execute("SELECT status, count(*) FROM connector_runs GROUP BY status").fetchall()
        )
    prefect: dict[str, int] = {}
    for state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED", "RUNNING", "PENDING", "SCHEDULED"):
        prefect[state] = int(
            prefect_post(
                api, "/flow_runs/count", {"flow_runs": {"state": {"type": {"any_": [state]}}}}
            )
        )
    late = int(
        prefect_post(
            api, "/flow_runs/count", {"flow_runs": {"state": {"name": {"any_": ["Late"]}}}}
        )
    )
    started = int(
        prefect_post(api, "/flow_runs/count", {"flow_runs": {"start_time": {"is_null_": False}}})
    )
    return {
        "conveyor": conveyor,
        "prefect": prefect,
        "prefect_late": late,
        "prefect_started": started,
    }
