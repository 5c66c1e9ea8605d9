"""Cron schedules: validation, a description in words, and the next run times."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from conveyor.errors import ValidationFailed

# Prefect accepts croniter's syntax; Conveyor narrows it to the classic 5 fields so a
# schedule means the same thing in every tool a user pastes it into.
CRON_FIELDS = ("minute", "hour", "day of month", "month", "day of week")


def validate_cron(expr: str, *, loc: str = "schedule") -> str:
    """Return the normalised 5-field cron expression, or raise naming what is wrong."""
    text = " ".join(expr.split())
    parts = text.split(" ") if text else []
    if len(parts) != 5:
        raise ValidationFailed.field(
            loc,
            f"'{expr}' is not a cron expression: expected 5 fields "
            f"({', '.join(CRON_FIELDS)}), got {len(parts)}",
        )
    try:
        croniter(text)
    except (CroniterBadCronError, ValueError, KeyError) as exc:
        raise ValidationFailed.field(
            loc, f"'{expr}' is not a valid cron expression: {exc}"
        ) from exc
    if not _ever_fires(text):
        raise ValidationFailed.field(loc, f"'{expr}' never fires (there is no such date)")
    return text


@lru_cache(maxsize=1024)
def _ever_fires(text: str) -> bool:
    """False for expressions that parse but match no date at all (31 February)."""
    try:
        croniter(text, datetime(2000, 1, 1), max_years_between_matches=8).get_next(datetime)
    except CroniterBadDateError:
        return False
    return True


def validate_timezone(name: str, *, loc: str = "timezone") -> str:
    """Return the IANA timezone name, or raise naming it and the zones it may have meant."""
    if name not in _timezones():
        close = suggest_timezones(name)
        hint = (
            "did you mean " + " or ".join(f"'{z}'" for z in close) + "?"
            if close
            else "e.g. 'Europe/Paris', 'America/New_York' or 'UTC'"
        )
        raise ValidationFailed.field(loc, f"'{name}' is not an IANA timezone name: {hint}")
    return name


def suggest_timezones(text: str, limit: int = 3) -> list[str]:
    """IANA zones a user may have meant: a city typed alone ("Paris", "new york"), the
    right name in the wrong case, or a near miss ("Europe/Pari")."""
    import difflib

    wanted = "_".join(text.strip().split()).lower()
    if not wanted:
        return []
    zones = sorted(_timezones())
    exact = [z for z in zones if z.lower() == wanted or z.lower().rsplit("/", 1)[-1] == wanted]
    if exact:
        return exact[:limit]
    lowered = {z.lower(): z for z in zones}
    near = difflib.get_close_matches(wanted, list(lowered), n=limit, cutoff=0.75)
    if near:
        return [lowered[n] for n in near]
    cities = {z.lower().rsplit("/", 1)[-1]: z for z in zones}
    return [cities[c] for c in difflib.get_close_matches(wanted, list(cities), n=limit)]


@lru_cache(maxsize=1)
def _timezones() -> frozenset[str]:
    zones = set(available_timezones())
    zones.add("UTC")
    return frozenset(zones)


def next_runs(
    expr: str, timezone: str, count: int = 5, *, after: datetime | None = None
) -> list[datetime]:
    """The next ``count`` fire times of ``expr`` in ``timezone`` (aware datetimes)."""
    try:
        tz = ZoneInfo(timezone)
    except ZoneInfoNotFoundError:
        tz = ZoneInfo("UTC")
    start = (after or datetime.now(tz)).astimezone(tz)
    # Cron has minute resolution: every instant within one minute has the same next runs,
    # so lists of connectors sharing a schedule compute it once per minute.
    minute = start.replace(second=0, microsecond=0)
    return list(_next_runs_cached(expr, timezone, count, minute))


@lru_cache(maxsize=2048)
def _next_runs_cached(
    expr: str, timezone: str, count: int, minute: datetime
) -> tuple[datetime, ...]:
    it = croniter(expr, minute)
    return tuple(it.get_next(datetime) for _ in range(count))


def describe(expr: str | None, timezone: str = "UTC") -> str:
    """The schedule in words: 'Every 6 hours, UTC'; 'Manual only' when there is none."""
    if not expr:
        return "Manual only"
    words = _describe_cron(expr)
    return f"{words}, {timezone}"


@lru_cache(maxsize=4096)
def _describe_cron(expr: str) -> str:
    special = _SPECIAL.get(expr)
    if special:
        return special
    try:
        from cron_descriptor import Options, get_description

        options = Options()
        options.use_24hour_time_format = True
        options.verbose = False
        text: str = get_description(expr, options)
    except Exception:  # cron_descriptor raises bare exceptions on odd input
        return f"Cron '{expr}'"
    return text[:1].upper() + text[1:]


def _every_n_hours(n: int) -> str:
    return "Every hour" if n == 1 else f"Every {n} hours"


_SPECIAL: dict[str, str] = {
    "* * * * *": "Every minute",
    "0 * * * *": "Every hour",
    **{f"0 */{n} * * *": _every_n_hours(n) for n in (2, 3, 4, 6, 8, 12)},
    **{f"*/{n} * * * *": f"Every {n} minutes" for n in (5, 10, 15, 20, 30)},
}


def interval_hint(expr: str) -> timedelta | None:
    """Rough period between runs (used to flag runs that are overdue)."""
    runs = next_runs(expr, "UTC", 2)
    return runs[1] - runs[0]
