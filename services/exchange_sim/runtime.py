"""Everything the simulator's routes share, built once at start."""

from __future__ import annotations

from dataclasses import dataclass

from services.exchange_sim.auth import NonceRegistry
from services.exchange_sim.exchange import SimExchange
from services.exchange_sim.faults import FaultInjector
from services.exchange_sim.metrics import SimMetrics
from services.exchange_sim.settings import SimConfig
from services.exchange_sim.throttle import SlidingWindow


@dataclass
class SimRuntime:
    exchange: SimExchange
    config: SimConfig
    metrics: SimMetrics
    faults: FaultInjector
    public_window: SlidingWindow
    private_window: SlidingWindow
    nonces: NonceRegistry | None
