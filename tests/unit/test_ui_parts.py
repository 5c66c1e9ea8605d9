"""The UI's plain functions: schedule presets, schema-driven fields, formatting, chart."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.errors import ValidationFailed
from conveyor.services.daily_stats import DayStats
from conveyor.web.ui import chart, schema_form
from conveyor.web.ui import connector_form as cf
from conveyor.web.ui.base import fmt_ago, fmt_duration, fmt_num
from conveyor.web.ui.connectors import prefect_ui_url
from conveyor.web.ui.runs import table_rows


@given(
    preset=st.sampled_from(["hourly", "every_6_hours", "daily", "weekly", "manual"]),
    hour=st.integers(0, 23),
    minute=st.integers(0, 59),
    weekday=st.sampled_from([d for d, _ in cf.WEEKDAYS]),
)
def test_presets_round_trip_through_cron(preset: str, hour: int, minute: int, weekday: str) -> None:
    chosen = cf.Schedule(preset, f"{hour:02d}:{minute:02d}", weekday, timezone="Europe/Paris")
    cron = cf.cron_for(chosen)
    back = cf.schedule_from_cron(cron, "Europe/Paris")
    assert back.preset == preset
    if preset in ("daily", "weekly"):
        assert back.time == chosen.time
    if preset == "weekly":
        assert back.weekday == weekday
    assert cf.cron_for(back) == cron


def test_other_expressions_stay_custom() -> None:
    s = cf.schedule_from_cron("*/15 8-18 * * 1-5")
    assert s.preset == "cron" and cf.cron_for(s) == "*/15 8-18 * * 1-5"


@pytest.mark.parametrize(
    ("schedule", "field", "reason"),
    [
        (cf.Schedule("daily", "25:00"), "schedule_time", "not a time"),
        (cf.Schedule("cron", cron=""), "cron", "enter a cron expression"),
        (cf.Schedule("cron", cron="* * *"), "cron", "expected 5 fields"),
        (cf.Schedule("cron", cron="0 0 31 2 *"), "cron", "never fires"),
        (cf.Schedule("yearly"), "schedule_preset", "unknown schedule"),
    ],
)
def test_bad_schedules_name_their_field(schedule: cf.Schedule, field: str, reason: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        cf.cron_for(schedule)
    assert info.value.problems[0].loc == field
    assert reason in info.value.problems[0].reason


def test_copy_override_keeps_what_the_form_does_not_show() -> None:
    current = {
        "tables": [{"name": "orders", "columns": ["id", "total"]}],
        "batch_size": 1000,
        "password": "********",
    }
    form = {"copy_mode": "tables", "tables": "orders", "primary_key": "id, region"}
    out = cf.copy_override(form, "sql_database", current)
    assert out["tables"] == current["tables"]  # same names: per-table settings kept
    assert out["batch_size"] == 1000 and out["password"] == "********"
    assert out["primary_key"] == ["id", "region"]
    out = cf.copy_override({"copy_mode": "query", "query": "SELECT 1"}, "sql_database", current)
    assert "tables" not in out and out["query"] == "SELECT 1"


def test_field_keys_map_problems_to_inputs() -> None:
    assert cf.field_key("schedule") == "cron"
    assert cf.field_key("source_config_override.tables") == "tables"
    assert cf.field_key("source_config_override") == "copy"
    assert cf.field_key("source.cfg.host") == "source.cfg.host"
    assert cf.field_key("tags.1") == "tags"
    assert cf.field_key("who-knows") == ""


def test_schema_fields_and_parsing() -> None:
    fields = schema_form.fields_for(
        "source",
        "sql_database",
        {"host": "db", "port": 5432, "password": "********"},
        exclude=schema_form.copy_fields("source", "sql_database"),
    )
    by_name = {f.name: f for f in fields}
    assert by_name["password"].kind == "password" and by_name["password"].is_set
    assert by_name["password"].value == ""
    assert by_name["port"].kind == "integer" and by_name["port"].value == "5432"
    assert by_name["backend"].kind == "select" and by_name["backend"].advanced
    assert by_name["schema"].label == "Schema"
    assert "tables" not in by_name
    form = {"cfg.host": " db2 ", "cfg.port": "", "cfg.password": "", "cfg.backend": "pyarrow"}
    values, cleared, problems = schema_form.parse(fields, form)
    assert values == {"host": "db2", "backend": "pyarrow"}
    assert "port" in cleared and "password" not in cleared
    assert problems == []
    merged = schema_form.merge(
        {"host": "db", "port": 5432, "password": "enc", "tables": ["t"]}, values, cleared
    )
    assert merged == {"host": "db2", "password": "enc", "tables": ["t"], "backend": "pyarrow"}
    _v, _c, problems = schema_form.parse(fields, {"cfg.port": "abc"})
    assert problems[0].loc == "port" and "whole number" in problems[0].reason


def test_json_and_list_fields() -> None:
    fields = schema_form.fields_for("destination", "rest_api", {})
    by_name = {f.name: f for f in fields}
    assert by_name["headers"].kind == "json" and by_name["use_multipart"].kind == "checkbox"
    values, _c, problems = schema_form.parse(
        fields,
        {
            "cfg.headers": '{"A": "b"}',
            "cfg.use_multipart": ["false", "true"],
            "cfg.url": "https://x",
        },
    )
    assert values["headers"] == {"A": "b"} and values["use_multipart"] is True and not problems
    _v, _c, problems = schema_form.parse(fields, {"cfg.headers": "{broken"})
    assert "not valid JSON" in problems[0].reason


def test_formatting() -> None:
    assert fmt_duration(None) == "—"
    assert fmt_duration(0.25) == "250 ms"
    assert fmt_duration(42) == "42 s"
    assert fmt_duration(192) == "3 min 12 s"
    assert fmt_duration(7500) == "2 h 5 min"
    assert fmt_num(1234567) == "1\u202f234\u202f567"
    now = datetime(2025, 1, 1, 12, tzinfo=UTC)
    assert fmt_ago(now - timedelta(minutes=3), now) == "3 min ago"
    assert fmt_ago(now + timedelta(hours=5), now) == "in 5 h"


def test_prefect_ui_url_is_derived_from_the_api_url() -> None:
    from conveyor.settings import Settings

    s = Settings(prefect_api_url="http://prefect:4200/api")
    assert prefect_ui_url(s) == "http://prefect:4200"
    s = Settings(prefect_api_url="http://prefect:4200/api", prefect_ui_url="https://p.example/")
    assert prefect_ui_url(s) == "https://p.example"


def test_table_rows_accepts_either_shape() -> None:
    assert table_rows({"b": {"rows": 2}, "a": 1, "c": {"row_count": 3}}) == [
        ("a", 1),
        ("b", 2),
        ("c", 3),
    ]


def test_chart() -> None:
    assert "No runs yet" in chart.render([])
    days = [
        DayStats(date(2026, 3, 1), runs=2, succeeded=2, failed=0, rows=1000, duration_seconds=60),
        DayStats(date(2026, 3, 2), runs=2, succeeded=1, failed=1, rows=2500, duration_seconds=10),
        DayStats(date(2026, 3, 4), runs=0, succeeded=0, failed=0, rows=0, duration_seconds=0),
    ]
    svg = str(chart.render(days))
    assert svg.count("<rect") == 3 and svg.count("<circle") == 2  # no runs: no duration
    assert svg.count('class="bar failed"') == 1 and "<polyline" in svg
    assert "2026-03-02 · 2 runs, 1 failed · 2\u202f500 rows · 5.0 s per run" in svg
    assert "5k" in svg and "30 s" in svg  # axes: 5 000 rows, 30 s average
