"""Events from runs and from the freshness loop, on SQLite and PostgreSQL, without Prefect:
the closers are called as the flow and the watchdog call them (a retry's flow run is
"created" by a stand-in for the Prefect call; tests/integration/test_retries_prefect.py
checks the same events through a real Prefect server and worker).

- a failing connector with a retry policy: nothing while it retries, one ``run.failed``
  per failed run once no retry follows; a second close of the same run adds nothing;
- recovery: one ``run.recovered`` on the first success after failed runs;
- auto-pause after N failed runs in a row: paused by the system with the reason, audited,
  ``connector.auto_paused``; resuming starts the count again;
- freshness SLA: one ``connector.stale`` per breach, cleared by a success, fired again by
  the next breach;
- a connector not synced to Prefect: one ``sync.error`` per spell.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from conveyor.db.base import utcnow
from conveyor.db.models import AuditEntry, Connector, ConnectorRun, NotificationEvent, OutboxEntry
from conveyor.db.session import session_scope
from conveyor.domain.models import ConnectorPatch
from conveyor.domain.vocabulary import FailureClass, run_record_tag
from conveyor.secrets import SecretBox
from conveyor.services import connectors, freshness, retries, runs
from conveyor.services.authz import SYSTEM
from conveyor.settings import Settings
from conveyor.sync import store
from conveyor.sync.spec import build
from tests.fixtures.pipelines import ConnectorFactory

DEPLOYMENT_ID = "00000000-0000-4000-8000-0000000000e1"
_flow_runs = itertools.count(1)


@dataclass(frozen=True)
class Why:
    """A failed attempt as the flow explains it (``pipelines.explain.Explanation``)."""

    failure_class: FailureClass
    message: str = "the source did not answer"
    detail: str = "connection refused"
    side: str | None = "source"


@pytest.fixture
def s(settings: Settings) -> Settings:
    return settings.model_copy(update={"prefect_api_url": "http://127.0.0.1:9/api"})


@pytest.fixture
def cid(s: Settings, tmp_path: Path) -> int:
    """A connector the reconciler has synced (its deployment id set by hand)."""
    src = tmp_path / "in"
    src.mkdir()
    connector_id = ConnectorFactory(s)(
        ("filesystem", {"path": str(src), "file_pattern": "*.csv"}), ("duckdb", {})
    )
    with session_scope(s.effective_database_url) as session:
        c = session.get(Connector, connector_id)
        assert c is not None
        c.prefect_deployment_id, c.sync_status = DEPLOYMENT_ID, "synced"
        c.retry_policy = {"max_attempts": 3, "backoff_seconds": [1]}
    return connector_id


def made_flow_run(api_url: str, deployment_id: str, **_: Any) -> str:
    """Stands in for Prefect creating the retry's flow run."""
    return f"00000000-0000-4000-8000-{next(_flow_runs):012d}"


def attempt(s: Settings, cid: int, failure: FailureClass, run_id: int | None = None) -> int:
    """One attempt of a run through Prefect that fails; the record's id."""
    flow_run_id, tags = made_flow_run("", ""), []
    if run_id is not None:  # the retry's flow run, made when the last attempt failed
        with session_scope(s.effective_database_url) as session:
            flow_run_id = str(session.get(ConnectorRun, run_id).prefect_flow_run_id)  # type: ignore[union-attr]
        tags = [run_record_tag(run_id)]
    rid = runs.open_run(cid, settings=s, flow_run_id=flow_run_id, tags=tags)
    retries.after_failure(rid, Why(failure), settings=s, start=made_flow_run)
    return rid


def failed_run(s: Settings, cid: int, failure: FailureClass = "config") -> int:
    """A run that fails for good (a config failure is never retried)."""
    rid = attempt(s, cid, failure)
    assert status(s, rid) == "failed"
    return rid


def succeeded_run(s: Settings, cid: int) -> int:
    rid = runs.open_run(cid, settings=s, flow_run_id=made_flow_run("", ""))
    runs.close(rid, settings=s, status="succeeded", summary="0 rows")
    return rid


def status(s: Settings, run_id: int) -> str:
    with session_scope(s.effective_database_url) as session:
        run = session.get(ConnectorRun, run_id)
        assert run is not None
        return run.status


def events(s: Settings, cid: int) -> list[tuple[str, str, dict[str, Any]]]:
    """(event, key, payload) of the connector's events, oldest first."""
    with session_scope(s.effective_database_url) as session:
        rows = session.scalars(
            select(NotificationEvent)
            .where(NotificationEvent.connector_id == cid)
            .order_by(NotificationEvent.id)
        )
        return [(e.event, e.key, dict(e.payload)) for e in rows]


def names(s: Settings, cid: int) -> list[str]:
    return [e for e, _k, _p in events(s, cid)]


def connector(s: Settings, cid: int) -> Connector:
    with session_scope(s.effective_database_url) as session:
        c = session.get(Connector, cid)
        assert c is not None
        session.expunge(c)
        return c


