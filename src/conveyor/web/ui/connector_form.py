"""The connector form's data: schedule presets, what to copy, and mapping errors to fields.

Routes live in ``connector_edit.py``; the Advanced section (job variables) in
``job_variables_form.py``. This module is plain functions over form values so
it can be tested without a browser.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from croniter import CroniterBadDateError

from conveyor.domain.models import ConnectorOut
from conveyor.domain.retry_policy import default_policy
from conveyor.domain.schedule import next_runs, validate_cron
from conveyor.errors import FieldProblem, ValidationFailed
from conveyor.pipelines.contract import ConveyorType, CopyField
from conveyor.pipelines.registry import get_type, list_types
from conveyor.web.ui import table_picks
from conveyor.web.ui.job_variables_form import JV, JV_INPUTS, job_variable_values

PRESETS: list[tuple[str, str]] = [
    ("hourly", "Every hour"),
    ("every_6_hours", "Every 6 hours"),
    ("daily", "Daily at a time"),
    ("weekly", "Weekly on a day"),
    ("manual", "Manual only (no schedule)"),
    ("cron", "Custom cron expression"),
]
PRESET_CRON = {"hourly": "0 * * * *", "every_6_hours": "0 */6 * * *"}
WEEKDAYS: list[tuple[str, str]] = [
    ("1", "Monday"),
    ("2", "Tuesday"),
    ("3", "Wednesday"),
    ("4", "Thursday"),
    ("5", "Friday"),
    ("6", "Saturday"),
    ("0", "Sunday"),
]
WRITE_MODES: list[tuple[str, str]] = [
    ("", "Automatic"),
    ("replace", "Replace all rows"),
    ("append", "Append new rows"),
    ("merge", "Merge by primary key"),
]
# The catch_up choices with one line each (what happens to scheduled times missed while the
# worker or the whole platform was down).
CATCH_UP_CHOICES: list[tuple[str, str, str]] = [
    ("latest", "Run once", "One run for all the missed times, as soon as it can (the default)."),
    ("skip", "Skip them", "None of the missed times runs; the next scheduled time does."),
    ("all", "Run each", "One run per missed time, oldest first, at most 24."),
]
# The schema_changes choices (new columns in the source), with one line each.
SCHEMA_CHANGE_CHOICES: list[tuple[str, str, str]] = [
    ("propagate", "Add them", "New columns are added to the destination's tables (default)."),
    ("ignore_new_columns", "Ignore them", "Rows load without the new columns' values."),
    ("pause", "Pause", "The run loads nothing and the connector is paused until you decide."),
]
_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_DAILY = re.compile(r"^(\d{1,2}) (\d{1,2}) \* \* \*$")
_WEEKLY = re.compile(r"^(\d{1,2}) (\d{1,2}) \* \* ([0-6])$")


@dataclass
class Schedule:
    """The schedule part of the form."""

    preset: str = "daily"
    time: str = "02:00"
    weekday: str = "1"
    cron: str = ""
    timezone: str = "UTC"


def schedule_from_cron(cron: str | None, timezone: str = "UTC") -> Schedule:
    """Recognise the preset an expression came from, so the edit form shows it that way."""
    if not cron:
        return Schedule(preset="manual", timezone=timezone)
    for preset, expr in PRESET_CRON.items():
        if cron == expr:
            return Schedule(preset=preset, cron=cron, timezone=timezone)
    if m := _DAILY.match(cron):
        minute, hour = int(m[1]), int(m[2])
        if minute < 60 and hour < 24:
            return Schedule("daily", f"{hour:02d}:{minute:02d}", cron=cron, timezone=timezone)
    if m := _WEEKLY.match(cron):
        minute, hour = int(m[1]), int(m[2])
        if minute < 60 and hour < 24:
            return Schedule(
                "weekly", f"{hour:02d}:{minute:02d}", m[3], cron=cron, timezone=timezone
            )
    return Schedule(preset="cron", cron=cron, timezone=timezone)


def schedule_from_form(form: Mapping[str, Any]) -> Schedule:
    return Schedule(
        preset=str(form.get("schedule_preset") or "daily"),
        time=str(form.get("schedule_time") or "02:00").strip(),
        weekday=str(form.get("schedule_weekday") or "1"),
        cron=str(form.get("cron") or "").strip(),
        timezone=str(form.get("timezone") or "UTC").strip(),
    )


def cron_for(s: Schedule) -> str | None:
    """The 5-field cron for the chosen preset; ValidationFailed names the field at fault."""
    if s.preset == "manual":
        return None
    if s.preset in PRESET_CRON:
        return PRESET_CRON[s.preset]
    if s.preset in ("daily", "weekly"):
        m = _TIME.match(s.time)
        if not m:
            raise ValidationFailed.field("schedule_time", f"'{s.time}' is not a time like 02:30")
        base = f"{int(m[2])} {int(m[1])} * *"
        if s.preset == "daily":
            return f"{base} *"
        if s.weekday not in {d for d, _ in WEEKDAYS}:
            raise ValidationFailed.field("schedule_weekday", "choose a day of the week")
        return f"{base} {s.weekday}"
    if s.preset == "cron":
        if not s.cron:
            raise ValidationFailed.field("cron", "enter a cron expression, e.g. 30 2 * * 1-5")
        cron = validate_cron(s.cron, loc="cron")
        try:
            next_runs(cron, "UTC", 1)
        except (CroniterBadDateError, ValueError):
            # croniter accepts dates that do not exist (31 February) but never fires them.
            raise ValidationFailed.field(
                "cron", f"'{s.cron}' is not a valid cron expression: it never fires"
            ) from None
        return cron
    raise ValidationFailed.field("schedule_preset", f"unknown schedule choice '{s.preset}'")


# --- what to copy ----------------------------------------------------------------------


def split_list(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"[,\n]", text) if p.strip()]


def _names(tables: Any) -> list[str]:
    if not isinstance(tables, list):
        return []
    return [t["name"] if isinstance(t, dict) else str(t) for t in tables]


def _copy_form_names() -> list[str]:
    """Every input any source type's copy form shows."""
    names = [f.name for t in list_types("source") for f in t.copy_form]
    return list(dict.fromkeys(names))


