"""The catch-up verdict (services/catchup.decide): which missed scheduled times run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from conveyor.domain.vocabulary import CATCH_UP_MAX
from conveyor.services.catchup import decide, is_judged, later_due

T = datetime(2026, 3, 2, 12, 3, tzinfo=UTC)


def verdict(policy: str, late: float, later: int) -> str | None:
    return decide(
        policy=policy,
        scheduled_for=T,
        started=T + timedelta(seconds=late),
        later_due=later,
        grace=60,
    ).skip


def test_on_time_runs_whatever_the_policy() -> None:
    for policy in ("skip", "latest", "all"):
        assert verdict(policy, 59, 0) is None


def test_skip_skips_every_missed_time_and_says_why() -> None:
    why = verdict("skip", 61, 0)
    assert why == "missed at 2026-03-02 12:03 UTC while no worker ran; catch_up=skip"


def test_latest_runs_only_the_newest_missed_time() -> None:
    assert verdict("latest", 300, 2) is not None
    assert "catch_up=latest" in (verdict("latest", 300, 1) or "")
    assert verdict("latest", 300, 0) is None


def test_all_runs_each_missed_time_up_to_the_cap() -> None:
    assert verdict("all", 3600, CATCH_UP_MAX - 1) is None
    assert "newest 24" in (verdict("all", 3600, CATCH_UP_MAX) or "")


def test_later_due_counts_cron_times_in_the_connector_timezone() -> None:
    now = T + timedelta(minutes=3, seconds=10)
    assert later_due("* * * * *", "UTC", T, now) == 3
    assert later_due("0 * * * *", "UTC", T, now) == 0
    assert later_due(None, "UTC", T, now) == 0
    # 13:00 in Paris is 12:00 UTC: past by 12:03:10 UTC, so no later time is due.
    assert later_due("0 13 * * *", "Europe/Paris", T - timedelta(hours=1), now) == 1


def test_only_first_attempts_of_auto_scheduled_runs_are_judged() -> None:
    base = {"auto_scheduled": True, "tags": ["scheduled"], "run_count": 1, "expected_start_time": T}
    assert is_judged(SimpleNamespace(**base))
    assert not is_judged(SimpleNamespace(**{**base, "auto_scheduled": False}))
    assert not is_judged(SimpleNamespace(**{**base, "tags": ["trigger:manual"]}))
    assert not is_judged(SimpleNamespace(**{**base, "tags": ["run-record:4"]}))
    assert not is_judged(SimpleNamespace(**{**base, "run_count": 2}))
