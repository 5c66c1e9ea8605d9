"""A run tells the truth (invariant 8 of docs/design.md), each defect of issue 17 reproduced
from outside: a missing source folder never empties the destination, and a new connector
never inherits a deleted one's id, pipeline state, runs or audit history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conveyor.pipelines.flow import RunFailed, run_connector
from conveyor.settings import Settings
from tests.fixtures.pipelines import duckdb_rows, last_run
from tests.fixtures.web import ApiUser


def write_csv(path: Path, n: int, start: int = 0) -> None:
    path.write_text("id,v\n" + "".join(f"{i},{i * 2}\n" for i in range(start, start + n)))


def csv_connector(factory: Any, folder: Path, **override: Any) -> int:
    return int(
        factory(
            ("filesystem", {"path": str(folder), "file_pattern": "*.csv", "table_name": "t"}),
            ("duckdb", {}),
            source_override=override or None,
        )
    )


def count(factory: Any, cid: int) -> int:
    return int(duckdb_rows(factory.settings, f"SELECT count(*) FROM connector_{cid}.t")[0][0])


# --- a missing source location changes nothing at the destination ----------------------


def test_renamed_source_folder_fails_and_keeps_the_replaced_table(
    factory: Any, tmp_path: Path
) -> None:
    share = tmp_path / "share"
    share.mkdir()
    write_csv(share / "a.csv", 3000)
    cid = csv_connector(factory, share)
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 3000
    share.rename(tmp_path / "share-unmounted")

    with pytest.raises(RunFailed, match="does not exist"):
        run_connector(cid, settings=factory.settings)
    run = last_run(factory.settings, cid)
    assert (run.status, run.failure_class) == ("failed", "config")
    assert str(share) in run.error and "destination is unchanged" in run.error
    assert count(factory, cid) == 3000  # before the fix: 0 rows, and the run "succeeded"


def test_no_matching_file_with_replace_fails_but_append_has_no_new_rows(
    factory: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write_csv(folder / "a.csv", 40)
    replaced = csv_connector(factory, folder)
    appended = csv_connector(factory, folder, write_disposition="append")
    assert run_connector(replaced, settings=factory.settings)["rows_loaded"] == 40
    assert run_connector(appended, settings=factory.settings)["rows_loaded"] == 40
    (folder / "a.csv").rename(folder / "a.csv.done")  # the folder is there, emptied

    with pytest.raises(RunFailed, match=r"No file matches \*\.csv"):
        run_connector(replaced, settings=factory.settings)
    assert count(factory, replaced) == 40
    assert run_connector(appended, settings=factory.settings)["rows_loaded"] == 0
    assert last_run(factory.settings, appended).log_summary.startswith("No new rows")
    assert count(factory, appended) == 40

    folder.rename(tmp_path / "gone")  # an absent folder fails whatever the disposition
    with pytest.raises(RunFailed, match="does not exist"):
        run_connector(appended, settings=factory.settings)
    assert count(factory, appended) == 40


def test_transfer_from_an_absent_folder_fails(factory: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cid = factory(
        ("filesystem", {"path": str(tmp_path / "missing"), "mode": "transfer"}),
        ("filesystem", {"path": str(out)}),
    )
    with pytest.raises(RunFailed, match="does not exist"):
        run_connector(cid, settings=factory.settings)
    assert last_run(factory.settings, cid).status == "failed"


# --- ids are never reused; pipeline state is keyed by something that cannot repeat -----


def _append_connector(user: ApiUser, folder: Path) -> dict[str, Any]:
    src = user.make_source(type="filesystem", config={"path": str(folder), "file_pattern": "*.csv"})
    return user.make_connector(
        source_id=src["id"],
        schedule=None,
        source_config_override={"table_name": "t", "write_disposition": "append"},
    )


def test_new_connector_after_a_delete_gets_a_new_id_and_its_own_state(
    admin: ApiUser, app_settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write_csv(folder / "a.csv", 1000)
    old = _append_connector(admin, folder)
    old_run = run_connector(old["id"], settings=app_settings)
    assert old_run["rows_loaded"] == 1000
    assert admin.delete(f"/api/v1/connectors/{old['id']}").status_code == 204

    new = _append_connector(admin, folder)
    assert new["id"] != old["id"]  # before the fix (SQLite): the deleted one's id again
    first = run_connector(new["id"], settings=app_settings)
    assert first["rows_loaded"] == 1000  # before: "No new rows", the old cursor inherited
    assert first["run_id"] != old_run["run_id"]
    assert admin.get(f"/api/v1/runs/{old_run['run_id']}").status_code == 404
    run = admin.get(f"/api/v1/runs/{first['run_id']}").json()
    assert run["connector_id"] == new["id"]
    history = admin.get("/api/v1/audit", params={"entity_type": "connector"}).json()
    mine = [e["action"] for e in history if e["entity_id"] == str(new["id"])]
    assert mine == ["connector.create"]  # none of the deleted connector's entries


def test_connector_given_a_deleted_ones_id_does_not_inherit_its_state(
    factory: Any, tmp_path: Path
) -> None:
    """Deployment files may name an id (``connector_id``): a connector recreated under a
    deleted one's id starts from scratch, not from the deleted one's cursor."""
    from conveyor.db.models import Connector
    from conveyor.db.session import session_scope
    from conveyor.domain.models import ConnectorCreate
    from conveyor.services import connectors
    from conveyor.services.authz import SYSTEM

    folder = tmp_path / "in"
    folder.mkdir()
    write_csv(folder / "a.csv", 1000)
    cid = csv_connector(factory, folder, write_disposition="append")
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 1000
    url = factory.settings.effective_database_url
    with session_scope(url) as s:
        old = s.get(Connector, cid)
        assert old is not None and old.state_key
        data = ConnectorCreate(
            name="recreated",
            source_id=old.source_id,
            destination_id=old.destination_id,
            source_config_override=old.source_config_override,
        )
        old_key = old.state_key
        connectors.delete(cid, session=s, actor=SYSTEM)
    with session_scope(url) as s:
        again = connectors.create(data, session=s, actor=SYSTEM, box=factory.box, connector_id=cid)
        assert again.id == cid and again.state_key and again.state_key != old_key
    assert run_connector(cid, settings=factory.settings)["rows_loaded"] == 1000


# --- a committed load is a succeeded run, whoever closes the record ----------------------


@pytest.mark.parametrize("closer", ["crash hook", "watchdog", "next run", "interrupted"])
def test_every_closer_records_a_committed_run_as_succeeded(settings: Settings, closer: str) -> None:
    """The flow marks the data committed (committed_at, rows) before it closes the record;
    if the worker is lost in between, whoever closes the record says succeeded."""
    from datetime import timedelta

    from conveyor.db.base import utcnow
    from conveyor.db.models import ConnectorRun
    from conveyor.db.session import session_scope
    from conveyor.pipelines.resolved import RunStats
    from conveyor.services import run_commit, runs
    from tests.fixtures.pipelines import ConnectorFactory

    cid = ConnectorFactory(settings)(("filesystem", {"path": "/data/in"}), ("duckdb", {}))
    url = settings.effective_database_url
    old = utcnow() - timedelta(hours=1)
    with session_scope(url) as s:
        committed = ConnectorRun(
            connector_id=cid, status="running", trigger="schedule", prefect_flow_run_id="fr-1"
        )
        s.add(committed)
        s.flush()
        run_id = committed.id
    run_commit.mark_committed(run_id, settings=settings, stats=RunStats(rows={"t": 7}, bytes=9))
    with session_scope(url) as s:  # the worker went silent an hour ago
        s.get(ConnectorRun, run_id).heartbeat_at = old  # type: ignore[union-attr]
    if closer == "crash hook":
        runs.close_flow_run("fr-1", settings=settings, status="crashed", error="x", summary="y")
    elif closer == "watchdog":
        assert runs.close_if_open(run_id, "crashed", "gone", settings=settings) == 1
    elif closer == "next run":
        runs.open_run(cid, settings=settings, flow_run_id="fr-2")
    else:
        runs.close(run_id, settings=settings, status="cancelled", only_if_open=True)
    with session_scope(url) as s:
        run = s.get(ConnectorRun, run_id)
        assert run is not None
        assert (run.status, run.rows_loaded, run.error) == ("succeeded", 7, None)
        assert run.table_stats == {"t": {"rows": 7}} and run.log_summary == run_commit.NOTE
