"""Connectors to Prefect deployments against the session's real Prefect server: each
change read back from Prefect, each drift case repaired, nothing changed when nothing
differs, and Prefect's own refusals reported on the connector."""

from __future__ import annotations

import time
from typing import Any

import pytest

from conveyor.domain.vocabulary import ENTRYPOINT
from conveyor.sync.gateway import READ_CALLS
from tests.fixtures.sync import (
    WORK_POOL,
    SyncEnv,
    deployments_tagged,
    prefect,
)
from tests.fixtures.ui import UIClient, cheap_password_hashing, make_user
from tests.fixtures.web import ApiUser

pytestmark = pytest.mark.prefect


def schedule_of(dep: Any) -> tuple[str, str, bool]:
    assert len(dep.schedules) == 1
    s = dep.schedules[0]
    return s.schedule.cron, s.schedule.timezone, s.active


def test_create_update_pause_resume_delete_round_trips(sync_env: SyncEnv) -> None:
    env = sync_env
    cid = env.create("0 */6 * * *", timezone="Europe/Paris", tags=["sales"])
    assert env.row(cid).sync_status == "pending"  # the change never waited on Prefect

    report = env.outbox_pass()
    assert report.created == 1
    row = env.row(cid)
    dep = env.deployment_of(cid)
    assert row.sync_status == "synced" and row.prefect_deployment_id == str(dep.id)
    assert row.synced_spec_hash and row.synced_at and row.sync_error is None
    assert dep.name == f"connector-{cid}"
    assert dep.parameters == {"connector_id": cid}
    assert set(dep.tags) == {"conveyor", f"connector-{cid}", "scheduled", "sales"}
    assert schedule_of(dep) == ("0 */6 * * *", "Europe/Paris", True)
    assert dep.paused is False
    assert dep.entrypoint == ENTRYPOINT
    assert dep.work_pool_name == WORK_POOL
    assert dep.global_concurrency_limit is not None and dep.global_concurrency_limit.limit == 1

    def one_patch() -> None:
        """The change went to Prefect as one PATCH of the deployment: no other write (a
        change of work pool or queue first reads the pool, to create it if missing)."""
        report, calls = env.outbox_pass_calls()
        writes = {k: n for k, n in calls.items() if k not in READ_CALLS}
        assert report.updated == 1 and writes == {"update": 1}, calls

    env.patch(cid, schedule="15 3 * * 1-5")
    one_patch()
    dep = env.deployment_of(cid)
    assert schedule_of(dep) == ("15 3 * * 1-5", "Europe/Paris", True)
    assert str(dep.id) == env.row(cid).prefect_deployment_id  # updated in place

    env.patch(cid, timezone="America/New_York")
    one_patch()
    assert schedule_of(env.deployment_of(cid))[1] == "America/New_York"

    env.patch(cid, is_active=False)
    one_patch()
    dep = env.deployment_of(cid)
    assert dep.paused is True and schedule_of(dep)[2] is False

    env.patch(cid, is_active=True)
    one_patch()
    dep = env.deployment_of(cid)
    assert dep.paused is False and schedule_of(dep)[2] is True

    env.patch(cid, tags=["sales", "eu"], work_queue_name="bulk")
    one_patch()
    dep = env.deployment_of(cid)
    assert set(dep.tags) == {"conveyor", f"connector-{cid}", "scheduled", "sales", "eu"}
    assert (dep.work_pool_name, dep.work_queue_name) == (WORK_POOL, "bulk")

    env.patch(cid, schedule=None)
    one_patch()
    dep = env.deployment_of(cid)
    assert dep.schedules == [] and "scheduled" not in dep.tags
    # Each PATCH left the deployment exactly as a fresh upsert of the spec would have.
    report, _calls = env.full_pass()
    assert report.changed == 0 and report.unchanged >= 1, report.repairs

    env.delete(cid)
    report = env.outbox_pass()
    assert report.deleted == 1
    assert deployments_tagged("conveyor", f"connector-{cid}") == []
    assert env.queued() == 0


