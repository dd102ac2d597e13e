"""Failures injected on demand into the simulator's /api/v3 answers, so clients can be tested against them."""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from services.exchange_sim.settings import Faults


class Fault(StrEnum):
    ERROR_5XX = "error_5xx"
    TIMEOUT = "timeout"
    HTML_429 = "html_429"
    MALFORMED_JSON = "malformed_json"


@dataclass
class FaultInjector:
    faults: Faults
    rng: random.Random

    def latency_s(self) -> float:
        """Added latency for one call: the configured base plus exponential jitter."""
        jitter = self.rng.expovariate(1 / self.faults.latency_jitter_ms) if self.faults.latency_jitter_ms else 0.0
        return (self.faults.latency_ms + jitter) / 1000

    def pick(self) -> Fault | None:
        """At most one fault per call, each with its configured probability."""
        draw = self.rng.random()
        for fault, fraction in (
            (Fault.ERROR_5XX, self.faults.error_5xx_fraction),
            (Fault.TIMEOUT, self.faults.timeout_fraction),
            (Fault.HTML_429, self.faults.html_429_fraction),
            (Fault.MALFORMED_JSON, self.faults.malformed_json_fraction),
        ):
            if draw < fraction:
                return fault
            draw -= fraction
        return None
