"""The quota decision as Redis Lua scripts (GCRA over linked pools) and the typed view of their replies."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from shared.ratelimits import Priority, RateLimitConfig
from shared.redis import KeySpace

LUA_DIR = Path(__file__).resolve().parent / "lua"
ACQUIRE_LUA = (LUA_DIR / "acquire.lua").read_text()
PENALTY_LUA = (LUA_DIR / "penalty.lua").read_text()
# Usage buckets per utilization window: the window slides in steps of window / SLOTS.
SLOTS = 10
HEADER = 7
PER_POOL = 8
ARGS_PER_POOL = 4


class Code(IntEnum):
    DENIED = 0
    GRANTED = 1
    SHED = 2
    PENALTY = 3
    TOO_COSTLY = 4
    PEEK = 5


REASONS = {Code.DENIED: "limit", Code.SHED: "shed", Code.PENALTY: "penalty"}


@dataclass(frozen=True, slots=True)
class PoolState:
    pool: str
    utilization_pct: float
    remaining: int
    blocked_until_us: int
    rate: float
    burst: int
    overridden: bool
    clients: int
    deferred: bool


@dataclass(frozen=True, slots=True)
class Decision:
    code: Code
    wait_us: int
    retry_after_us: int
    pool: str | None
    remaining: int
    utilization_pct: float
    now_us: int
    pools: tuple[PoolState, ...]

    @property
    def granted(self) -> bool:
        return self.code is Code.GRANTED

    def then(self, later: Decision) -> Decision:
        """This decision followed by one on some of the same pools (a reservation's deferred pools)."""
        pools = {state.pool: state for state in self.pools} | {state.pool: state for state in later.pools}
        return Decision(
            code=later.code,
            wait_us=later.wait_us,  # still to sleep; what was slept already is the caller's to count
            retry_after_us=later.retry_after_us,
            pool=later.pool,
            remaining=min(self.remaining, later.remaining),
            utilization_pct=max(self.utilization_pct, later.utilization_pct),
            now_us=later.now_us,
            pools=tuple(pools[state.pool] for state in self.pools),
        )


@dataclass(frozen=True, slots=True)
class EndpointPlan:
    """What the script needs for one endpoint, computed once: keys and per-priority arguments."""

    pools: tuple[str, ...]
    keys: tuple[str, ...]  # the pools' hashes, then their client sets
    argv_by_priority: dict[Priority, tuple[str, ...]]

    def subset(self, pools: tuple[str, ...]) -> EndpointPlan:
        """The same endpoint restricted to some of its pools (a reservation's deferred ones)."""
        index = [self.pools.index(p) for p in pools]
        n = len(self.pools)
        keys = tuple(self.keys[i] for i in index) + tuple(self.keys[n + i] for i in index)
        argv = {
            priority: tuple(arg for i in index for arg in tail[ARGS_PER_POOL * i : ARGS_PER_POOL * (i + 1)])
            for priority, tail in self.argv_by_priority.items()
        }
        return EndpointPlan(pools, keys, argv)


def pool_key(keys: KeySpace, pool: str) -> str:
    return keys.key("pool", pool)


def clients_key(keys: KeySpace, pool: str) -> str:
    return keys.key("clients", pool)


def build_plans(config: RateLimitConfig, keys: KeySpace) -> dict[str, EndpointPlan]:
    """One plan per endpoint; a pool's rate and burst here are the YAML values (Redis overrides win)."""
    plans = {}
    for name, endpoint in config.endpoints.items():
        pools = tuple(endpoint.pools)
        argv = {}
        for priority in Priority:
            threshold = config.max_utilization(priority)
            tail: list[str] = []
            for pool in pools:
                limit = config.pools[pool]
                tail += [repr(limit.rate), str(limit.burst), str(endpoint.pools[pool]), repr(threshold)]
            argv[priority] = tuple(tail)
        all_keys = tuple(pool_key(keys, p) for p in pools) + tuple(clients_key(keys, p) for p in pools)
        plans[name] = EndpointPlan(pools, all_keys, argv)
    return plans


def script_args(
    config: RateLimitConfig,
    plan: EndpointPlan,
    *,
    cost: int,
    priority: Priority,
    max_wait_us: int,
    client_id: str = "",
    now_us: int | None = None,
) -> list[str]:
    """ARGV of acquire.lua; `now_us` is only given by tests that drive time themselves.

    Only critical requests may hold a future slot: a reservation pushes the pool's schedule ahead, and an
    order arriving after a crowd of waiting market-data requests would otherwise queue behind all of them.
    """
    head = [
        "" if now_us is None else str(now_us),
        str(cost),
        str(max_wait_us),
        str(config.utilization_window_s * 1_000_000),
        str(SLOTS),
        repr(1 - config.safety_margin_pct / 100),
        "1" if priority is Priority.CRITICAL else "0",
        client_id,
        str(config.client_ttl_s * 1_000_000),
    ]
    return head + list(plan.argv_by_priority[priority])


def parse_decision(plan: EndpointPlan, reply: list[int]) -> Decision:
    """Turn the script's flat integer reply into a Decision."""
    code = Code(reply[0])
    pools = tuple(
        PoolState(
            pool=name,
            utilization_pct=min(reply[base] / 100, 100.0),
            remaining=max(reply[base + 1], 0),
            blocked_until_us=reply[base + 2],
            rate=reply[base + 3] / 1000,
            burst=reply[base + 4],
            overridden=bool(reply[base + 5]),
            clients=reply[base + 6],
            deferred=bool(reply[base + 7]),
        )
        for name, base in zip(plan.pools, range(HEADER, HEADER + PER_POOL * len(plan.pools), PER_POOL), strict=True)
    )
    return Decision(
        code=code,
        wait_us=reply[1],
        retry_after_us=reply[2],
        pool=plan.pools[reply[3] - 1] if reply[3] else None,
        remaining=max(reply[4], 0),
        utilization_pct=min(reply[5] / 100, 100.0),
        now_us=reply[6],
        pools=pools,
    )
