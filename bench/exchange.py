"""Benchmark of the exchange path: the simulator under wrk, and what ExchangeClient costs per call over a bare
HTTP GET of the same URL; prints one markdown table. Run: `python -m bench.exchange`."""

from __future__ import annotations

import math
import os
import secrets
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import httpx
import uvloop
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client import CollectorRegistry

from bench import wrk
from bench.measure import Op, Result, measure
from bench.ratelimit import delete_keys, ms, progress, wrk_result
from bench.service import ServiceProcess, load_config, wait_all_ready
from devtools.stack import ROOT
from shared.exchange import ApiKey, ExchangeClient, JwtSigner
from shared.quota import QuotaClient
from shared.ratelimits import RateLimitConfig
from shared.redis import create_redis
from shared.settings import DEV_API_TOKEN

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
TOKEN = DEV_API_TOKEN
WARMUP_S = 1.0
DURATION_S = 4.0
WRK_DURATION_S = 4
WRK_CONNECTIONS = (1, 16)
JWT_SAMPLES = 2_000

# Quota pools so large that the ratelimit service never makes a call wait.
UNLIMITED = 1_000_000
# The simulator's schema caps its own limits at 100,000/s (SimRateLimits, le=100_000): 1,000,000 is refused.
SIM_LIMIT_PER_S = 100_000

API = "/api/v3/brokerage"
PRODUCT = "BTC-USD"
BOOK_PRODUCTS = ("BTC-USD", "ETH-USD", "SOL-USD")
CANDLES = 300
GRANULARITY = "ONE_MINUTE"

PUBLIC_CANDLES = "candles, public /market path"
PRIVATE_CANDLES = "candles, private path (the client's)"
BOOK = "best_bid_ask, 3 products"

WRK = "simulator under wrk"
BARE_HTTPX = "(a) bare httpx.AsyncClient GET"
CLIENT = "(b) ExchangeClient + quota service"
BARE_AIOHTTP = "(c) bare aiohttp GET"
QUOTA_ONLY = "(d) QuotaClient.take alone"


@dataclass(frozen=True)
class Target:
    """One simulator URL: path, query and whether it needs a JWT."""

    endpoint: str
    path: str
    params: tuple[tuple[str, str], ...]
    private: bool

    def url(self, base: str) -> str:
        """The full URL of this target on the simulator at `base`."""
        return f"{base}{self.path}?{urlencode(self.params)}"


@dataclass(frozen=True)
class Row:
    """One line of the table: a measurement of one target."""

    endpoint: str
    result: Result
    sequential: bool


@dataclass
class Run:
    """Everything the report needs."""

    rows: list[Row]
    rss_mib: dict[str, float | None]
    problems: list[str]
    jwt_us: float
    load_before: float = math.nan


def candle_window(now: float) -> tuple[int, int]:
    """[start, end) of the last CANDLES complete minutes before `now`."""
    end = int(now) // 60 * 60
    return end - CANDLES * 60, end


def build_targets(now: float) -> dict[str, Target]:
    """The three URLs the benchmark requests, keyed by endpoint label."""
    start, end = candle_window(now)
    candle_params = (("start", str(start)), ("end", str(end)), ("granularity", GRANULARITY))
    book_params = tuple(("product_ids", p) for p in BOOK_PRODUCTS)
    return {
        PUBLIC_CANDLES: Target(PUBLIC_CANDLES, f"{API}/market/products/{PRODUCT}/candles", candle_params, False),
        PRIVATE_CANDLES: Target(PRIVATE_CANDLES, f"{API}/products/{PRODUCT}/candles", candle_params, True),
        BOOK: Target(BOOK, f"{API}/best_bid_ask", book_params, True),
    }


def unlimited_ratelimits(data: dict[str, Any]) -> dict[str, Any]:
    """ratelimits.yaml with every pool at UNLIMITED rate and burst; endpoints unchanged."""
    section = data["ratelimit"]
    section["pools"] = {name: {"rate": UNLIMITED, "burst": UNLIMITED} for name in section["pools"]}
    return data


def unthrottled_simulator(data: dict[str, Any]) -> dict[str, Any]:
    """exchange_sim.yaml with the simulator's own per-IP and per-key limits at their maximum."""
    data["exchange_sim"]["rate_limits"] = {"public_per_s": SIM_LIMIT_PER_S, "private_per_s": SIM_LIMIT_PER_S}
    # wrk repeats one pre-minted JWT for the private rows
    data["exchange_sim"]["reject_replayed_jwt"] = False
    return data


