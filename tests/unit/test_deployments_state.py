"""Pieces of plan and export that need no database: diffs, hashes, names."""

from __future__ import annotations

from conveyor.deployments_io.export import env_name, slug
from conveyor.deployments_io.format import DeploymentFile
from conveyor.deployments_io.state import Secret, config_state, diff, state_hash


def test_diff_reports_leaves_and_hides_secret_values() -> None:
    old = {
        "schedule": "0 * * * *",
        "source": {
            "name": "db",
            "config": config_state("source", "sql_database", {"password": "pw-old", "host": "h"}),
        },
    }
    new = {
        "schedule": "0 1 * * *",
        "source": {
            "name": "db",
            "config": config_state("source", "sql_database", {"password": "pw-new", "host": "h2"}),
        },
    }
    described = [c.describe() for c in diff(old, new)]
    assert described == [
        'schedule: "0 * * * *" -> "0 1 * * *"',
        'source.config.host: "h" -> "h2"',
        "source.config.password: (secret changed)",
    ]
    shown = str([c.to_dict() for c in diff(old, new)]) + str(described)
    assert "pw-old" not in shown and "pw-new" not in shown
    removed = diff(old, {**old, "source": {"name": "db", "config": {"host": "h"}}})
    assert [c.describe() for c in removed] == ["source.config.password: (secret removed)"]


def test_hash_covers_secrets_without_revealing_them() -> None:
    state = {"source": {"config": {"password": Secret("pw-1")}}}
    key = b"k" * 32
    same = state_hash(state, key)
    assert same == state_hash({"source": {"config": {"password": Secret("pw-1")}}}, key)
    assert same != state_hash({"source": {"config": {"password": Secret("pw-2")}}}, key)
    assert same != state_hash(state, b"other-key" * 4)  # keyed: no offline guessing
    assert "pw-1" not in repr(Secret("pw-1"))


def test_names_for_files_and_variables() -> None:
    assert slug("Orders EU (nightly)") == "orders-eu-nightly"
    assert slug("v1.2_final") == "v1.2-final"
    assert env_name("source", "orders-db", "password") == "DEPLOY_SECRET_SOURCE_ORDERS_DB_PASSWORD"
    assert env_name("connector", "Customers EU", "source_token") == (
        "DEPLOY_SECRET_CONNECTOR_CUSTOMERS_EU_SOURCE_TOKEN"
    )


def test_marker_tags_are_not_user_tags_and_default_names_are_not_stored() -> None:
    model = DeploymentFile.model_validate(
        {
            "name": "connector-4",
            "parameters": {"connector_id": 4},
            "tags": ["connector-4", "scheduled", "conveyor", "finance", "finance"],
            "connector": None,
        }
    )
    assert model.user_tags() == ["finance"]
    assert model.deployment_name() is None
