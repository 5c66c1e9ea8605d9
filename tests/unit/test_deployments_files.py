"""Deployment files without a database: the format, every bad-input case with its
file:line:col, secrets from the environment, relative paths, and the JSON schema."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml

from conveyor.deployments_io import json_schema, load_directory, load_files
from conveyor.errors import ValidationFailed

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deployments" / "example-connector-deployment.yaml"

GOOD = """\
name: orders-nightly
description: Orders every night
flow_name: run_connector_pipeline
entrypoint: conveyor.pipelines.flow:run_connector_pipeline
work_pool_name: default
work_queue_name: default
parameters:
  connector_id: 7
schedule:
  cron: "0 2 * * *"
  timezone: "Europe/Paris"
tags: [connector-7, scheduled, finance]
connector:
  name: orders
  source:
    name: sales-db
    type: sql_database
    config:
      host: db.example.com
      database: sales
      username: reader
      password: ${DEPLOY_SECRET_SALES_DB_PASSWORD}
  destination:
    name: lake
    type: duckdb
    config: {path: out/lake.duckdb}
  source_config_override:
    tables: [orders]
"""


def problems_of(files: dict[str, str | bytes], **kw: object) -> list[tuple[str, str]]:
    loaded = load_files(files, base_dir=Path("/srv/deploy"), strict=False, **kw)  # type: ignore[arg-type]
    return [(p.loc, p.reason) for p in loaded.problems]


def test_the_example_loads_with_its_paths_made_absolute() -> None:
    loaded = load_directory(EXAMPLE.parent)
    [spec] = loaded.files
    assert spec.model.name == "connector-1"
    assert spec.model.deployment_name() is None  # the default name: nothing stored
    assert spec.connector_id == 1
    assert spec.schedule == "0 */6 * * *" and spec.timezone == "UTC"
    assert spec.tags == []  # connector-1 and scheduled are markers, not user tags
    assert spec.connector is not None
    assert spec.connector.source.config == {
        "path": str(REPO / "deployments" / "data"),
        "file_pattern": "orders.csv",
        "format": "csv",
        "table_name": "orders",
    }
    assert spec.connector.source_config_override == {
        "write_disposition": "merge",
        "primary_key": "order_id",
    }
    csv = REPO / "deployments" / "data" / "orders.csv"
    assert csv.stat().st_size < 1_000_000
    assert len(csv.read_text().splitlines()) == 3001


def test_a_good_file_resolves_secrets_tags_and_relative_paths() -> None:
    loaded = load_files(
        {"orders.yaml": GOOD},
        base_dir=Path("/srv/deploy"),
        env={"DEPLOY_SECRET_SALES_DB_PASSWORD": "pw-1"},
    )
    [spec] = loaded.files
    assert spec.tags == ["finance"]
    assert spec.deployment_name == "orders-nightly"
    assert spec.connector is not None
    assert spec.connector.source.config is not None
    assert spec.connector.source.config["password"] == "pw-1"
    assert spec.connector.destination.config == {"path": "/srv/deploy/out/lake.duckdb"}


def test_the_seed_brief_format_still_loads() -> None:
    # The original README's file: a path entrypoint and no connector block.
    seed = """\
    name: example-connector-pipeline
    description: Example scheduled pipeline
    flow_name: run_connector_pipeline
    entrypoint: flows/dlt_pipeline_flow.py:run_connector_pipeline
    work_pool_name: default
    work_queue_name: default
    parameters:
      connector_id: 1
    schedule:
      cron: "0 */6 * * *"  # Every 6 hours
      timezone: "UTC"
    tags:
      - connector-1
      - scheduled
    """
    [spec] = load_files({"seed.yaml": textwrap.dedent(seed)}).files
    assert spec.connector is None and spec.connector_id == 1


def bad(text: str) -> str:
    return textwrap.dedent(text)


CASES = [
    pytest.param(
        {"a.yaml": GOOD.replace("  connector_id: 7\n", "  connector_id: 7\nshedule: 1\n")},
        ("a.yaml:9:1", "unknown key 'shedule'; did you mean 'schedule'?"),
        id="unknown-key",
    ),
    pytest.param(
        {"a.yaml": "name: x\nparameters:\n  connector_id: [1\n"},
        ("a.yaml:4:1", "YAML syntax error"),
        id="yaml-syntax",
    ),
    pytest.param(
        {"a.yaml": GOOD.replace("connector_id: 7", 'connector_id: "7"')},
        ("a.yaml:8:17", "parameters.connector_id: Input should be a valid integer"),
        id="wrong-type",
    ),
    pytest.param(
        {"a.yaml": GOOD.replace('"0 2 * * *"', '"0 2 * *"')},
        ("a.yaml:10:9", "schedule.cron: '0 2 * *' is not a cron expression"),
        id="invalid-cron",
    ),
    pytest.param(
        {"a.yaml": GOOD.replace('"Europe/Paris"', '"Mars/Olympus"')},
        ("a.yaml:11:13", "'Mars/Olympus' is not an IANA timezone"),
        id="invalid-timezone",
    ),
    pytest.param(
        {
            "a.yaml": GOOD,
            "b.yaml": GOOD.replace("orders-nightly", "other").replace("name: orders", "name: b"),
        },
        ("b.yaml:8:17", "connector_id '7' is also used by a.yaml:8:17"),
        id="connector-id-clash",
    ),
    pytest.param(
        {
            "a.yaml": GOOD.replace(
                "${DEPLOY_SECRET_SALES_DB_PASSWORD}", "${DEPLOY_SECRET_NOT_SET_ANYWHERE}"
            )
        },
        ("a.yaml:22:17", "environment variable DEPLOY_SECRET_NOT_SET_ANYWHERE is not set"),
        id="missing-env-var",
    ),
    pytest.param(
        {
            "a.yaml": GOOD,
            "b.yaml": GOOD.replace("connector_id: 7", "connector_id: 8")
            .replace("connector-7", "connector-8")
            .replace("name: orders\n", "name: orders-b\n"),
        },
        ("b.yaml:1:7", "deployment name 'orders-nightly' is also used by a.yaml:1:7"),
        id="same-name",
    ),
    pytest.param(
        {"a.yaml": GOOD.replace("${DEPLOY_SECRET_SALES_DB_PASSWORD}", "hunter2")},
        ("a.yaml:22:17", "a secret must be an ${ENV_VAR} reference"),
        id="literal-secret",
    ),
    pytest.param(
        {"a.yaml": "name: x\nname: y\n"},
        ("a.yaml:2:1", "duplicate key 'name'"),
        id="duplicate-key",
    ),
    pytest.param(
        {"a.yaml": GOOD.replace("type: duckdb", "type: oracle")},
        ("a.yaml:25:11", "unknown destination type 'oracle'"),
        id="unknown-type",
    ),
    pytest.param(
        {"a.yaml": GOOD.replace("      host: db.example.com", "      hots: db.example.com")},
        ("a.yaml:19:7", "unknown key 'hots'; did you mean 'host'?"),
        id="unknown-config-key",
    ),
    pytest.param(
        {"a.yaml": GOOD.replace("[connector-7,", "[connector-9,")},
        ("a.yaml:12:8", "tag 'connector-9' does not match parameters.connector_id 7"),
        id="wrong-marker-tag",
    ),
    pytest.param(
        {"a.yaml": GOOD.replace("name: orders-nightly", "name: connector-3")},
        ("a.yaml:1:7", "is the default name of connector 3"),
        id="default-name-of-another-connector",
    ),
    pytest.param(
        {"a.yaml": "a: &x [1]\nb: *x\n"},
        ("a.yaml:", "anchors and aliases are not supported"),
        id="aliases",
    ),
    pytest.param(
        {"a.yaml": GOOD.replace("  name: orders\n", "  name: orders\n  active: yes\n")},
        ("a.yaml:15:11", "connector.active: Input should be a valid boolean"),
        id="yaml-1.1-boolean",
    ),
    pytest.param(
        {"a.yaml": GOOD.replace("description: Orders every night", "description: !!binary aGk=")},
        ("a.yaml:2:14", "unsupported YAML tag"),
        id="yaml-tag",
    ),
    pytest.param({"a.yaml": ""}, ("a.yaml:1:1", "file is empty"), id="empty"),
    pytest.param({"a.yaml": b"name: \xff\n"}, ("a.yaml:1:1", "not UTF-8"), id="not-utf8"),
    pytest.param(
        {"a.yaml": "- name: x\n"}, ("a.yaml:1:1", "top level must be a mapping"), id="list"
    ),
    pytest.param(
        {"a.yaml": "name: x\n---\nname: y\n"},
        ("a.yaml:2:1", "YAML syntax error"),
        id="two-documents",
    ),
    pytest.param(
        {"a.yaml": GOOD.replace("[orders]", "[orders]\n    write_disposition: merge")},
        ("a.yaml:27:3", "write_disposition 'merge' needs primary_key"),
        id="override-invalid",
    ),
    pytest.param(
        {"a.yaml": GOOD.replace("[orders]", "[orders]\n    host: elsewhere.example.com")},
        ("a.yaml:29:11", "says where the source connects"),
        id="override-moves-the-source",
    ),
]


@pytest.mark.parametrize(("files", "expected"), CASES)
def test_each_bad_input_names_file_line_and_column(
    files: dict[str, str], expected: tuple[str, str]
) -> None:
    found = problems_of(files, env={"DEPLOY_SECRET_SALES_DB_PASSWORD": "pw"})
    loc, reason = expected
    assert any(p[0].startswith(loc) and reason in p[1] for p in found), found


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    wrong = (
        GOOD.replace('"0 2 * * *"', '"61 * * * *"')
        .replace('"Europe/Paris"', '"Nowhere/City"')
        .replace("[connector-7, scheduled, finance]", "[connector-7, bad tag]")
        .replace("${DEPLOY_SECRET_SALES_DB_PASSWORD}", "${DEPLOY_SECRET_MISSING_VAR}")
        .replace("connector_id: 7", "connector_id: 7\ncolour: blue")
    )
    (tmp_path / "a.yaml").write_text(wrong)
    (tmp_path / "b.yaml").write_text("name: [\n")
    with pytest.raises(ValidationFailed) as info:
        load_directory(tmp_path, env={})
    reasons = [str(p) for p in info.value.problems]
    assert len(reasons) == 6, reasons
    for text in ("61 * * * *", "Nowhere/City", "bad tag", "MISSING_VAR", "colour", "b.yaml:2:1"):
        assert any(text in r for r in reasons), (text, reasons)
    assert "nothing was applied" in (info.value.hint or "")


def test_a_10_mb_file_is_refused_without_being_read(tmp_path: Path) -> None:
    (tmp_path / "huge.yaml").write_bytes(b"name: x\n" + b"#" * 10_000_000 + b"\n")
    (tmp_path / "ok.yaml").write_text(GOOD)
    loaded = load_directory(tmp_path, env={"DEPLOY_SECRET_SALES_DB_PASSWORD": "x"}, strict=False)
    assert [(p.loc, p.reason[:14]) for p in loaded.problems] == [
        ("huge.yaml:1:1", "file is 10.0 M")
    ]
    assert [f.file for f in loaded.files] == ["ok.yaml"]


def test_only_top_level_yaml_files_count(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(GOOD)
    (tmp_path / "prefect.yaml").write_text("deployments: []\n")
    (tmp_path / "README.md").write_text("# hi\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.yaml").write_text("not: a deployment\n")
    (tmp_path / "..data").mkdir()  # what a Kubernetes ConfigMap mount looks like
    loaded = load_directory(tmp_path, env={"DEPLOY_SECRET_SALES_DB_PASSWORD": "x"})
    assert [f.file for f in loaded.files] == ["a.yaml"]


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed, match="does not exist"):
        load_directory(tmp_path / "nope")


def test_relative_paths_need_a_directory() -> None:
    found = problems_of({"a.yaml": GOOD}, env={"DEPLOY_SECRET_SALES_DB_PASSWORD": "x"})
    assert found == []
    loaded = load_files(
        {"a.yaml": GOOD}, env={"DEPLOY_SECRET_SALES_DB_PASSWORD": "x"}, strict=False
    )
    assert [p.reason for p in loaded.problems] == [
        "connector.destination.config.path: relative path 'out/lake.duckdb' needs the "
        "file's directory (send base_dir, or use an absolute path)"
    ]


def test_inline_endpoints_must_agree_across_files() -> None:
    other = (
        GOOD.replace("orders-nightly", "b")
        .replace("connector_id: 7", "connector_id: 8")
        .replace("connector-7", "connector-8")
        .replace("name: orders\n", "name: orders-b\n")
        .replace("database: sales", "database: other")
    )
    found = problems_of(
        {"a.yaml": GOOD, "b.yaml": other}, env={"DEPLOY_SECRET_SALES_DB_PASSWORD": "x"}
    )
    assert found == [
        (
            "b.yaml:16:5",
            "connector.source: source 'sales-db' is defined differently in a.yaml:16:5; "
            "an inline source must be the same in every file",
        )
    ]


def test_validation_without_the_environment(tmp_path: Path) -> None:
    loaded = load_files({"a.yaml": GOOD}, base_dir=tmp_path, env={}, check_env=False)
    assert loaded.files[0].connector is not None


def test_json_schema_accepts_the_example_and_rejects_unknown_keys() -> None:
    schema = json_schema()
    json.dumps(schema)  # serialisable as published
    validator = jsonschema.Draft202012Validator(schema)
    example = yaml.safe_load(EXAMPLE.read_text())
    assert list(validator.iter_errors(example)) == []
    good = yaml.safe_load(GOOD)
    assert list(validator.iter_errors(good)) == []
    example["shedule"] = {"cron": "* * * * *"}
    example["connector"]["source"]["config"]["pth"] = "x"
    errors = list(validator.iter_errors(example))
    assert any("shedule" in e.message for e in errors)
    assert errors, "unknown config key in an inline source must fail the schema"


def test_scalars_follow_yaml_1_2() -> None:
    text = (
        GOOD.replace("description: Orders every night", "description: 2024-01-01")
        .replace("tables: [orders]", "tables: [on, 'yes', 010]")
        .replace("connector_id: 7", "connector_id: 0o7")
    )
    [spec] = load_files(
        {"a.yaml": text}, env={"DEPLOY_SECRET_SALES_DB_PASSWORD": "x"}, strict=False
    ).files
    assert spec.description == "2024-01-01"  # a date stays the text written
    assert spec.connector_id == 7
    assert spec.connector is not None
    assert spec.connector.source_config_override == {"tables": ["on", "yes", 10]}
