"""The conviction threshold in force: from the config, changed through the API or by dynamic conviction, kept in
Redis so every replica (and the next leader) uses the same one, with every change and its reason."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from redis.asyncio import Redis

from services.strategy.settings import PROFILES, DynamicConviction, ProfileName, StrategyConfig
from shared.redis import KeySpace

log = logging.getLogger(__name__)

Source = Literal["config", "api", "dynamic"]
KEPT_CHANGES = 100


class PolicyChange(BaseModel):
    at: float
    source: Source
    threshold: float
    profile: ProfileName
    reason: str


class Policy(BaseModel):
    profile: ProfileName
    threshold: float
    source: Source
    closed_trades_seen: int = 0


class PolicyIn(BaseModel):
    """A change of profile, of threshold, or both; the threshold within 0..1."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    profile: ProfileName | None = None
    min_conviction_to_propose: float | None = Field(default=None, ge=0, le=1)

    @model_validator(mode="after")
    def _something(self) -> PolicyIn:
        if self.profile is None and self.min_conviction_to_propose is None:
            raise ValueError("give profile, min_conviction_to_propose or both")
        return self


def adjusted(threshold: float, win_rate: float, config: DynamicConviction) -> tuple[float, str] | None:
    """Dynamic conviction's step: tighter below `tighten_below`, looser above `loosen_above`, within bounds."""
    if win_rate < config.tighten_below:
        # never past the ceiling, and never down (a threshold set above it by hand stays)
        target = max(min(threshold + config.step, config.ceiling), threshold)
        why = f"win rate {win_rate:.0%} below {config.tighten_below:.0%}: tighten"
    elif win_rate > config.loosen_above:
        target = min(max(threshold - config.step, config.floor), threshold)
        why = f"win rate {win_rate:.0%} above {config.loosen_above:.0%}: loosen"
    else:
        return None
    target = round(target, 6)
    return (target, why) if target != threshold else None


class PolicyStore:
    def __init__(self, redis: Redis, keys: KeySpace, config: StrategyConfig, *, clock: Callable[[], float] = time.time):
        self.redis = redis
        self.key = keys.key("policy")
        self.changes_key = keys.key("policy", "changes")
        self.config = config
        self.clock = clock

    async def current(self) -> Policy:
        raw = await self.redis.get(self.key)
        if raw is not None:
            return Policy.model_validate_json(raw)
        return Policy(profile=self.config.profile, threshold=self.config.threshold, source="config")

    async def changes(self) -> list[PolicyChange]:
        return [PolicyChange.model_validate_json(raw) for raw in await self.redis.lrange(self.changes_key, 0, -1)]

    async def change(
        self, update: PolicyIn, *, source: Source = "api", reason: str = "changed through the API"
    ) -> Policy:
        """A new profile (with its threshold, unless one is given too) or threshold, kept and logged."""
        policy = await self.current()
        profile = update.profile or policy.profile
        threshold = update.min_conviction_to_propose
        if threshold is None:
            threshold = PROFILES[profile].min_conviction_to_propose
        return await self._save(policy.model_copy(update={"profile": profile, "threshold": threshold}), source, reason)

    async def dynamic(self, *, closed_trades: int, win_rate: float) -> Policy:
        """Every `every_trades` closed trades, move the threshold by the win rate (dynamic conviction)."""
        policy = await self.current()
        config = self.config.dynamic_conviction
        if closed_trades < policy.closed_trades_seen:  # the executor's count started again: so do we
            policy = policy.model_copy(update={"closed_trades_seen": 0})
        if not config.enabled or closed_trades - policy.closed_trades_seen < config.every_trades:
            return policy
        step = adjusted(policy.threshold, win_rate, config)
        seen = policy.model_copy(update={"closed_trades_seen": closed_trades})
        if step is None:
            await self.redis.set(self.key, seen.model_dump_json())
            return seen
        threshold, reason = step
        return await self._save(seen.model_copy(update={"threshold": threshold}), "dynamic", reason)

    async def _save(self, policy: Policy, source: Source, reason: str) -> Policy:
        policy = policy.model_copy(update={"source": source})
        change = PolicyChange(
            at=self.clock(), source=source, threshold=policy.threshold, profile=policy.profile, reason=reason
        )
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self.key, policy.model_dump_json())
        pipe.lpush(self.changes_key, change.model_dump_json())
        pipe.ltrim(self.changes_key, 0, KEPT_CHANGES - 1)
        await pipe.execute()
        log.info("conviction threshold now %.4f (%s, profile %s): %s", policy.threshold, source, policy.profile, reason)
        return policy