def test_a_run_that_retries_fires_nothing_until_its_retries_are_exhausted(
    s: Settings, cid: int
) -> None:
    rid = attempt(s, cid, "transient")
    assert status(s, rid) == "retrying"
    rid2 = attempt(s, cid, "transient", rid)
    assert rid2 == rid and status(s, rid) == "retrying"  # attempt 2 of 3, same record
    assert events(s, cid) == []  # nothing while it retries
    assert connector(s, cid).consecutive_failures == 0
    attempt(s, cid, "transient", rid)  # attempt 3 of 3: exhausted
    assert status(s, rid) == "failed"
    [(event, key, payload)] = events(s, cid)
    assert (event, key) == ("run.failed", f"run.failed:run-{rid}")
    assert payload["connector"] == {"id": cid, "name": connector(s, cid).name}
    assert payload["run"]["id"] == rid and payload["run"]["status"] == "failed"
    assert payload["run"]["failure_class"] == "transient"
    assert payload["run"]["error"] == "the source did not answer"
    assert connector(s, cid).consecutive_failures == 1  # its retries count once
    # Another closer finding the record (the watchdog, a crash hook) adds nothing.
    assert runs.close_if_open(rid, "crashed", "gone", settings=s) == 0
    runs.close(rid, settings=s, status="failed", error="again", only_if_open=True)
    assert names(s, cid) == ["run.failed"] and connector(s, cid).consecutive_failures == 1
    # A run the watchdog closes as crashed is a failed run too.
    crashed = runs.open_run(cid, settings=s, flow_run_id=made_flow_run("", ""))
    assert runs.close_if_open(crashed, "crashed", "the flow run is gone", settings=s) == 1
    assert events(s, cid)[-1][:2] == ("run.failed", f"run.failed:run-{crashed}")
    assert events(s, cid)[-1][2]["run"]["status"] == "crashed"
    assert connector(s, cid).consecutive_failures == 2
    # A cancelled run is neither a failure nor a success.
    cancelled = runs.open_run(cid, settings=s, flow_run_id=made_flow_run("", ""))
    runs.close(cancelled, settings=s, status="cancelled", error="stopped")
    assert names(s, cid) == ["run.failed", "run.failed"]
    assert connector(s, cid).consecutive_failures == 2


def test_the_first_success_after_failures_is_a_recovery_and_only_that_one(
    s: Settings, cid: int
) -> None:
    failed_run(s, cid)
    failed_run(s, cid, "data")
    assert connector(s, cid).consecutive_failures == 2
    ok = succeeded_run(s, cid)
    assert names(s, cid) == ["run.failed", "run.failed", "run.succeeded", "run.recovered"]
    _event, key, payload = events(s, cid)[-1]
    assert key == f"run.recovered:run-{ok}" and payload["failed_runs_before"] == 2
    assert payload["run"]["status"] == "succeeded"
    assert connector(s, cid).consecutive_failures == 0
    succeeded_run(s, cid)
    assert names(s, cid)[4:] == ["run.succeeded"]  # no second recovery


def test_n_failed_runs_in_a_row_pause_the_connector_and_a_resume_starts_over(
    s: Settings, cid: int
) -> None:
    with session_scope(s.effective_database_url) as session:
        session.execute(
            update(Connector).where(Connector.id == cid).values(auto_pause_after_failures=3)
        )
    failed_run(s, cid)
    succeeded_run(s, cid)  # a success in between: the count starts again
    failed_run(s, cid)
    failed_run(s, cid, "data")
    assert connector(s, cid).is_active
    last = attempt(s, cid, "transient")
    for _ in range(2):  # its retries: still one failed run
        attempt(s, cid, "transient", last)
    c = connector(s, cid)
    assert not c.is_active and c.consecutive_failures == 3
    reason = "after 3 failed runs in a row (last: transient)"
    assert c.paused_reason == reason
    event, key, payload = events(s, cid)[-1]
    assert (event, key) == ("connector.auto_paused", f"connector.auto_paused:run-{last}")
    assert payload["reason"] == reason and payload["consecutive_failures"] == 3
    with session_scope(s.effective_database_url) as session:
        entry = session.scalars(
            select(AuditEntry)
            .where(AuditEntry.entity_type == "connector", AuditEntry.entity_id == str(cid))
            .order_by(AuditEntry.id.desc())
        ).first()
        assert entry is not None
        assert (entry.actor, entry.action) == ("system", "connector.pause")
        assert entry.after["paused_reason"] == reason and entry.after["is_active"] is False
        # The reconciler is told to pause the deployment.
        assert session.scalars(select(OutboxEntry).where(OutboxEntry.connector_id == cid)).all()
        out = connectors.to_out(session.get(Connector, cid), s)  # type: ignore[arg-type]
    assert out.paused_reason == reason and out.consecutive_failures == 3
    # A failure closed while it is paused (a retry the backstop gives up on) fires
    # run.failed but does not pause it again.
    failed_run(s, cid)
    assert names(s, cid)[-2:] == ["connector.auto_paused", "run.failed"]
    box = SecretBox(s.secret_keys())
    with session_scope(s.effective_database_url) as session:
        connectors.set_active(cid, True, session=session, actor=SYSTEM, box=box)
    c = connector(s, cid)
    assert c.is_active and c.consecutive_failures == 0 and c.paused_reason is None
    failed_run(s, cid)
    assert connector(s, cid).is_active  # 1 of 3 again


