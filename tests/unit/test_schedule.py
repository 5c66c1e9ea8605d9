from datetime import UTC, datetime

import pytest

from conveyor.domain import schedule
from conveyor.errors import ValidationFailed


@pytest.mark.parametrize(
    ("expr", "words"),
    [
        ("0 */6 * * *", "Every 6 hours"),
        ("0 * * * *", "Every hour"),
        ("*/15 * * * *", "Every 15 minutes"),
        ("30 2 * * *", "At 02:30"),
    ],
)
def test_describe_says_the_schedule_in_words(expr: str, words: str) -> None:
    assert schedule.describe(expr, "Europe/Paris") == f"{words}, Europe/Paris"


def test_no_schedule_means_manual_only() -> None:
    assert schedule.describe(None) == "Manual only"


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("61 * * * *", "not a valid cron expression"),
        ("every day", "expected 5 fields"),
        ("* * * * * *", "got 6"),
        ("", "got 0"),
    ],
)
def test_invalid_cron_is_rejected_with_the_reason(expr: str, reason: str) -> None:
    with pytest.raises(ValidationFailed) as exc:
        schedule.validate_cron(expr)
    assert exc.value.problems[0].loc == "schedule"
    assert reason in exc.value.problems[0].reason


def test_next_runs_are_in_the_connectors_timezone() -> None:
    after = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    runs = schedule.next_runs("0 9 * * *", "America/New_York", 2, after=after)
    assert [r.isoformat() for r in runs] == [
        "2026-03-01T09:00:00-05:00",  # 12:00 UTC is 07:00 in New York
        "2026-03-02T09:00:00-05:00",
    ]


def test_next_runs_follow_daylight_saving() -> None:
    after = datetime(2026, 3, 7, 0, 0, tzinfo=UTC)
    runs = schedule.next_runs("0 9 * * *", "America/New_York", 3, after=after)
    # 8 March 2026: the US switches to EDT; 9 o'clock stays 9 o'clock local time.
    assert [r.utcoffset().total_seconds() / 3600 for r in runs] == [-5, -4, -4]  # type: ignore[union-attr]


def test_unknown_timezone_is_rejected() -> None:
    with pytest.raises(ValidationFailed, match="'Mars/Olympus' is not an IANA timezone"):
        schedule.validate_timezone("Mars/Olympus")


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("Paris", "'Europe/Paris'"),
        ("new york", "'America/New_York'"),
        ("europe/paris", "'Europe/Paris'"),
        ("Europe/Pariss", "'Europe/Paris'"),
    ],
)
def test_a_wrong_timezone_suggests_the_zone_meant(typed: str, meant: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        schedule.validate_timezone(typed)
    (problem,) = caught.value.problems
    assert problem.loc == "timezone"
    assert problem.reason.startswith(
        f"'{typed}' is not an IANA timezone name: did you mean {meant}"
    )


def test_a_cron_that_never_fires_is_rejected() -> None:
    with pytest.raises(ValidationFailed, match="never fires"):
        schedule.validate_cron("0 0 31 2 *")
    assert schedule.validate_cron("0 0 29 2 *") == "0 0 29 2 *"  # leap years exist