def _per_table_names() -> set[str]:
    return {f.name for t in list_types("source") for f in t.copy_form if f.per_table}


def copy_values(override: Mapping[str, Any]) -> dict[str, Any]:
    """The 'what to copy' inputs, filled from a connector's source override; per-table
    items are shown as chosen table rows (``table_rows``), not as typed names."""
    pk = override.get("primary_key")
    choices = [f for t in list_types("source") for f in t.copy_form if f.choice]
    chosen = next((f.choice for f in choices if override.get(f.name)), "")
    out = {
        "copy_mode": chosen or (choices[0].choice if choices else ""),
        "write_disposition": str(override.get("write_disposition") or ""),
        "primary_key": ", ".join(pk) if isinstance(pk, list) else str(pk or ""),
        "cursor_column": str(override.get("cursor_column") or ""),
    }
    for name in _copy_form_names():
        value = override.get(name)
        out[name] = ", ".join(_names(value)) if isinstance(value, list) else str(value or "")
    rows: list[table_picks.TableRow] = []
    for name in _per_table_names() & set(override):
        value = override.get(name)
        rows = table_picks.rows({}, table_picks.settings_from_override(value), _names(value))
        out[name] = ""
    return {**out, "table_rows": rows}


def copy_override(
    form: Mapping[str, Any],
    source_type: str | None,
    current: Mapping[str, Any],
    problems: list[FieldProblem] | None = None,
) -> dict[str, Any]:
    """The source override the form asks for; keys the form does not show are kept.

    The inputs are the source type's copy form (``ConveyorType.copy_form``)."""
    info: ConveyorType | None = get_type("source", source_type) if source_type else None
    owned = (
        info.copy_fields
        if info
        else frozenset().union(*(t.copy_fields for t in list_types("source")))
    )
    out = {k: v for k, v in current.items() if k not in owned}

    def text(key: str) -> str:
        return str(form.get(key) or "").strip()

    fields = info.copy_form if info else ()
    choices = [f.choice for f in fields if f.choice]
    chosen = text("copy_mode") if text("copy_mode") in choices else (choices[0] if choices else "")
    for f in fields:
        if f.choice and f.choice != chosen:
            continue
        value = _copy_value(f, form, text(f.name), current.get(f.name), problems)
        if value is not None:
            out[f.name] = value
    if text("write_disposition"):
        out["write_disposition"] = text("write_disposition")
    pk = split_list(text("primary_key"))
    if pk:
        out["primary_key"] = pk[0] if len(pk) == 1 else pk
    if text("cursor_column"):
        out["cursor_column"] = text("cursor_column")
    return out