def test_a_stale_connector_fires_once_per_breach(s: Settings, cid: int) -> None:
    with session_scope(s.effective_database_url) as session:
        session.execute(
            update(Connector).where(Connector.id == cid).values(freshness_sla_minutes=10)
        )
    created = connector(s, cid).created_at
    assert freshness.one_pass(s, created + timedelta(minutes=9)).stale == 0
    breach = created + timedelta(minutes=11)
    assert freshness.one_pass(s, breach).stale == 1
    assert freshness.one_pass(s, breach + timedelta(minutes=30)).stale == 0  # once
    [(event, key, payload)] = events(s, cid)
    assert event == "connector.stale" and key.startswith(f"connector.stale:connector-{cid}:")
    assert payload["freshness_sla_minutes"] == 10 and payload["last_success_at"] is None
    with session_scope(s.effective_database_url) as session:
        out = connectors.to_out(session.get(Connector, cid), s)  # type: ignore[arg-type]
    assert out.stale and out.stale_since == breach
    version = connector(s, cid).version  # the mark is not an edit
    succeeded_run(s, cid)
    c = connector(s, cid)
    assert c.stale_since is None and c.version == version
    done = utcnow()
    assert freshness.one_pass(s, done + timedelta(minutes=9)).stale == 0
    assert freshness.one_pass(s, done + timedelta(minutes=11)).stale == 1  # a new breach
    assert names(s, cid) == ["connector.stale", "run.succeeded", "connector.stale"]
    assert events(s, cid)[-1][2]["last_success_at"] is not None
    # A paused connector is not watched; one whose SLA is removed is not stale any more.
    with session_scope(s.effective_database_url) as session:
        session.execute(
            update(Connector).where(Connector.id == cid).values(freshness_sla_minutes=None)
        )
    freshness.one_pass(s, done + timedelta(minutes=12))
    assert connector(s, cid).stale_since is None and len(events(s, cid)) == 3


def synced(s: Settings, cid: int) -> None:
    """What the reconciler writes when the deployment matches (``record_synced_many``)."""
    with session_scope(s.effective_database_url) as session:
        state = store.load_connectors(session, [cid])[cid]
        spec = build(state, default_work_pool="pool", default_work_queue="default")
        store.record_synced_many(session, [(state, DEPLOYMENT_ID, spec, utcnow())])


def test_a_connector_left_unsynced_fires_sync_error_once_per_spell(s: Settings, cid: int) -> None:
    after = timedelta(seconds=s.notify_sync_error_after)
    box = SecretBox(s.secret_keys())
    with session_scope(s.effective_database_url) as session:  # an edit: pending
        connectors.update(
            cid,
            ConnectorPatch(description="changed"),
            session=session,
            actor=SYSTEM,
            box=box,
        )
    c = connector(s, cid)
    assert c.sync_status == "pending"
    assert freshness.one_pass(s, c.updated_at + after - timedelta(seconds=1)).sync_errors == 0
    late = c.updated_at + after + timedelta(seconds=1)
    assert freshness.one_pass(s, late).sync_errors == 1
    assert freshness.one_pass(s, late + after * 3).sync_errors == 0  # once per spell
    [(event, _key, payload)] = events(s, cid)
    assert event == "sync.error" and payload["sync_status"] == "pending"
    assert connector(s, cid).sync_alerted_at == late
    synced(s, cid)
    c = connector(s, cid)
    assert c.sync_status == "synced" and c.sync_alerted_at is None
    # A deployment synced long ago whose repair fails now: a running loop counts the spell
    # from when it first saw it, not from the old sync.
    long_ago = utcnow() - timedelta(days=7)
    with session_scope(s.effective_database_url) as session:
        session.execute(
            update(Connector)
            .where(Connector.id == cid)
            .values(synced_at=long_ago, updated_at=long_ago)
        )
        state = store.load_connectors(session, [cid])[cid]
        store.record_failed(
            session,
            state,
            error="Prefect answered 500",
            transient=True,
            attempts=1,
            next_at=utcnow(),
            spec_hash=None,
        )
    seen: dict[int, datetime] = {}
    now = utcnow()
    assert freshness.one_pass(s, now, first_seen=seen).sync_errors == 0
    assert freshness.one_pass(s, now + after / 2, first_seen=seen).sync_errors == 0
    assert freshness.one_pass(s, now + after * 2, first_seen=seen).sync_errors == 1
    assert names(s, cid) == ["sync.error", "sync.error"]
    assert events(s, cid)[-1][2]["sync_error"] == "Prefect answered 500"
    assert seen == {}  # alerted: no longer watched until synced again
