"""Run records: opened, renewed and closed by the flow, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prefect.client.schemas.objects import StateType

from conveyor.db.base import utcnow
from conveyor.db.models import ConnectorRun
from conveyor.db.session import session_scope
from conveyor.pipelines import flow
from conveyor.settings import Settings
from tests.fixtures.pipelines import ConnectorFactory, last_run


@pytest.fixture
def csv_connector(settings: Settings, tmp_path: Path) -> int:
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.csv").write_text("id,v\n1,10\n2,20\n")
    return ConnectorFactory(settings)(
        ("filesystem", {"path": str(src), "file_pattern": "*.csv"}), ("duckdb", {})
    )


def get_run(settings: Settings, run_id: int) -> ConnectorRun:
    with session_scope(settings.effective_database_url) as s:
        run = s.get(ConnectorRun, run_id)
        assert run is not None
        return run


def add_run(settings: Settings, **fields: Any) -> int:
    with session_scope(settings.effective_database_url) as s:
        run = ConnectorRun(**fields)
        s.add(run)
        s.flush()
        return int(run.id)


def test_pre_created_manual_run_is_reused(settings: Settings, csv_connector: int) -> None:
    run_id = add_run(
        settings,
        connector_id=csv_connector,
        prefect_flow_run_id="fr-manual-1",
        status="scheduled",
        trigger="manual",
    )
    result = flow.run_connector(csv_connector, settings=settings, flow_run_id="fr-manual-1")
    assert result["run_id"] == run_id
    run = get_run(settings, run_id)
    assert (run.status, run.trigger, run.rows_loaded) == ("succeeded", "manual", 2)
    assert run.started_at and run.finished_at and run.heartbeat_at
    assert run.finished_at >= run.started_at
    assert run.table_stats == {"files": {"rows": 2}}


@pytest.mark.parametrize(
    ("tags", "trigger"), [([], "schedule"), (["conveyor", flow.MANUAL_TAG], "manual")]
)
def test_trigger_from_flow_run_tags(
    settings: Settings, csv_connector: int, tags: list[str], trigger: str
) -> None:
    flow.run_connector(csv_connector, settings=settings, flow_run_id=f"fr-{trigger}", tags=tags)
    run = last_run(settings, csv_connector)
    assert (run.prefect_flow_run_id, run.trigger, run.status) == (
        f"fr-{trigger}",
        trigger,
        "succeeded",
    )


def test_heartbeat_renews_while_running(settings: Settings, csv_connector: int) -> None:
    run_id = flow.open_run(csv_connector, settings=settings)
    before = get_run(settings, run_id).heartbeat_at
    with flow.Heartbeat(run_id, settings, interval=0.2):
        time.sleep(1.0)
    assert get_run(settings, run_id).heartbeat_at > before


def test_stale_running_record_closed_as_crashed_by_next_run(
    settings: Settings, csv_connector: int
) -> None:
    old = utcnow() - timedelta(seconds=settings.run_heartbeat_timeout + 60)
    stale = add_run(
        settings,
        connector_id=csv_connector,
        status="running",
        trigger="schedule",
        started_at=old,
        heartbeat_at=old,
    )
    flow.run_connector(csv_connector, settings=settings)
    run = get_run(settings, stale)
    assert run.status == "crashed" and run.finished_at is not None
    assert "stopped" in run.error
    assert last_run(settings, csv_connector).status == "succeeded"


@pytest.mark.parametrize(
    ("hook", "state_type", "status"),
    [
        (flow._on_crashed, StateType.CRASHED, "crashed"),
        (flow._on_cancellation, StateType.CANCELLING, "cancelled"),
    ],
)
def test_state_hooks_close_the_record(
    settings: Settings,
    csv_connector: int,
    monkeypatch: pytest.MonkeyPatch,
    hook: Any,
    state_type: StateType,
    status: str,
) -> None:
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", settings.effective_database_url)
    run_id = add_run(
        settings,
        connector_id=csv_connector,
        prefect_flow_run_id="fr-hook",
        status="running",
        trigger="schedule",
        started_at=utcnow(),
    )
    state = SimpleNamespace(type=state_type, message="worker went away")
    hook(None, SimpleNamespace(id="fr-hook"), state)
    run = get_run(settings, run_id)
    assert run.status == status and run.finished_at is not None
    assert "worker went away" in run.log_summary
    # a closed record is left alone
    flow._on_crashed(None, SimpleNamespace(id="fr-hook"), state)
    assert get_run(settings, run_id).status == status


def test_flow_body_runs_without_prefect(
    settings: Settings, csv_connector: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", settings.effective_database_url)
    monkeypatch.setenv("CONVEYOR_HOME", str(settings.home))
    assert settings.secret_key is not None
    monkeypatch.setenv("CONVEYOR_SECRET_KEY", settings.secret_key.get_secret_value())
    result = flow.run_connector_pipeline.fn(csv_connector)
    assert result["rows_loaded"] == 2
    assert last_run(settings, csv_connector).trigger == "manual"


def test_unknown_connector(settings: Settings) -> None:
    from conveyor.errors import NotFound

    with pytest.raises(NotFound):
        flow.run_connector(999_999, settings=settings)
