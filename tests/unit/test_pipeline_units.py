"""Small pure pieces of the pipelines: config mapping, explanations, summaries."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from conveyor.domain.vocabulary import merged_config
from conveyor.pipelines.explain import explain
from conveyor.pipelines.runner import RunStats, summary
from conveyor.pipelines.sources.filesystem import default_table_name
from conveyor.pipelines.sources.rest_api import RestApiSourceConfig, rest_config
from conveyor.pipelines.sources.sql_database import choose_backend


@pytest.mark.parametrize(
    ("pattern", "name"),
    [
        ("orders_*.csv", "orders"),
        ("*", "files"),
        ("sub/Daily Sales-*.jsonl", "daily_sales"),
        ("x.parquet", "x"),
    ],
)
def test_default_table_name(pattern: str, name: str) -> None:
    assert default_table_name(pattern) == name


def test_choose_backend_falls_back_for_unsafe_types() -> None:
    from sqlalchemy.dialects import postgresql as pg

    md = sa.MetaData()
    safe = sa.Table("a", md, sa.Column("id", sa.Integer), sa.Column("n", sa.Numeric(12, 2)))
    arr = sa.Table("b", md, sa.Column("tags", pg.ARRAY(sa.Text)))
    unbounded = sa.Table("c", md, sa.Column("n", sa.Numeric()))
    assert choose_backend(safe, "postgresql", "auto") == "connectorx"
    assert choose_backend(arr, "postgresql", "auto") == "pyarrow"
    assert choose_backend(unbounded, "postgresql", "auto") == "pyarrow"
    assert choose_backend(safe, "sqlite", "auto") == "pyarrow"
    assert choose_backend(safe, "postgresql", "sqlalchemy") == "sqlalchemy"


def test_rest_config_maps_auth_and_keys() -> None:
    cfg = RestApiSourceConfig.model_validate(
        {
            "base_url": "http://h/api",
            "auth_type": "api_key",
            "api_key": "k-123",
            "api_key_name": "X-Key",
            "resources": ["a"],
            "primary_key": "id",
        }
    )
    out = rest_config(cfg)
    auth = out["client"]["auth"]  # the credentials, bound to the base URL's origin

    def sent(url: str) -> dict[str, str]:
        import requests

        return dict(auth(requests.Request("GET", url).prepare()).headers)

    assert sent("http://h/api/a")["X-Key"] == "k-123"
    assert sent("http://h:80/other")["X-Key"] == "k-123"  # same origin, default port
    assert "X-Key" not in sent("http://elsewhere/api/a")
    assert "X-Key" not in sent("https://h/api/a")  # another scheme is another origin
    assert out["resource_defaults"] == {"write_disposition": "merge", "primary_key": "id"}


def test_merged_config_ignores_null_overrides() -> None:
    assert merged_config({"a": 1, "b": 2}, {"b": None, "c": 3}) == {"a": 1, "b": 2, "c": 3}


class FakeDbError(Exception):
    pass


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'connection to server at "db.local" (10.0.0.1), port 5432 failed: FATAL:  password '
            'authentication failed for user "app"',
            "refused the user name or password for user 'app'",
        ),
        (
            'connection to server at "127.0.0.1", port 1 failed: Connection refused',
            "Cannot reach the server at 127.0.0.1:1",
        ),
        ("cannot execute INSERT in a read-only transaction", "only read-only SELECT"),
    ],
)
def test_explain_database_errors(text: str, expected: str) -> None:
    wrapped = RuntimeError("pipeline step failed")
    wrapped.__cause__ = FakeDbError(text)
    assert expected in explain(wrapped).message


def test_explain_masks_secrets_and_url_passwords() -> None:
    exc = ValueError("boom postgresql://u:hunter22@h/db token tok-SECRET-9")
    why = explain(exc, ["tok-SECRET-9"])
    assert "hunter22" not in why.message and "tok-SECRET-9" not in why.message
    assert why.detail.startswith("ValueError:")


def test_summary_lines() -> None:
    stats = RunStats(
        rows={"b": 2, "a": 1000}, bytes=2048, schema_changes=[{"table": "a", "columns": ["x", "y"]}]
    )
    text = summary(stats, 1.25)
    assert text.startswith("Loaded 1,002 rows into 2 table(s) (a: 1,000, b: 2), 2.0 KiB, in 1.2 s.")
    assert "a (+2 columns)" in text
    assert summary(RunStats(), 0.5) == "No new rows (in 0.5 s)."


def test_guarded_step_hides_the_original_error() -> None:
    import traceback

    from conveyor.pipelines.flow import StepFailed, guarded

    def boom() -> None:
        raise RuntimeError("connect postgresql://u:topsecret9@h/db failed; key k-SECRET-77")

    with pytest.raises(StepFailed) as info:
        guarded(boom, secrets=("k-SECRET-77",))
    # no chained original error, and the message itself is masked
    assert info.value.__cause__ is None and info.value.__suppress_context__
    shown = "".join(traceback.format_exception_only(info.value))
    assert "topsecret9" not in shown and "k-SECRET-77" not in shown
    assert info.value.why.detail.startswith("RuntimeError: connect postgresql://u:********@h")


def test_check_of_a_missing_local_folder_fails_naming_it(tmp_path) -> None:
    from conveyor.pipelines.check import check

    missing = tmp_path / "nope"
    result = check("source", "filesystem", {"path": str(missing), "file_pattern": "*.csv"})
    assert not result.ok
    assert f"{missing} does not exist" in result.message
    assert check("source", "filesystem", {"path": str(tmp_path), "file_pattern": "*.csv"}).ok