def test_a_change_to_a_deployment_gone_from_prefect_creates_it_again(sync_env: SyncEnv) -> None:
    env = sync_env
    cid = env.create("0 */6 * * *")
    env.outbox_pass()
    gone = env.row(cid).prefect_deployment_id
    prefect(lambda c: c.delete_deployment(gone))
    env.patch(cid, schedule="5 4 * * *")
    report, calls = env.outbox_pass_calls()
    assert report.failed == 0 and calls["update"] == 1 and calls["upsert"] == 1, calls
    dep = env.deployment_of(cid)
    assert schedule_of(dep) == ("5 4 * * *", "UTC", True)
    assert env.row(cid).prefect_deployment_id == str(dep.id) != gone


def test_schedules_replaced_in_prefect_by_named_ones_are_set_back_by_an_upsert(
    sync_env: SyncEnv,
) -> None:
    """Prefect refuses a PATCH of schedules without slugs once every schedule there has
    one (a deployment someone rebuilt from a prefect.yaml, say): the gateway upserts."""
    from prefect.client.schemas.actions import DeploymentScheduleUpdate, DeploymentUpdate
    from prefect.client.schemas.schedules import CronSchedule

    env = sync_env
    cid = env.create("0 */6 * * *")
    env.outbox_pass()
    dep_id = env.row(cid).prefect_deployment_id
    named = DeploymentScheduleUpdate(schedule=CronSchedule(cron="1 1 * * *"), slug="nightly")
    prefect(lambda c: c.update_deployment(dep_id, DeploymentUpdate(schedules=[named])))
    assert schedule_of(env.deployment_of(cid))[0] == "1 1 * * *"
    env.patch(cid, schedule="7 7 * * *")
    report, calls = env.outbox_pass_calls()
    assert report.failed == 0 and calls["update"] == 1 and calls["upsert"] == 1, calls
    dep = env.deployment_of(cid)
    assert schedule_of(dep) == ("7 7 * * *", "UTC", True) and str(dep.id) == dep_id


def test_deleting_a_connector_whose_deployment_is_gone_succeeds(sync_env: SyncEnv) -> None:
    env = sync_env
    cid = env.create()
    env.outbox_pass()
    dep_id = env.row(cid).prefect_deployment_id
    prefect(lambda c: c.delete_deployment(dep_id))
    env.delete(cid)
    report = env.outbox_pass()
    assert report.failed == 0 and env.queued() == 0


def test_a_no_op_pass_makes_no_write_call(sync_env: SyncEnv) -> None:
    env = sync_env
    for _ in range(5):
        env.create()
    env.outbox_pass()
    report, calls = env.full_pass()
    assert report.unchanged == 5 and report.changed == 0
    assert set(calls) <= {"list_deployments", "read_work_pool", "read_flow"}, calls
    assert calls["list_deployments"] == 1


