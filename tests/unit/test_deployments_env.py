"""${VAR} in deployment files: substituted only in secret fields, only from variables the
admin allows, never from Conveyor's or Prefect's own settings (CONVEYOR_*, PREFECT_*)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.deployments_io import load_files
from conveyor.deployments_io.configs import env_allowed
from conveyor.settings import get_settings
from tests.unit.test_deployments_files import GOOD

REF = "${DEPLOY_SECRET_SALES_DB_PASSWORD}"
SERVER_ENV = {
    "CONVEYOR_SECRET_KEY": "the-server-key",
    "CONVEYOR_DATABASE_URL": "postgresql://conveyor:pw@db/conveyor",
    "PREFECT_API_URL": "http://prefect:4200/api",
    "DEPLOY_SECRET_SALES_DB_PASSWORD": "pw-1",
    "SALES_PW": "pw-2",
    "HOME": "/root",
}


@pytest.fixture
def allow(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """Set CONVEYOR_DEPLOYMENT_ENV for the process, as an admin would."""

    def set_(value: str) -> None:
        monkeypatch.setenv("CONVEYOR_DEPLOYMENT_ENV", value)
        get_settings.cache_clear()

    get_settings.cache_clear()
    yield set_
    get_settings.cache_clear()


def problems(text: str) -> list[tuple[str, str]]:
    loaded = load_files(
        {"a.yaml": text}, base_dir=Path("/srv/deploy"), env=SERVER_ENV, strict=False
    )
    return [(p.loc, p.reason) for p in loaded.problems]


def password_of(text: str) -> object:
    [spec] = load_files({"a.yaml": text}, base_dir=Path("/srv/deploy"), env=SERVER_ENV).files
    return spec.connector.source.config["password"]  # type: ignore[union-attr]


def test_the_default_allows_deploy_secret_variables_in_secret_fields() -> None:
    assert password_of(GOOD) == "pw-1"


@pytest.mark.parametrize("var", ["CONVEYOR_SECRET_KEY", "CONVEYOR_DATABASE_URL", "PREFECT_API_URL"])
def test_conveyors_own_settings_are_never_read_whatever_the_setting(
    allow: object, var: str
) -> None:
    allow("*,CONVEYOR_*,PREFECT_*,CONVEYOR_SECRET_KEY")  # type: ignore[operator]
    found = problems(GOOD.replace(REF, "${" + var + "}"))
    assert found == [
        (
            "a.yaml:22:17",
            f"connector.source.config.password: environment variable {var} may not be used: "
            "Conveyor's and Prefect's own settings (CONVEYOR_*, PREFECT_*) are never read",
        )
    ]


def test_a_variable_the_admin_did_not_allow_is_refused() -> None:
    found = problems(GOOD.replace(REF, "${SALES_PW}"))
    assert found == [
        (
            "a.yaml:22:17",
            "connector.source.config.password: environment variable SALES_PW may not be used: "
            "allowed are DEPLOY_SECRET_* (setting CONVEYOR_DEPLOYMENT_ENV)",
        )
    ]


def test_an_admin_allows_a_name(allow: object) -> None:
    allow("SALES_PW")  # type: ignore[operator]
    assert password_of(GOOD.replace(REF, "${SALES_PW}")) == "pw-2"
    assert problems(GOOD)[0][1].endswith("allowed are SALES_PW (setting CONVEYOR_DEPLOYMENT_ENV)")


@pytest.mark.parametrize(
    ("old", "new", "where", "field"),
    [
        ("host: db.example.com", "host: ${CONVEYOR_DATABASE_URL}", "a.yaml:19:13", "host"),
        (
            "host: db.example.com",
            "host: ${DEPLOY_SECRET_SALES_DB_PASSWORD}",
            "a.yaml:19:13",
            "host",
        ),
        ("database: sales", "database: x-${HOME}", "a.yaml:20:17", "database"),
        ("username: reader", "username: ${CONVEYOR_SECRET_KEY}", "a.yaml:21:17", "username"),
    ],
)
def test_a_reference_outside_a_secret_field_is_an_error_naming_file_line_and_field(
    old: str, new: str, where: str, field: str
) -> None:
    found = problems(GOOD.replace(old, new))
    assert [loc for loc, _ in found] == [where]
    reason = found[0][1]
    assert reason.startswith(f"connector.source.config.{field}: $")
    assert "substituted only in secret fields" in reason
    # The server's values never reach the config.
    assert "the-server-key" not in reason and "conveyor:pw" not in reason


def test_a_reference_nested_in_an_override_is_an_error() -> None:
    text = GOOD.replace("tables: [orders]", "tables: ['${CONVEYOR_SECRET_KEY}']")
    [(loc, reason)] = problems(text)
    assert loc.startswith("a.yaml:")
    assert reason.startswith("connector.source_config_override.tables: ${CONVEYOR_SECRET_KEY}")


def test_env_allowed_rules() -> None:
    assert env_allowed("DEPLOY_SECRET_X", ["DEPLOY_SECRET_*"])
    assert not env_allowed("DEPLOY_SECRETX", ["DEPLOY_SECRET_X"])
    assert env_allowed("A", ["A"]) and not env_allowed("AB", ["A"])
    for var in ("CONVEYOR_SECRET_KEY", "conveyor_home", "PREFECT_API_KEY"):
        assert not env_allowed(var, ["*", var])
