"""Simulated time: wall-clock time scaled by SIM_SPEED from the moment the simulator started."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class SimClock:
    speed: float = 1.0
    wall: Callable[[], float] = time.time
    origin: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.origin = self.origin or self.wall()

    def now(self) -> float:
        """Simulated Unix time: at speed 1 it is wall-clock time; at speed 60 a real second is a simulated minute."""
        return self.origin + (self.wall() - self.origin) * self.speed