def test_drift_in_prefect_is_repaired_by_a_full_pass(
    sync_env: SyncEnv, admin: ApiUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.schemas.actions import DeploymentScheduleUpdate, DeploymentUpdate
    from prefect.client.schemas.schedules import CronSchedule

    env = sync_env
    deleted, rescheduled, reparam, paused, untouched = (env.create() for _ in range(5))
    env.outbox_pass()
    ids = {c: env.row(c).prefect_deployment_id for c in (deleted, rescheduled, reparam, paused)}

    # Someone works in Prefect's UI:
    prefect(lambda c: c.delete_deployment(ids[deleted]))
    prefect(
        lambda c: c.update_deployment(
            ids[rescheduled],
            DeploymentUpdate(
                schedules=[DeploymentScheduleUpdate(schedule=CronSchedule(cron="* * * * *"))]
            ),
        )
    )
    prefect(
        lambda c: c.update_deployment(
            ids[reparam], DeploymentUpdate(parameters={"connector_id": 999})
        )
    )
    prefect(lambda c: c.pause_deployment(ids[paused]))
    # ... creates a deployment tagged as Conveyor's that no connector owns, and one of
    # their own, which Conveyor must never touch.
    flow_id = prefect(lambda c: c.create_flow_from_name("someone-elses-flow"))
    orphan = prefect(
        lambda c: c.create_deployment(
            flow_id=flow_id, name="left-behind", tags=["conveyor", "connector-424242"]
        )
    )
    theirs = prefect(
        lambda c: c.create_deployment(
            flow_id=flow_id, name="theirs", tags=["team-x"], parameters={"a": 1}
        )
    )

    report, _calls = env.full_pass()
    reasons = {r["connector_id"]: (r["action"], r["reason"]) for r in report.repairs}
    assert reasons[deleted] == ("created", "deleted in Prefect")
    assert reasons[rescheduled][0] == "updated" and "schedules" in reasons[rescheduled][1]
    assert reasons[reparam][0] == "updated" and "parameters" in reasons[reparam][1]
    assert reasons[paused] == ("resumed", "paused in Prefect")
    assert reasons[424242] == ("deleted", "Conveyor-tagged deployment with no connector")
    assert untouched not in reasons

    for cid in (deleted, rescheduled, reparam, paused, untouched):
        dep = env.deployment_of(cid)
        row = env.row(cid)
        assert row.sync_status == "synced" and row.prefect_deployment_id == str(dep.id)
        assert dep.parameters == {"connector_id": cid}
        assert schedule_of(dep) == ("0 */6 * * *", "UTC", True) and dep.paused is False
    assert env.row(rescheduled).prefect_deployment_id == ids[rescheduled]  # same deployment
    assert prefect(lambda c: c.read_deployments()) is not None
    from prefect.exceptions import ObjectNotFound

    with pytest.raises(ObjectNotFound):
        prefect(lambda c: c.read_deployment(orphan))
    kept = prefect(lambda c: c.read_deployment(theirs))
    assert kept.parameters == {"a": 1} and kept.tags == ["team-x"]
    prefect(lambda c: c.delete_deployment(theirs))

    # Each repair is in the audit log, by the reconciler: what Prefect had, what came back.
    resp = admin.get("/api/v1/audit", params={"action": "connector.drift_repaired"})
    assert resp.status_code == 200, resp.text
    audited = {e["entity_id"]: e for e in resp.json()}
    assert set(audited) == {str(c) for c in (deleted, rescheduled, reparam, paused, 424242)}
    assert {e["actor"] for e in audited.values()} == {"reconciler"}
    assert audited[str(deleted)]["before"] == {"deployment": "missing"}
    assert audited[str(rescheduled)]["before"] == {"schedule": ["* * * * * UTC"]}
    assert audited[str(rescheduled)]["after"] == {"schedule": ["0 */6 * * * UTC"]}
    assert audited[str(reparam)]["before"] == {"parameters": {"connector_id": 999}}
    assert audited[str(reparam)]["after"] == {"parameters": {"connector_id": reparam}}
    assert (audited[str(paused)]["before"], audited[str(paused)]["after"]) == (
        {"paused": True},
        {"paused": False},
    )
    assert audited["424242"]["after"] == {"deployment": "removed"}
    # ... and on the connector's page.
    cheap_password_hashing(monkeypatch)
    make_user(env.settings, "ursula", "viewer")
    page = UIClient(env.settings).login("ursula").page(f"/connectors/{paused}")
    repairs = page.find("ul", id="drift-repairs")
    assert repairs is not None
    assert "Prefect had paused: yes → restored paused: no" in repairs.text

    # Repaired means converged: the next pass changes nothing, and audits nothing.
    report, calls = env.full_pass()
    assert report.changed == 0 and set(calls) <= {"list_deployments", "read_work_pool", "read_flow"}
    resp = admin.get("/api/v1/audit", params={"action": "connector.drift_repaired"})
    assert len(resp.json()) == len(audited)


def test_a_change_made_in_the_database_reaches_prefect_within_one_full_pass(
    sync_env: SyncEnv,
) -> None:
    env = sync_env
    cid = env.create("0 */6 * * *")
    env.outbox_pass()
    env.sql("UPDATE connectors SET schedule = '45 1 * * *' WHERE id = :id", id=cid)
    assert env.queued() == 0  # no API call, no outbox entry
    report, _ = env.full_pass()
    assert [r["reason"] for r in report.repairs] == ["changed in the database"]
    assert schedule_of(env.deployment_of(cid))[0] == "45 1 * * *"


def test_a_schedule_prefect_rejects_marks_that_connector_only(sync_env: SyncEnv) -> None:
    env = sync_env
    good = env.create("0 * * * *")
    bad = env.create("0 * * * *")
    env.outbox_pass()
    # The API validates cron; only a write behind its back can store one Prefect refuses.
    env.sql("UPDATE connectors SET schedule = '61 * * * *' WHERE id = :id", id=bad)
    env.patch(good, schedule="5 * * * *")
    report, _ = env.full_pass()
    row = env.row(bad)
    assert row.sync_status == "error"
    assert "Invalid cron string" in (row.sync_error or ""), row.sync_error
    assert env.row(good).sync_status == "synced"
    assert schedule_of(env.deployment_of(good))[0] == "5 * * * *"
    # Not retried unchanged: the next pass sends nothing.
    report, calls = env.full_pass()
    assert "upsert" not in calls and report.failed == 0
    # Fixed (here through the service), it syncs.
    env.patch(bad, schedule="0 2 * * *")
    env.outbox_pass()
    assert env.row(bad).sync_status == "synced"


def test_work_pool_is_created_as_a_process_pool_with_the_configured_limit_only(
    sync_env: SyncEnv,
) -> None:
    """A missing pool is created with the configured type and limit: none configured here,
    so none is invented (the reconciler once gave every pool a hidden limit of 4)."""
    env = sync_env
    assert env.settings.work_pool_concurrency is None
    pool_name = f"sync-pool-{int(time.time() * 1000)}"
    cid = env.create(work_pool_name=pool_name)
    env.outbox_pass()
    pool = prefect(lambda c: c.read_work_pool(pool_name))
    assert pool.type == "process" and pool.concurrency_limit is None
    assert env.deployment_of(cid).work_pool_name == pool_name
    prefect(lambda c: c.delete_work_pool(pool_name))


def test_job_variables_edited_in_prefect_are_restored_and_never_reset(
    sync_env: SyncEnv, admin: ApiUser
) -> None:
    """A connector's job variables (env: the session's pool is a process pool) reach its
    deployment; edited through Prefect's API they come back with a full pass, audited; any
    later change keeps them; a connector without them gets none."""
    from prefect.client.schemas.actions import DeploymentUpdate

    env = sync_env
    sized = {"env": {"REGION": "eu-west"}}
    cid = env.create(job_variables=sized)
    plain = env.create()
    env.outbox_pass()
    dep_id = env.row(cid).prefect_deployment_id
    assert env.deployment_of(cid).job_variables == sized
    assert env.deployment_of(plain).job_variables == {}

    edited = {"env": {"REGION": "us-east"}, "stream_output": False}
    prefect(lambda c: c.update_deployment(dep_id, DeploymentUpdate(job_variables=edited)))
    assert env.deployment_of(cid).job_variables == edited
    report, _calls = env.full_pass()
    reasons = {r["connector_id"]: (r["action"], r["reason"]) for r in report.repairs}
    assert reasons == {cid: ("updated", "edited in Prefect (job_variables)")}
    assert env.deployment_of(cid).job_variables == sized
    assert str(env.deployment_of(cid).id) == dep_id  # the same deployment, patched
    resp = admin.get("/api/v1/audit", params={"action": "connector.drift_repaired"})
    (entry,) = [e for e in resp.json() if e["entity_id"] == str(cid)]
    assert (entry["before"], entry["after"]) == (
        {"job_variables": edited},
        {"job_variables": sized},
    )

    # Never reset: a change of something else, and a full pass, keep them.
    env.patch(cid, schedule="15 3 * * 1-5")
    env.outbox_pass()
    env.full_pass()
    assert env.deployment_of(cid).job_variables == sized
    assert schedule_of(env.deployment_of(cid))[0] == "15 3 * * 1-5"
