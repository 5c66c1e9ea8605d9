"""plan / apply / export against a real database (SQLite, and PostgreSQL when configured):
ids kept or remapped, idempotence, drift, prune, secrets, all-or-nothing."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from conveyor.db.models import AuditEntry, Connector, OutboxEntry, Source
from conveyor.db.session import session_scope
from conveyor.deployments_io import (
    apply_directory,
    export_directory,
    plan_directory,
    render_export,
)
from conveyor.domain.models import ConnectorCreate, ConnectorPatch, EndpointCreate
from conveyor.errors import ValidationFailed
from conveyor.secrets import SecretBox
from conveyor.services import catalog
from conveyor.services import connectors as svc
from conveyor.services.authz import SYSTEM
from conveyor.settings import Settings
from tests.fixtures.db import create_pg_database, drop_pg_database, migrated_sqlite_url

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def box(settings: Settings) -> SecretBox:
    return SecretBox(settings.secret_keys())


@pytest.fixture
def other_settings(backend: str, tmp_path: Path) -> Iterator[Settings]:
    """A second, empty environment: its own database and its own secret key."""
    url = (
        migrated_sqlite_url(tmp_path / "other.db")
        if backend == "sqlite"
        else create_pg_database(migrated=True)
    )
    home = tmp_path / "other-home"
    home.mkdir()
    yield Settings(home=home, database_url=url, secret_key=Fernet.generate_key().decode())
    if backend != "sqlite":
        drop_pg_database(url)


@pytest.fixture
def example_dir(tmp_path: Path) -> Path:
    """A copy of the shipped deployments/ directory (the example and its CSV)."""
    target = tmp_path / "deployments"
    shutil.copytree(REPO / "deployments", target)
    return target


def count(session: Session, model: type) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def make_connector(session: Session, box: SecretBox, name: str, **kw: Any) -> Connector:
    src = catalog.get_by_name("source", f"{name}-db", session=session) or catalog.create(
        "source",
        EndpointCreate(
            name=f"{name}-db",
            type="sql_database",
            config={"host": "db.example.com", "database": "sales", "password": f"pw-{name}"},
        ),
        session=session,
        actor=SYSTEM,
        box=box,
    )
    dst = catalog.get_by_name("destination", "warehouse", session=session) or catalog.create(
        "destination",
        EndpointCreate(name="warehouse", type="duckdb", config={}),
        session=session,
        actor=SYSTEM,
        box=box,
    )
    connector_id = kw.pop("connector_id", None)
    deployment_name = kw.pop("deployment_name", None)
    data = ConnectorCreate(
        name=name,
        source_id=src.id,
        destination_id=dst.id,
        **{"schedule": "0 3 * * *", "source_config_override": {"tables": ["orders"]}, **kw},
    )
    return svc.create(
        data,
        session=session,
        actor=SYSTEM,
        box=box,
        connector_id=connector_id,
        deployment_name=deployment_name,
    )


def apply(path: Path, settings: Settings, **kw: Any) -> Any:
    box = SecretBox(settings.secret_keys())
    with session_scope(settings.effective_database_url) as session:
        return apply_directory(
            path, session=session, box=box, actor=SYSTEM, settings=settings, **kw
        )


def plan(path: Path, settings: Settings, **kw: Any) -> Any:
    box = SecretBox(settings.secret_keys())
    with session_scope(settings.effective_database_url) as session:
        return plan_directory(path, session=session, box=box, settings=settings, **kw)


def test_example_into_an_empty_database_keeps_its_id_and_reapplying_changes_nothing(
    settings: Settings, example_dir: Path
) -> None:
    result = apply(example_dir, settings)
    assert result.ids == {"example-orders": 1}
    assert result.created == ["example-orders"]
    assert sorted(result.endpoints_created) == [
        "destination local-duckdb",
        "source example-orders-csv",
    ]
    url = settings.effective_database_url
    with session_scope(url) as s:
        c = s.get(Connector, 1)
        assert c is not None
        # The demo's name is the default connector-<id>, so none is stored (issue 22).
        assert (c.managed_by, c.deployment_name, c.schedule) == ("file", None, "0 */6 * * *")
        assert c.source.config["path"] == str(example_dir / "data")
        assert c.source_config_override == {"write_disposition": "merge", "primary_key": "order_id"}
        assert c.applied_file_hash and len(c.applied_file_hash) == 64
        before = (count(s, OutboxEntry), count(s, AuditEntry), c.version)
    assert before[0] == 1

    assert not plan(example_dir, settings).has_changes
    again = apply(example_dir, settings)
    assert not again.changed and again.unchanged == ["example-orders"]
    with session_scope(url) as s:
        c = s.get(Connector, 1)
        assert c is not None
        assert (count(s, OutboxEntry), count(s, AuditEntry), c.version) == before


def test_a_new_connector_after_apply_does_not_collide_with_kept_ids(
    settings: Settings, example_dir: Path, box: SecretBox
) -> None:
    # PostgreSQL: rows inserted with explicit ids leave the sequence behind unless moved.
    (example_dir / "example-connector-deployment.yaml").write_text(
        (example_dir / "example-connector-deployment.yaml")
        .read_text()
        .replace("connector_id: 1", "connector_id: 5")
        .replace("connector-1", "connector-5")
    )
    apply(example_dir, settings)
    with session_scope(settings.effective_database_url) as s:
        made = [make_connector(s, box, f"api-{i}").id for i in range(6)]
    assert 5 not in made and len(set(made)) == 6


def test_export_is_deterministic_secret_free_and_round_trips(
    settings: Settings, other_settings: Settings, box: SecretBox, tmp_path: Path
) -> None:
    with session_scope(settings.effective_database_url) as s:
        make_connector(s, box, "orders", tags=["finance", "eu"], description="Orders\nnightly")
        make_connector(
            s,
            box,
            "Customers EU",
            schedule=None,
            timezone="Europe/Paris",
            is_active=False,
            work_pool_name="k8s",
            deployment_name="customers-sync",
            source_config_override={"tables": ["customers"], "password": "override-pw"},
        )
        make_connector(s, box, "events", connector_id=40)
    out = tmp_path / "export"
    first = _export(settings, out)
    assert first == _export(settings, out), "two exports of the same database differ"
    assert sorted(first) == ["customers-eu.yaml", "events.yaml", "orders.yaml"]
    text = b"".join(first.values()).decode()
    for secret in ("pw-orders", "pw-Customers EU", "override-pw", "fernet:"):
        assert secret not in text
    assert b"${DEPLOY_SECRET_SOURCE_ORDERS_DB_PASSWORD}" in first["orders.yaml"]
    assert b"${DEPLOY_SECRET_CONNECTOR_CUSTOMERS_EU_SOURCE_PASSWORD}" in first["customers-eu.yaml"]
    env = {
        "DEPLOY_SECRET_SOURCE_ORDERS_DB_PASSWORD": "pw-orders",
        "DEPLOY_SECRET_SOURCE_CUSTOMERS_EU_DB_PASSWORD": "pw-Customers EU",
        "DEPLOY_SECRET_SOURCE_EVENTS_DB_PASSWORD": "pw-events",
        "DEPLOY_SECRET_CONNECTOR_CUSTOMERS_EU_SOURCE_PASSWORD": "override-pw",
    }
    # Another environment: empty database, different secret key.
    result = apply(out, other_settings, env=env)
    assert result.ids == {"orders": 1, "Customers EU": 2, "events": 40}
    again = tmp_path / "again"
    assert _export(other_settings, again) == first
    other_box = SecretBox(other_settings.secret_keys())
    with session_scope(other_settings.effective_database_url) as s:
        c = svc.get_by_name("Customers EU", session=s)
        assert c is not None
        assert other_box.decrypt(c.source_config_override["password"]) == "override-pw"
        assert other_box.decrypt(c.source.config["password"]) == "pw-Customers EU"
        assert (c.is_active, c.schedule, c.timezone, c.work_pool_name) == (
            False,
            None,
            "Europe/Paris",
            "k8s",
        )


def _export(settings: Settings, out: Path) -> dict[str, bytes]:
    with session_scope(settings.effective_database_url) as s:
        export_directory(out, session=s, settings=settings)
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.yaml"))}


def test_ids_that_differ_are_matched_by_name_and_shown(
    settings: Settings, example_dir: Path, box: SecretBox
) -> None:
    with session_scope(settings.effective_database_url) as s:
        make_connector(s, box, "somebody-else")  # takes id 1
    the_plan = plan(example_dir, settings)
    [change] = [c for c in the_plan.connectors if c.name == "example-orders"]
    assert (change.action, change.file_id, change.db_id, change.id_changed) == (
        "create",
        1,
        None,
        True,
    )
    assert change.describe_id() == "1 -> new"
    result = apply(example_dir, settings)
    assert result.ids["example-orders"] == 2
    assert result.to_dict()["id_changes"] == [{"name": "example-orders", "file_id": 1, "id": 2}]
    # Applying again matches by name: unchanged, and the plan still shows the id mapping.
    [change] = [c for c in plan(example_dir, settings).connectors if c.name == "example-orders"]
    assert (change.action, change.describe_id()) == ("unchanged", "1 -> 2")


def test_a_connector_changed_in_the_ui_is_drift_kept_unless_forced(
    settings: Settings, example_dir: Path, box: SecretBox
) -> None:
    apply(example_dir, settings)
    with session_scope(settings.effective_database_url) as s:
        svc.update(1, ConnectorPatch(schedule="15 * * * *"), session=s, actor=SYSTEM, box=box)
    [change] = plan(example_dir, settings).connectors
    assert change.action == "drift" and change.drifted
    assert [c.describe() for c in change.changes] == ['schedule: "15 * * * *" -> "0 */6 * * *"']
    result = apply(example_dir, settings)
    assert result.kept_drift == ["example-orders"] and not result.changed
    with session_scope(settings.effective_database_url) as s:
        assert svc.get(1, session=s).schedule == "15 * * * *"
    forced = apply(example_dir, settings, force=True)
    assert forced.updated == ["example-orders"]
    assert not plan(example_dir, settings).has_changes


def test_prune_deletes_only_connectors_that_came_from_files(
    settings: Settings, example_dir: Path, box: SecretBox
) -> None:
    apply(example_dir, settings)
    with session_scope(settings.effective_database_url) as s:
        ui_made = make_connector(s, box, "made-in-the-ui").id
    (example_dir / "example-connector-deployment.yaml").unlink()
    assert not plan(example_dir, settings).has_changes  # without --prune nothing goes
    pruned = plan(example_dir, settings, prune=True)
    assert [(c.action, c.name) for c in pruned.connectors] == [("delete", "example-orders")]
    result = apply(example_dir, settings, prune=True)
    assert result.deleted == ["example-orders"]
    with session_scope(settings.effective_database_url) as s:
        assert [c.id for c in s.scalars(select(Connector))] == [ui_made]
        actions = [e.action for e in s.scalars(select(OutboxEntry).order_by(OutboxEntry.id))]
        assert actions[-1] == "delete"


def test_an_existing_ui_connector_with_the_same_content_is_adopted(
    settings: Settings, example_dir: Path, box: SecretBox, tmp_path: Path
) -> None:
    with session_scope(settings.effective_database_url) as s:
        make_connector(s, box, "orders")
    out = tmp_path / "out"
    _export(settings, out)
    env = {"DEPLOY_SECRET_SOURCE_ORDERS_DB_PASSWORD": "pw-orders"}
    [change] = plan(out, settings, env=env).connectors
    assert (change.action, change.managed_by) == ("adopt", "api")
    result = apply(out, settings, env=env)
    assert result.adopted == ["orders"]
    with session_scope(settings.effective_database_url) as s:
        assert count(s, OutboxEntry) == 1  # adoption is bookkeeping: no deployment change
        assert svc.get(1, session=s).managed_by == "file"
    assert not plan(out, settings, env=env).has_changes


def test_secret_changes_are_shown_without_values_and_applied(
    settings: Settings, box: SecretBox, tmp_path: Path
) -> None:
    with session_scope(settings.effective_database_url) as s:
        make_connector(s, box, "orders")
    out = tmp_path / "out"
    _export(settings, out)
    env = {"DEPLOY_SECRET_SOURCE_ORDERS_DB_PASSWORD": "rotated-pw"}
    the_plan = plan(out, settings, env=env)
    [endpoint] = [e for e in the_plan.endpoints if e.action != "unchanged"]
    assert (endpoint.action, [c.describe() for c in endpoint.changes]) == (
        "update",
        ["config.password: (secret changed)"],
    )
    assert "rotated-pw" not in str(the_plan.to_dict())
    apply(out, settings, env=env)
    with session_scope(settings.effective_database_url) as s:
        src = s.scalars(select(Source)).one()
        assert src.config["password"].startswith("fernet:")
        assert box.decrypt(src.config["password"]) == "rotated-pw"
    with pytest.raises(
        ValidationFailed, match="DEPLOY_SECRET_SOURCE_ORDERS_DB_PASSWORD is not set"
    ):
        plan(out, settings, env={})


def test_nothing_is_written_when_any_file_is_wrong(settings: Settings, example_dir: Path) -> None:
    (example_dir / "broken.yaml").write_text(
        "name: broken\nparameters: {connector_id: 2}\n"
        "connector: {name: broken, source: no-such-source, destination: local-duckdb}\n"
    )
    with pytest.raises(ValidationFailed) as info:
        apply(example_dir, settings)
    assert [p.loc for p in info.value.problems] == ["broken.yaml:3:35"]
    assert "source 'no-such-source' does not exist" in info.value.problems[0].reason
    with session_scope(settings.effective_database_url) as s:
        assert count(s, Connector) == count(s, Source) == count(s, OutboxEntry) == 0


def test_a_failure_half_way_through_rolls_everything_back(
    settings: Settings, example_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (example_dir / "example-connector-deployment.yaml").read_text()
    (example_dir / "second.yaml").write_text(
        text.replace("name: connector-1 ", "name: second ")
        .replace("connector_id: 1", "connector_id: 2")
        .replace("connector-1", "connector-2")
        .replace("name: example-orders\n", "name: second-orders\n")
    )
    real = svc.create
    calls = {"n": 0}

    def failing(*args: Any, **kw: Any) -> Connector:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("database went away")
        return real(*args, **kw)

    monkeypatch.setattr(svc, "create", failing)
    with pytest.raises(RuntimeError):
        apply(example_dir, settings)
    with session_scope(settings.effective_database_url) as s:
        assert count(s, Connector) == count(s, Source) == count(s, OutboxEntry) == 0


def test_a_file_without_connector_block_changes_the_deployment_of_an_existing_connector(
    settings: Settings, box: SecretBox, tmp_path: Path
) -> None:
    with session_scope(settings.effective_database_url) as s:
        make_connector(s, box, "orders")
    d = tmp_path / "d"
    d.mkdir()
    (d / "seed.yaml").write_text(
        "name: nightly-orders\nparameters: {connector_id: 1}\n"
        "schedule: {cron: '0 1 * * *', timezone: Europe/Berlin}\n"
        "tags: [connector-1, scheduled, x]\n"
    )
    result = apply(d, settings)
    assert result.updated == ["orders"]
    with session_scope(settings.effective_database_url) as s:
        c = svc.get(1, session=s)
        assert (c.deployment_name, c.schedule, c.timezone, c.tags) == (
            "nightly-orders",
            "0 1 * * *",
            "Europe/Berlin",
            ["x"],
        )
        assert [e.action for e in s.scalars(select(OutboxEntry))].count("upsert") >= 2
    (d / "seed.yaml").write_text("name: x\nparameters: {connector_id: 9}\n")
    with pytest.raises(ValidationFailed, match="connector 9 does not exist"):
        apply(d, settings)


def test_two_connectors_cannot_share_a_deployment_name(
    settings: Settings, example_dir: Path, box: SecretBox
) -> None:
    example = example_dir / "example-connector-deployment.yaml"
    example.write_text(
        example.read_text().replace("name: connector-1 ", "name: example-connector-pipeline ")
    )
    with session_scope(settings.effective_database_url) as s:
        make_connector(s, box, "other", deployment_name="example-connector-pipeline")
    with pytest.raises(
        ValidationFailed,
        match="deployment name 'example-connector-pipeline' is already used by connector 'other'",
    ):
        plan(example_dir, settings)


def test_export_selection_and_relative_paths(
    settings: Settings, example_dir: Path, box: SecretBox
) -> None:
    apply(example_dir, settings)
    with session_scope(settings.effective_database_url) as s:
        make_connector(s, box, "tagged", tags=["keep"])
        files, env_vars = render_export(s, settings, base_dir=example_dir, tags=["keep"])
        assert list(files) == ["tagged.yaml"] and env_vars == [
            "DEPLOY_SECRET_SOURCE_TAGGED_DB_PASSWORD"
        ]
        files, _ = render_export(s, settings, base_dir=example_dir, names=["example-orders"])
    # Exported into the directory it came from, the CSV's path is relative again.
    assert "      path: data\n" in files["example-orders.yaml"]


def test_padded_values_apply_once(settings: Settings, example_dir: Path) -> None:
    path = example_dir / "example-connector-deployment.yaml"
    path.write_text(
        path.read_text()
        .replace("description: Example scheduled pipeline", 'description: "  padded  "')
        .replace("name: example-orders\n", 'name: "example-orders "\n')
    )
    assert apply(example_dir, settings).created == ["example-orders"]
    assert not plan(example_dir, settings).has_changes
