"""Universe routes: the universe by tier, what was left out and why, the cached product list, the cache."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from services.universe.builder import Build, rfc3339
from services.universe.deps import BuilderDep, SettingsDep
from services.universe.filters import Exclusion, Member
from services.universe.settings import LatencyConfig, UniverseConfig

router = APIRouter(prefix="/v1", tags=["universe"])


class UniverseOut(BaseModel):
    core: list[Member]
    rotational: list[Member]
    size: int
    built_at: str
    products_fetched_at: str
    products_age_s: float
    stale: bool
    error: str | None
    ttl_s: float
    build_seconds: float


class ExcludedOut(BaseModel):
    built_at: str
    count: int
    by_reason: dict[str, int]
    excluded: list[Exclusion]


class ProductsOut(BaseModel):
    fetched_at: str
    ttl_s: float
    stale: bool
    count: int
    products: list[dict[str, Any]]


class CacheOut(BaseModel):
    enabled: bool
    adaptive_ttl: bool
    ttl_s: float | None
    fetched_at: str | None
    age_s: float | None
    fresh: bool
    hits: int
    misses: int
    expiries: int
    stale_serves: int
    lock_holder: str | None


def universe_out(build: Build) -> UniverseOut:
    return UniverseOut(
        core=[m for m in build.members if m.tier == "core"],
        rotational=[m for m in build.members if m.tier == "rotational"],
        size=len(build.members),
        built_at=rfc3339(build.built_at),
        products_fetched_at=rfc3339(build.products_fetched_at),
        products_age_s=round(time.time() - build.products_fetched_at, 3),
        stale=build.stale,
        error=build.error,
        ttl_s=build.ttl_s,
        build_seconds=build.build_seconds,
    )


@router.get("/universe", summary="The tradable universe by tier, with volume, spread and price")
async def get_universe(builder: BuilderDep) -> UniverseOut:
    return universe_out(await builder.current())


@router.get("/universe/excluded", summary="Every product left out of the last build, with its reason")
async def get_excluded(builder: BuilderDep) -> ExcludedOut:
    build = await builder.current()
    reasons: dict[str, int] = {}
    for exclusion in build.excluded:
        reasons[exclusion.reason] = reasons.get(exclusion.reason, 0) + 1
    return ExcludedOut(
        built_at=rfc3339(build.built_at), count=len(build.excluded), by_reason=reasons, excluded=build.excluded
    )


@router.get("/products", summary="The cached product list, as the exchange gave it")
async def get_products(builder: BuilderDep) -> ProductsOut:
    listing = await builder.cache.get()
    return ProductsOut(
        fetched_at=rfc3339(listing.fetched_at),
        ttl_s=listing.ttl_s,
        stale=listing.stale,
        count=len(listing.products),
        products=listing.products,
    )


@router.get("/cache", summary="The product-list cache: age, TTL in force, hits, misses, expiries, stale serves")
async def get_cache(builder: BuilderDep, settings: SettingsDep) -> CacheOut:
    cache = builder.cache
    entry = await cache.entry()
    stats = await cache.stats()
    now = time.time()
    return CacheOut(
        enabled=cache.enabled,
        adaptive_ttl=settings.universe.adaptive_ttl.enabled,
        ttl_s=entry.ttl_s if entry else None,
        fetched_at=rfc3339(entry.fetched_at) if entry else None,
        age_s=round(now - entry.fetched_at, 3) if entry else None,
        fresh=entry is not None and now - entry.fetched_at < entry.ttl_s,
        hits=stats["hit"],
        misses=stats["miss"],
        expiries=stats["expired"],
        stale_serves=stats["stale"],
        lock_holder=await cache.lock.holder(),
    )


@router.post("/cache/invalidate", summary="Drop the cached product list and build: the next request rebuilds (token)")
async def invalidate(builder: BuilderDep) -> dict[str, str]:
    await builder.invalidate()
    return {"status": "invalidated"}


@router.get("/config", summary="The validated universe configuration in force (YAML plus environment)")
async def get_config(settings: SettingsDep) -> dict[str, UniverseConfig | LatencyConfig]:
    return {"universe": settings.universe, "latency": settings.latency}
