"""How long to wait between attempts at an exchange call that failed for a transient reason."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded by a number of attempts and a total time budget."""

    max_attempts: int = 4
    base_delay_s: float = 0.25
    max_delay_s: float = 4.0
    budget_s: float = 15.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The pause after failed attempt `attempt` (1-based): uniform in [0, min(cap, base * 2^(attempt-1)))."""
        return rng.uniform(0, min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)))