def write_configs(directory: Path) -> Path:
    """A CONFIG_DIR holding copies of config/*.yaml, with quota and simulator limits out of the way."""
    directory.mkdir(parents=True, exist_ok=True)
    edits = {"ratelimits.yaml": unlimited_ratelimits, "exchange_sim.yaml": unthrottled_simulator}
    for source in sorted((ROOT / "config").glob("*.yaml")):
        data = yaml.safe_load(source.read_text())
        edit = edits.get(source.name)
        (directory / source.name).write_text(yaml.safe_dump(edit(data) if edit else data, sort_keys=False))
    return directory


def start_simulator(*, config_dir: Path, key_prefix: str, log_dir: Path) -> ServiceProcess:
    """`python -m services.exchange_sim` on a free port."""
    return ServiceProcess.start(
        "exchange_sim",
        config_dir=config_dir,
        redis_url=REDIS_URL,
        key_prefix=key_prefix,
        token=TOKEN,
        log_dir=log_dir,
        service="exchange_sim",
    )


def new_api_key() -> ApiKey:
    """A throwaway CDP-style key: a fresh EC P-256 private key as PEM."""
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ApiKey(name=f"organizations/bench/apiKeys/{secrets.token_hex(8)}", secret=pem.decode())


def auth_headers(signer: JwtSigner, host: str, target: Target) -> dict[str, str]:
    """A pre-minted `Authorization` header for a private target (valid 120 s), none for a public one."""
    if not target.private:
        return {}
    return {"Authorization": f"Bearer {signer.token('GET', host, target.path)}"}


def jwt_cost_us(signer: JwtSigner, host: str, path: str) -> float:
    """Mean in-process cost of signing one ES256 JWT, in microseconds."""
    start = time.perf_counter()
    for _ in range(JWT_SAMPLES):
        signer.token("GET", host, path)
    return (time.perf_counter() - start) / JWT_SAMPLES * 1e6


def write_get_script(directory: Path, name: str, headers: dict[str, str]) -> Path:
    """A wrk Lua script sending GETs with these headers."""
    path = directory / f"{name}.lua"
    lines = ['wrk.method = "GET"', *(f'wrk.headers["{k}"] = [==[{v}]==]' for k, v in headers.items()), ""]
    path.write_text("\n".join(lines))
    return path


async def wrk_row(endpoint: str, url: str, script: Path, connections: int) -> Row:
    """1 s of wrk as a warm-up, then the measured run."""
    progress(f"  {WRK} {endpoint} c{connections} ...")
    await wrk.run(url, script, connections=connections, duration_s=1)
    stats = await wrk.run(url, script, connections=connections, duration_s=WRK_DURATION_S)
    return Row(endpoint, wrk_result(WRK, connections, [stats]), sequential=False)


async def bench_wrk(sim: ServiceProcess, signer: JwtSigner, targets: dict[str, Target], tmp: Path) -> list[Row]:
    """The public candles and best_bid_ask under wrk at each concurrency; the JWT is minted just before."""
    host = f"127.0.0.1:{sim.port}"
    rows = []
    for index, endpoint in enumerate((PUBLIC_CANDLES, BOOK)):
        target = targets[endpoint]
        script = write_get_script(tmp, f"get{index}", {"Host": host} | auth_headers(signer, host, target))
        rows += [await wrk_row(endpoint, target.url(sim.url), script, c) for c in WRK_CONNECTIONS]
    return rows


async def sequential_row(variant: str, endpoint: str, op: Op) -> Row:
    """One coroutine calling `op` back to back: warm-up, then the measured run."""
    progress(f"  {variant} {endpoint} c1 ...")
    return Row(endpoint, await measure(variant, [op], warmup_s=WARMUP_S, duration_s=DURATION_S), sequential=True)


