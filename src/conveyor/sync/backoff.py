"""How long a connector waits before its sync is tried again."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: half the delay fixed, half random."""

    base: float = 2.0
    cap: float = 300.0
    # Prefect rejected the spec itself: retried slowly, in case the cause was elsewhere.
    terminal_base: float = 60.0
    terminal_cap: float = 3600.0
    # Prefect unreachable: the whole server, not the connector, is at fault, and a failed
    # probe costs one refused connection; retry soon so it converges soon after return.
    unavailable_cap: float = 30.0

    def delay(
        self,
        attempts: int,
        rng: random.Random,
        *,
        transient: bool = True,
        unavailable: bool = False,
    ) -> float:
        base, cap = (self.base, self.cap) if transient else (self.terminal_base, self.terminal_cap)
        if unavailable:
            cap = min(cap, self.unavailable_cap)
        full = min(cap, base * 2.0 ** max(0, attempts - 1))
        return full / 2 + rng.uniform(0, full / 2)