def _copy_value(
    f: CopyField,
    form: Mapping[str, Any],
    typed: str,
    kept: Any,
    problems: list[FieldProblem] | None = None,
) -> Any:
    """One copy input's value for the override (None: leave it out)."""
    if not f.many:
        return typed or None
    picked = (_getlist(form, "table") if f.discover else []) + split_list(typed)
    names = list(dict.fromkeys(picked))
    if not names:
        return None
    if f.per_table:  # each ticked table with the settings of its row
        return table_picks.items_from_form(form, names, kept, [] if problems is None else problems)
    # Unchanged names keep their per-item settings (columns, keys, endpoints).
    return kept if _names(kept) == names else names


def _getlist(form: Mapping[str, Any], key: str) -> list[str]:
    getlist = getattr(form, "getlist", None)
    if getlist is None:
        value = form.get(key)
        return [str(value)] if value else []
    return [str(v) for v in getlist(key) if v]


# --- if a run fails or is missed ------------------------------------------------------


def retry_values(policy: Any) -> dict[str, str]:
    """The retry inputs, filled from a connector's policy (a model, a dict, or None)."""
    if hasattr(policy, "model_dump"):
        policy = policy.model_dump()
    policy = policy if isinstance(policy, dict) else {}
    backoff = policy.get("backoff_seconds") or []
    return {
        "retry_max_attempts": str(policy.get("max_attempts") or ""),
        "retry_backoff_seconds": ", ".join(str(b) for b in backoff),
    }


def recovery_words(c: Any) -> dict[str, str]:
    """The retry policy and catch-up choice in words, for the connector's page."""
    v = retry_values(getattr(c, "retry_policy", None) or default_policy())
    attempts = int(v["retry_max_attempts"] or 1)
    retry = (
        "Not retried (1 attempt)"
        if attempts <= 1
        else f"Up to {attempts} attempts, waiting {v['retry_backoff_seconds']} s"
    )
    chosen = str(getattr(c, "catch_up", None) or "latest")
    label = next((label for value, label, _ in CATCH_UP_CHOICES if value == chosen), chosen)
    policy = str(getattr(c, "schema_changes", None) or "propagate")
    said = next((label for value, label, _ in SCHEMA_CHANGE_CHOICES if value == policy), policy)
    pause_after = getattr(c, "auto_pause_after_failures", None)
    sla = getattr(c, "freshness_sla_minutes", None)
    return {
        "retry": retry,
        "catch_up": f"{label} ({chosen})",
        "schema_changes": f"{said} ({policy})",
        "auto_pause": f"After {pause_after} failed runs in a row" if pause_after else "Off",
        "freshness": f"A run succeeds at least every {sla} minutes" if sla else "None",
    }


# Whole-number inputs for the alerting fields: empty means off (null).
ALERT_INPUTS = ("auto_pause_after_failures", "freshness_sla_minutes")


def alert_fields(values: Mapping[str, Any], problems: list[FieldProblem]) -> dict[str, Any]:
    """auto_pause_after_failures and freshness_sla_minutes from their inputs (None when
    empty); ranges are the model's to check, this only reads whole numbers."""
    out: dict[str, Any] = {}
    for name in ALERT_INPUTS:
        raw = str(values.get(name) or "").strip()
        if raw and not raw.isdigit():
            problems.append(FieldProblem(name, f"'{raw}' is not a whole number"))
        out[name] = int(raw) if raw.isdigit() else None
    return out


def alert_values(c: Any) -> dict[str, str]:
    """The alerting inputs, filled from a connector (empty: off)."""
    return {n: str(getattr(c, n, None) or "") for n in ALERT_INPUTS}


def retry_policy_from(
    values: Mapping[str, Any], problems: list[FieldProblem]
) -> dict[str, Any] | None:
    """{"max_attempts", "backoff_seconds"} from the two inputs; None when both are empty
    (the defaults). Ranges are the model's to check; this only reads numbers."""
    attempts = str(values.get("retry_max_attempts") or "").strip()
    backoff = split_list(str(values.get("retry_backoff_seconds") or ""))
    if not attempts and not backoff:
        return None
    policy: dict[str, Any] = {}
    if attempts:
        if attempts.isdigit():
            policy["max_attempts"] = int(attempts)
        else:
            problems.append(
                FieldProblem("retry_policy.max_attempts", f"'{attempts}' is not a whole number")
            )
    if backoff:
        bad = [b for b in backoff if not b.isdigit()]
        if bad:
            problems.append(
                FieldProblem(
                    "retry_policy.backoff_seconds",
                    f"'{bad[0]}' is not a whole number of seconds: write e.g. 60, 300, 900",
                )
            )
        else:
            policy["backoff_seconds"] = [int(b) for b in backoff]
    return policy


