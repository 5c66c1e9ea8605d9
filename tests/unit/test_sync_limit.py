"""How many Prefect calls the gateway keeps in flight: ``LimitPolicy`` against simulated
servers, and ``AdaptiveLimit`` under real asyncio tasks."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable

import pytest

from conveyor.sync.limit import AdaptiveLimit, LimitPolicy


def serve(policy: LimitPolicy, calls: int, busy: Callable[[int], float]) -> Counter[int]:
    """``calls`` completions with every slot taken; ``busy(limit)`` is the chance that one
    is a busy answer. Returns how many completed at each limit."""
    rng = random.Random(7)
    seen = Counter[int]()
    for _ in range(calls):
        seen[policy.limit] += 1
        policy.completed(saturated=True, busy=rng.random() < busy(policy.limit))
    return seen


def test_a_server_that_never_says_busy_gets_the_maximum_soon() -> None:
    policy = LimitPolicy(16)
    seen = serve(policy, 1000, lambda n: 0.0)
    assert policy.changes == [4, 6, 8, 12, 16]
    assert seen[16] > 900, seen


def test_a_server_that_says_busy_even_at_the_floor_stays_near_it() -> None:
    # SQLite-backed Prefect: about 2 % busy answers at 4 in flight, more above
    policy = LimitPolicy(16)
    seen = serve(policy, 300, lambda n: 0.02 * n / 4)
    assert policy.limit <= 6 and policy.patience >= 8, policy.changes
    later = len(policy.changes)
    seen += serve(policy, 2700, lambda n: 0.02 * n / 4)
    assert policy.patience == 32
    assert max(policy.changes[later:], default=4) <= 6, policy.changes
    assert seen[4] > 0.9 * 3000, seen


def test_a_busy_answer_halves_at_once_but_not_below_the_floor() -> None:
    policy = LimitPolicy(16)
    serve(policy, 200, lambda n: 0.0)
    assert policy.limit == 16
    policy.completed(saturated=True, busy=True)
    assert policy.limit == 8 and policy.patience == 2
    policy.completed(saturated=True, busy=True)
    policy.completed(saturated=True, busy=True)
    assert policy.limit == 4 and policy.patience == 8


def test_after_a_busy_answer_it_climbs_more_slowly() -> None:
    quick, wary = LimitPolicy(16), LimitPolicy(16)
    wary.completed(saturated=True, busy=True)  # at the floor already: only patience grows
    assert wary.limit == 4
    serve(quick, 40, lambda n: 0.0)
    serve(wary, 40, lambda n: 0.0)
    assert quick.limit > wary.limit == 6
    serve(wary, 400, lambda n: 0.0)  # a busy answer once, during a restart say, is forgiven
    assert wary.limit == 16 and wary.patience == 1


def test_no_climb_while_the_caller_sets_the_pace() -> None:
    policy = LimitPolicy(16)
    for _ in range(1000):
        policy.completed(saturated=False)
    assert policy.changes == [4]


@pytest.mark.parametrize(
    ("maximum", "floor", "levels", "start"),
    [(1, 4, [1], 1), (5, 4, [1, 2, 3, 4, 5], 4), (16, 1, [1, 2, 3, 4, 6, 8, 12, 16], 1)],
)
def test_levels_run_from_the_floor_to_the_maximum(
    maximum: int, floor: int, levels: list[int], start: int
) -> None:
    policy = LimitPolicy(maximum, floor)
    assert policy.levels == levels and policy.limit == start
    serve(policy, 500, lambda n: 0.0)
    assert policy.limit == maximum


def test_the_limit_holds_under_real_tasks() -> None:
    """No call starts while as many as the limit are in flight, and the limit moves: up
    while calls succeed, down on a busy answer."""

    async def main() -> tuple[AdaptiveLimit, int, list[tuple[int, int]]]:
        limit = AdaptiveLimit(16)
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
            in_flight -= 1
            await limit.release(busy=i == 1500)

        await asyncio.gather(*(call(i) for i in range(3000)))
        return limit, peak, over

    limit, peak, over = asyncio.run(main())
    assert over == []
    assert peak == 16
    assert limit.policy.changes[:5] == [4, 6, 8, 12, 16] and 8 in limit.policy.changes[5:]