def httpx_op(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> Op:
    """One GET through httpx; anything but 200 is an error."""

    async def op() -> bool:
        response = await client.get(url, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"GET answered {response.status_code}: {response.text[:120]}")
        return True

    return op


def aiohttp_op(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> Op:
    """One GET through aiohttp, body read; anything but 200 is an error."""

    async def op() -> bool:
        async with session.get(url, headers=headers) as response:
            body = await response.read()
            if response.status != 200:
                raise RuntimeError(f"GET answered {response.status}: {body[:120]!r}")
        return True

    return op


def candles_op(client: ExchangeClient, start: int, end: int) -> Op:
    """ExchangeClient.get_candles of the benchmark window; anything but CANDLES candles is an error."""

    async def op() -> bool:
        candles = await client.get_candles(PRODUCT, start=start, end=end, granularity=GRANULARITY)
        if len(candles) != CANDLES:
            raise RuntimeError(f"get_candles returned {len(candles)} candles, expected {CANDLES}")
        return True

    return op


def book_op(client: ExchangeClient) -> Op:
    """ExchangeClient.best_bid_ask of the three products; a missing book is an error."""

    async def op() -> bool:
        books = await client.best_bid_ask(BOOK_PRODUCTS)
        if len(books) != len(BOOK_PRODUCTS):
            raise RuntimeError(f"best_bid_ask returned {len(books)} books, expected {len(BOOK_PRODUCTS)}")
        return True

    return op


def quota_op(quota: QuotaClient) -> Op:
    """One quota take for get_candles, as the client does before each call."""

    async def op() -> bool:
        await quota.take("get_candles")
        return True

    return op


@dataclass(frozen=True)
class Callers:
    """The bare HTTP clients that make the baseline calls, and the signer of their JWTs."""

    bare: httpx.AsyncClient
    session: aiohttp.ClientSession
    signer: JwtSigner
    base_url: str

    @property
    def host(self) -> str:
        """The host:port the JWT's uri names."""
        return httpx.URL(self.base_url).netloc.decode()

    def bare_httpx(self, target: Target) -> Op:
        """(a) a GET of the target's URL, its JWT minted now."""
        return httpx_op(self.bare, target.url(self.base_url), auth_headers(self.signer, self.host, target))

    def bare_aiohttp(self, target: Target) -> Op:
        """(c) the same GET through aiohttp, its JWT minted now."""
        return aiohttp_op(self.session, target.url(self.base_url), auth_headers(self.signer, self.host, target))


async def paired_rows(callers: Callers, target: Target, client_op: Op) -> list[Row]:
    """(a), (b) and (c) of one endpoint back to back, so the ratio does not span a drift of the machine."""
    return [
        await sequential_row(BARE_HTTPX, target.endpoint, callers.bare_httpx(target)),
        await sequential_row(CLIENT, target.endpoint, client_op),
        await sequential_row(BARE_AIOHTTP, target.endpoint, callers.bare_aiohttp(target)),
    ]


async def bench_calls(sim: ServiceProcess, client: ExchangeClient, signer: JwtSigner, now: float) -> list[Row]:
    """Sequential per-call rows: the public candles bare, then each endpoint the client calls, then quota alone."""
    targets = build_targets(now)
    async with httpx.AsyncClient() as bare, aiohttp.ClientSession() as session:
        callers = Callers(bare, session, signer, sim.url)
        public = targets[PUBLIC_CANDLES]
        rows = [await sequential_row(BARE_HTTPX, public.endpoint, callers.bare_httpx(public))]
        rows += await paired_rows(callers, targets[PRIVATE_CANDLES], candles_op(client, *candle_window(now)))
        rows += await paired_rows(callers, targets[BOOK], book_op(client))
    rows.append(await sequential_row(QUOTA_ONLY, "get_candles quota", quota_op(client.quota)))
    return rows


def fallback_grants(registry: CollectorRegistry, config: RateLimitConfig) -> float:
    """Quota the client granted itself because the ratelimit service was out of reach."""
    samples = (
        registry.get_sample_value("trader_rate_limiter_fallback_grants_total", {"endpoint": name})
        for name in config.endpoints
    )
    return sum(value or 0.0 for value in samples)


def row_problems(rows: Sequence[Row]) -> list[str]:
    """Errors and denials recorded in the rows."""
    found = []
    for row in rows:
        r = row.result
        where = f"{r.variant} {row.endpoint} c{r.concurrency}"
        if r.denied:
            found.append(f"- {where}: {r.denied} denied")
        found += [f"- {where}: {count} x {error}" for error, count in r.errors.items()]
    return found


def service_problems(services: Sequence[ServiceProcess]) -> list[str]:
    """Warnings, errors and tracebacks the services logged."""
    return [f"- {s.name} log: {line}" for s in services for line in s.log_problems()]


async def bench_services(config_dir: Path, tmp: Path, prefix: str) -> Run:
    """Start the simulator and the ratelimit service, measure every row, stop both whatever happens."""
    config = load_config(config_dir)
    api_key = new_api_key()
    signer = JwtSigner(api_key)
    services: list[ServiceProcess] = []
    registry = CollectorRegistry()
    client: ExchangeClient | None = None
    try:
        sim = start_simulator(config_dir=config_dir, key_prefix=prefix, log_dir=tmp)
        services.append(sim)
        ratelimit = ServiceProcess.start(
            "ratelimit", config_dir=config_dir, redis_url=REDIS_URL, key_prefix=prefix, token=TOKEN, log_dir=tmp
        )
        services.append(ratelimit)
        await wait_all_ready(services, timeout_s=60.0)
        quota = QuotaClient(base_url=ratelimit.url, token=TOKEN, config=config, client_id="bench", registry=registry)
        client = ExchangeClient(base_url=sim.url, quota=quota, registry=registry, api_key=api_key)
        now = time.time()
        targets = build_targets(now)
        rows = await bench_wrk(sim, signer, targets, tmp)
        rows += await bench_calls(sim, client, signer, now)
        problems = row_problems(rows) + service_problems(services)
        if granted := fallback_grants(registry, config):
            problems.append(f"- {granted:.0f} quota grant(s) came from the local fallback, not the service")
        jwt_us = jwt_cost_us(signer, f"127.0.0.1:{sim.port}", targets[BOOK].path)
        return Run(rows, {s.name: s.rss_mib() for s in services}, problems, jwt_us)
    finally:
        if client is not None:
            await client.quota.aclose()
            await client.aclose()
        for service in services:
            service.stop()


async def run_all() -> Run:
    """The whole benchmark; services and this run's Redis keys are cleaned up whatever happens."""
    prefix = f"bench:{secrets.token_hex(4)}:"
    load_before = os.getloadavg()[0]
    redis = create_redis(REDIS_URL)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-exchange-") as tmp_name:
            tmp = Path(tmp_name)
            progress(f"bench.exchange: Redis {REDIS_URL}, key prefix {prefix}")
            run = await bench_services(write_configs(tmp / "config"), tmp, prefix)
            run.load_before = load_before
            return run
    finally:
        deleted = await delete_keys(redis, prefix)
        progress(f"deleted {deleted} Redis key(s) under {prefix}")
        await redis.aclose()


def mean_ms(row: Row) -> float:
    """Wall time per call of a sequential row (one caller, so 1 / rate); NaN for wrk rows."""
    return 1000 / row.result.rate if row.sequential and row.result.rate else math.nan


def versus(row: Row, baselines: dict[str, Row]) -> str:
    """Mean and p50 as multiples of the bare httpx GET of the same endpoint, and the mean's difference in ms."""
    base = baselines.get(row.endpoint)
    if not row.sequential or base is None or row is base:
        return ""
    extra = mean_ms(row) - mean_ms(base)
    return f"{mean_ms(row) / mean_ms(base):.2f}x / {row.result.p50_ms / base.result.p50_ms:.2f}x ({extra:+.2f} ms)"


def table(rows: Sequence[Row]) -> list[str]:
    """The markdown table: wrk rows, then the sequential per-call rows."""
    baselines = {row.endpoint: row for row in rows if row.result.variant == BARE_HTTPX}
    lines = [
        "| variant | endpoint | conns | requests/s | mean ms | p50 ms | p99 ms | mean / p50 vs (a) (mean diff) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        r = row.result
        lines.append(
            f"| {r.variant} | {row.endpoint} | {r.concurrency} | {r.rate:,.0f} | {ms(mean_ms(row))} "
            f"| {ms(r.p50_ms)} | {ms(r.p99_ms)} | {versus(row, baselines)} |"
        )
    return lines


def report(run: Run) -> str:
    """The whole printed report."""
    rss = ", ".join(
        f"{name} {mib:.1f} MiB" if mib is not None else f"{name} (exited)" for name, mib in run.rss_mib.items()
    )
    return "\n".join(
        [
            "",
            *table(run.rows),
            "",
            f"Machine: {os.cpu_count()} cores shared by the load generator (this process, wrk), the simulator, "
            f"the ratelimit service and Redis; 1-min load average before the run: {run.load_before:.2f}.",
            f"Each row: {WARMUP_S:.0f} s warm-up, then {DURATION_S:.0f} s (wrk -t1 --latency: {WRK_DURATION_S} s). "
            f"Candles: {CANDLES} x {GRANULARITY} of {PRODUCT}. Sequential rows run in-process on uvloop; their mean is "
            "wall time / calls. Quota pools at 1,000,000/s; simulator limits at "
            f"{SIM_LIMIT_PER_S:,}/s (its schema's maximum).",
            f"ES256 JWT signing, in-process: {run.jwt_us:.0f} us per token.",
            "",
            f"Service RSS (VmRSS) after the run: {rss}",
            "",
            "Problems:",
            *(run.problems or ["- none: no errors, no fallback grants, nothing logged at warning or above"]),
        ]
    )


def main() -> None:
    """Run the benchmark and print the report."""
    print(report(uvloop.run(run_all())))


if __name__ == "__main__":
    main()
