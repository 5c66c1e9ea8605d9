"""How many Prefect calls the gateway keeps in flight: ``ThroughputProbe`` against a
simulated server whose throughput depends on concurrency (figures shaped like those
bench/sync.py measured), and ``AdaptiveLimit`` under real asyncio tasks."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from conveyor.sync.gateway import AdaptiveLimit, ThroughputProbe

# completions per second at each number in flight
POSTGRES_LIKE = {1: 12.0, 2: 20.0, 3: 26.0, 4: 30.0, 6: 33.0, 8: 35.0, 12: 37.0, 16: 38.0}
SQLITE_LIKE = {1: 5.0, 2: 7.0, 3: 8.0, 4: 8.5, 6: 7.2, 8: 6.5, 12: 5.5, 16: 5.0}


def serve(
    probe: ThroughputProbe,
    rates: dict[int, float],
    seconds: float,
    *,
    kind: str = "update",
    start: float = 0.0,
) -> Counter[int]:
    """Run ``probe`` against a saturated server with ±15 % noise; seconds spent per limit."""
    rng = random.Random(7)
    now, spent = start, Counter[int]()
    while now < start + seconds:
        step = rng.uniform(0.85, 1.15) / rates[probe.limit]
        spent[probe.limit] += step
        now += step
        probe.completed(kind, now, saturated=True)
    return spent


def test_a_server_that_does_more_with_more_in_flight_gets_more() -> None:
    probe = ThroughputProbe(16)
    spent = serve(probe, POSTGRES_LIKE, 60)
    assert probe.changes[0] == 4
    assert probe.limit >= 8, probe.changes
    assert sum(t for n, t in spent.items() if n >= 8) > 0.8 * 60, spent


def test_a_server_that_slows_down_with_more_in_flight_keeps_few() -> None:
    probe = ThroughputProbe(16)
    spent = serve(probe, SQLITE_LIKE, 300)
    assert probe.limit in (3, 4, 6), probe.changes
    assert max(probe.changes) <= 8, probe.changes  # went no further than a step past the best
    assert sum(t for n, t in spent.items() if n >= 6) < 0.08 * 300, spent  # tries back off


def test_it_tries_higher_again_and_notices_a_server_that_got_faster() -> None:
    probe = ThroughputProbe(16)
    serve(probe, SQLITE_LIKE, 120)
    assert probe.limit <= 6
    serve(probe, POSTGRES_LIKE, 120, start=120)  # same call kind, the server changed
    assert probe.limit >= 8, probe.changes


def test_a_busy_answer_halves_at_once_and_the_level_left_counts_as_slow() -> None:
    probe = ThroughputProbe(16, initial=8)
    probe.completed("create", 0.0, saturated=True, busy=True)
    assert probe.limit == 4
    assert probe.rates[("create", 8)] == 0.0
    serve(probe, {n: 10.0 for n in probe.levels}, 10, kind="create")
    assert 8 not in probe.changes[2:]  # not straight back up to where the server said busy


def test_no_figure_is_taken_while_the_caller_sets_the_pace() -> None:
    probe = ThroughputProbe(16)
    for i in range(1000):
        probe.completed("update", i * 0.01, saturated=False)
    assert probe.rates == {} and probe.changes == [4]


def test_a_window_mixing_call_kinds_is_not_judged() -> None:
    probe = ThroughputProbe(16)
    for i in range(1000):
        probe.completed("create" if i % 2 else "update", i * 0.01, saturated=True)
    assert probe.rates == {} and probe.changes == [4]


@pytest.mark.parametrize(("maximum", "levels"), [(1, [1]), (5, [1, 2, 3, 4, 5]), (16, None)])
def test_levels_end_at_the_maximum(maximum: int, levels: list[int] | None) -> None:
    probe = ThroughputProbe(maximum)
    assert probe.levels[-1] == maximum and probe.limit == min(4, maximum)
    if levels is not None:
        assert probe.levels == levels


def test_the_limit_holds_under_real_tasks() -> None:
    """No call starts while as many as the limit are in flight; the limit moves meanwhile."""

    async def main() -> tuple[AdaptiveLimit, int, list[tuple[int, int]]]:
        clock = [0.0]
        limit = AdaptiveLimit(16, clock=lambda: clock[0])
        in_flight = peak = 0
        over: list[tuple[int, int]] = []

        async def call(i: int) -> None:
            nonlocal in_flight, peak
            await limit.acquire()
            in_flight += 1
            peak = max(peak, in_flight)
            if in_flight > limit.limit:
                over.append((in_flight, limit.limit))
            await asyncio.sleep(0.001 * (i % 3))
            clock[0] += 0.02 / min(in_flight, 8)  # more in flight is faster up to 8
            in_flight -= 1
            await limit.release("update", busy=False)

        await asyncio.gather(*(call(i) for i in range(3000)))
        return limit, peak, over

    limit, peak, over = asyncio.run(main())
    assert over == []
    assert len(limit.probe.changes) > 1 and limit.limit >= 8, limit.probe.changes
    assert peak <= 16
