"""How many Prefect calls the gateway keeps in flight."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("conveyor.sync.gateway")


class LimitPolicy:
    """How many Prefect calls to keep in flight: more while the server keeps up, fewer
    as soon as it says it is busy.

    The Prefect server is one Python process whose best concurrency depends on what is
    behind it (bench/sync.py, 1,000 schedule changes): a PostgreSQL-backed server did them
    15-20 % faster with 16 in flight than with 4 and never answered 503; a SQLite-backed
    one serialises writes, answers 503 when they pile up (measured at 4 in flight: 2 % of
    schedule changes, 18 % of creates; more at 16) and was 15-30 % slower at 8 or 16 than
    at 4. So:

    - the limit starts at ``floor`` and goes up one level (4, 6, 8, 12, 16, ...) after
      ``patience`` windows of completions with no busy answer, up to ``maximum``. Only
      completions while every slot was taken count: then the limit, not the caller, set
      the pace;
    - a busy answer (503/429/5xx) halves it at once, never below ``floor``, and doubles
      ``patience`` (up to 32); each step up halves it again. A server that says busy even
      at the floor stays near it; one that said busy once, during a restart say, is back
      at the maximum after a few steps.

    Creates on a SQLite-backed server are the unsettled case: in one run the raw loops at
    8 and 16 in flight created 1,000 deployments in 144 s against 185 s at 4 (run 10),
    while later probes of this gateway held at 2, 4 and 8 found 4 the fastest and
    steadiest (600 creates: 100-108 s at 4, 112-162 s at 8, 127-194 s at 2; 8 doubled the
    503s). Identical passes there vary by up to 60 % (docs/benchmarks.md).

    Measuring throughput instead (hill-climbing on completions per second) was tried and
    dropped: one-second windows on a real server varied by ±30 % (its scheduler wakes every
    5 s), far more than the 15 % it had to tell apart, and the limit wandered (bench notes
    in docs/benchmarks.md).
    """

    LEVELS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)

    def __init__(self, maximum: int, floor: int = 4, *, window: int = 16) -> None:
        maximum = max(1, maximum)
        self.levels = [n for n in self.LEVELS if n < maximum] + [maximum]
        self._floor = self._level_at_most(floor)
        self._at = self._floor
        self.window = window
        self.patience = 1
        self.changes: list[int] = [self.limit]  # the limits it has had, in order
        self._clean = 0  # completions with every slot taken since the last change

    @property
    def limit(self) -> int:
        return self.levels[self._at]

    def completed(self, *, saturated: bool, busy: bool = False) -> None:
        """One call finished; ``saturated``: every slot was taken when it did."""
        if busy:
            self.patience = min(self.patience * 2, 32)
            self._move(max(self._floor, self._level_at_most(self.limit // 2)))
            return
        if not saturated:
            return
        self._clean += 1
        if self._clean >= self.patience * max(self.window, 2 * self.limit):
            self.patience = max(1, self.patience // 2)
            self._move(min(self._at + 1, len(self.levels) - 1))

    def _level_at_most(self, n: int) -> int:
        return max((i for i, level in enumerate(self.levels) if level <= n), default=0)

    def _move(self, at: int) -> None:
        self._clean = 0
        if at == self._at:
            return
        log.debug("Prefect calls in flight: %d -> %d", self.limit, self.levels[at])
        self._at = at
        self.changes.append(self.limit)
        if len(self.changes) > 1000:  # a reconciler runs for weeks: keep the recent path
            del self.changes[:500]


class AdaptiveLimit:
    """A semaphore whose size a ``LimitPolicy`` sets; ``release`` reports each call."""

    def __init__(self, maximum: int, floor: int = 4) -> None:
        self.policy = LimitPolicy(maximum, floor)
        self._in_flight = 0
        self._waiting = 0
        self._cond = asyncio.Condition()

    @property
    def limit(self) -> int:
        return self.policy.limit

    async def acquire(self) -> None:
        async with self._cond:
            self._waiting += 1
            try:
                await self._cond.wait_for(lambda: self._in_flight < self.limit)
            finally:
                self._waiting -= 1
            self._in_flight += 1

    async def release(self, *, busy: bool) -> None:
        async with self._cond:
            saturated = self._in_flight + self._waiting >= self.limit
            self._in_flight -= 1
            self.policy.completed(saturated=saturated, busy=busy)
            self._cond.notify_all()
