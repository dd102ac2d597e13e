"""Coinbase's own request limits, enforced by the simulator independently of our limiter."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ThrottleResult:
    allowed: bool
    limit: int
    remaining: int
    reset_s: float


@dataclass
class SlidingWindow:
    """At most `limit` requests per key in any `window_s` (a sliding window, like the exchange's)."""

    limit: int
    window_s: float = 1.0
    _seen: dict[str, deque[float]] = field(default_factory=dict)

    def hit(self, key: str, now: float) -> ThrottleResult:
        times = self._seen.setdefault(key, deque())
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if len(times) >= self.limit:
            return ThrottleResult(False, self.limit, 0, times[0] + self.window_s - now)
        times.append(now)
        return ThrottleResult(True, self.limit, self.limit - len(times), times[0] + self.window_s - now)