# --- values shown in the form ----------------------------------------------------------


def values_from_connector(c: ConnectorOut) -> dict[str, Any]:
    s = schedule_from_cron(c.schedule, c.timezone)
    return {
        "name": c.name,
        "description": c.description or "",
        "tags": ", ".join(c.tags),
        "source_mode": "existing",
        "source_id": str(c.source_id),
        "destination_mode": "existing",
        "destination_id": str(c.destination_id),
        "is_active": c.is_active,
        "version": str(c.version),
        "schedule": s,
        "catch_up": str(getattr(c, "catch_up", None) or "latest"),
        "schema_changes": str(getattr(c, "schema_changes", None) or "propagate"),
        **retry_values(getattr(c, "retry_policy", None)),
        **alert_values(c),
        **job_variable_values(getattr(c, "job_variables", None)),
        **copy_values(c.source_config_override),
    }


def values_from_form(form: Mapping[str, Any]) -> dict[str, Any]:
    keys = (
        "name",
        "description",
        "tags",
        "source_mode",
        "source_id",
        "destination_mode",
        "destination_id",
        "version",
        "copy_mode",
        *_copy_form_names(),
        "write_disposition",
        "primary_key",
        "cursor_column",
        "source.new.name",
        "source.new.type",
        "destination.new.name",
        "destination.new.type",
        "catch_up",
        "schema_changes",
        "retry_max_attempts",
        "retry_backoff_seconds",
        *ALERT_INPUTS,
        *JV_INPUTS,
    )
    out: dict[str, Any] = {k: str(form.get(k) or "") for k in keys}
    out["is_active"] = form.get("is_active") == "true"
    out["picked_tables"] = _getlist(form, "table")
    out["table_rows"] = table_picks.rows_from_form(form)
    out["discovered_json"] = str(form.get(table_picks.DISCOVERED) or "")
    out["schedule"] = schedule_from_form(form)
    return out


def empty_values(sources: list[Any], destinations: list[Any]) -> dict[str, Any]:
    return {
        "name": "",
        "description": "",
        "tags": "",
        "source_mode": "existing" if sources else "new",
        "source_id": str(sources[0].id) if sources else "",
        "destination_mode": "existing" if destinations else "new",
        "destination_id": str(destinations[0].id) if destinations else "",
        "is_active": True,
        "version": "",
        "schedule": Schedule(),
        "catch_up": "latest",
        "schema_changes": "propagate",
        **retry_values(default_policy()),
        **alert_values(None),
        **job_variable_values(None),
        **copy_values({}),
    }


# --- errors ----------------------------------------------------------------------------

_COPY_INPUTS = {
    "tables",
    "query",
    "file_pattern",
    "table_name",
    "resources",
    "write_disposition",
    "primary_key",
    "cursor_column",
}


def field_key(loc: str) -> str:
    """Which form field a problem's location belongs to ('' = the form as a whole)."""
    head, _, rest = loc.partition(".")
    if head in ("name", "description", "timezone", "cron", "schedule_time", "schedule_weekday"):
        return head
    if head == "schedule":
        return "cron"
    if head == "tags":
        return "tags"
    if head in ("source_id", "destination_id"):
        return head.removesuffix("_id")
    if head == "source_config_override":
        sub = rest.split(".", 1)[0]
        return sub if sub in _COPY_INPUTS else "copy"
    if head == "destination_config_override":
        return "destination"
    if head in ("source", "destination"):
        return loc  # inline endpoint fields: source.cfg.host, source.new.name
    if head == "retry_policy":
        sub = rest.split(".", 1)[0]
        return "retry_backoff_seconds" if sub == "backoff_seconds" else "retry_max_attempts"
    if head in ("catch_up", "schema_changes", *ALERT_INPUTS):
        return head
    if head == "table":
        return loc  # a chosen table's own setting: table.<name>.<part>
    if head == "job_variables":
        sub = rest.split(".", 1)[0]
        return JV + sub if JV + sub in JV_INPUTS else ""
    return ""


_TOLERATION_AT = re.compile(r"^job_variables\.tolerations\.(\d+)(?:\.(\w+))?")


def problems_to_errors(problems: list[FieldProblem]) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in problems:
        key = field_key(p.loc)
        reason = p.reason if key else str(p)
        if m := _TOLERATION_AT.match(p.loc):  # the model's list index: the user's nth
            reason = f"toleration {int(m[1]) + 1}{f' ({m[2]})' if m[2] else ''}: {reason}"
        out[key] = f"{out[key]}; {reason}" if key in out else reason
    return out
