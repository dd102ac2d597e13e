"""Configuration: YAML plus environment overrides, and a clear one-line refusal of bad values."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from services.exchange_sim.settings import SimSettings
from services.executor.settings import ExecutorSettings
from services.ratelimit.settings import RatelimitSettings
from services.strategy.settings import StrategySettings
from services.universe.settings import UniverseSettings
from shared.errors import ConfigError
from shared.ratelimits import Priority
from shared.settings import DEV_API_TOKEN, REPO_CONFIG_DIR, load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    target = tmp_path / "config"
    shutil.copytree(REPO_CONFIG_DIR, target)
    return target


def edit_yaml(path: Path, dotted: str, value: object) -> None:
    data = yaml.safe_load(path.read_text())
    node = data
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    path.write_text(yaml.safe_dump(data))


def test_repo_config_loads_with_the_design_note_values() -> None:
    universe = load_settings(UniverseSettings)
    strategy = load_settings(StrategySettings)
    assert universe.universe.products_cache_minutes == 5
    assert strategy.strategy.min_conviction_to_propose == 0.28
    assert universe.latency.stage_budgets.universe_build == 5.0
    assert universe.port == 8002 and strategy.port == 8003


def test_environment_overrides_yaml_with_double_underscore_nesting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIVERSE__PRODUCTS_CACHE_MINUTES", "0")
    monkeypatch.setenv("STRATEGY__MIN_CONVICTION_TO_PROPOSE", "0.30")
    monkeypatch.setenv("PORT", "9123")
    assert load_settings(UniverseSettings).universe.products_cache_minutes == 0
    strategy = load_settings(StrategySettings)
    assert strategy.strategy.min_conviction_to_propose == 0.30
    assert strategy.port == 9123


# One bad value per config file: (settings class, file, dotted key, bad value, words the message must contain).
BAD_VALUES = [
    (UniverseSettings, "universe.yaml", "universe.products_cache_minutes", "five", "valid integer"),
    (UniverseSettings, "universe.yaml", "universe.max_products", 0, "greater than or equal to 1"),
    (StrategySettings, "policy.yaml", "strategy.min_conviction_to_propose", 1.5, "less than or equal to 1"),
    (StrategySettings, "policy.yaml", "latency.stage_budgets.universe_build", -1, "greater than 0"),
    (ExecutorSettings, "risk.yaml", "risk.max_open_positions", "many", "valid integer"),
    (ExecutorSettings, "risk.yaml", "risk.max_order_quote", 0, "greater than 0"),
    (RatelimitSettings, "ratelimits.yaml", "ratelimit.safety_margin_pct", 100, "less than 100"),
    (RatelimitSettings, "ratelimits.yaml", "ratelimit.pools.private.rate", "fast", "valid number"),
    (SimSettings, "exchange_sim.yaml", "exchange_sim.fees.taker_pct", "lots", "valid decimal"),
    (SimSettings, "exchange_sim.yaml", "sim_speed", 0, "greater than 0"),
]


@pytest.mark.parametrize(("settings_cls", "file", "key", "value", "expected"), BAD_VALUES)
def test_bad_yaml_value_names_key_value_and_expectation(
    config_dir: Path, settings_cls: type, file: str, key: str, value: object, expected: str
) -> None:
    edit_yaml(config_dir / file, key, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(settings_cls, config_dir=config_dir)
    message = caught.value.message
    assert "\n" not in message
    assert key in message and repr(value) in message and expected in message
    assert str(config_dir / file) in message


def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATELIMIT__UTILIZATION_WINDOW_S", "-3")
    with pytest.raises(ConfigError, match=r"ratelimit\.utilization_window_s = '-3' \(from environment variable"):
        load_settings(RatelimitSettings)


def test_endpoint_on_unknown_pool_is_refused(config_dir: Path) -> None:
    edit_yaml(config_dir / "ratelimits.yaml", "ratelimit.endpoints.get_candles.pools", {"privat": 1})
    with pytest.raises(ConfigError, match=r"endpoint 'get_candles' draws from unknown pool\(s\) \['privat'\]"):
        load_settings(RatelimitSettings, config_dir=config_dir)


def test_a_caller_that_needs_no_more_than_normal_never_asks_above_the_configured_priority(config_dir: Path) -> None:
    shipped = load_settings(RatelimitSettings, config_dir=config_dir).ratelimit
    assert shipped.priority_at_most("best_bid_ask", Priority.NORMAL) is Priority.NORMAL  # critical, lowered
    edit_yaml(config_dir / "ratelimits.yaml", "ratelimit.endpoints.best_bid_ask.priority", "background")
    lowered = load_settings(RatelimitSettings, config_dir=config_dir).ratelimit
    assert lowered.priority_at_most("best_bid_ask", Priority.NORMAL) is Priority.BACKGROUND  # no raise: 422


def test_unknown_key_inside_a_section_is_refused(config_dir: Path) -> None:
    edit_yaml(config_dir / "universe.yaml", "universe.products_cache_minuts", 3)
    with pytest.raises(ConfigError, match=r"universe\.products_cache_minuts = 3 .*Extra inputs are not permitted"):
        load_settings(UniverseSettings, config_dir=config_dir)


def test_broken_yaml_names_the_file_and_line(config_dir: Path) -> None:
    (config_dir / "risk.yaml").write_text("risk:\n  max_order_quote: [1, 2\n")
    with pytest.raises(ConfigError, match=r"risk\.yaml line \d+ column \d+: invalid YAML"):
        load_settings(ExecutorSettings, config_dir=config_dir)


def test_missing_config_file_says_which(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"ratelimits\.yaml not found"):
        load_settings(RatelimitSettings, config_dir=tmp_path)


def test_live_mode_refuses_the_development_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADING_MODE", "live")
    with pytest.raises(ConfigError, match="development token is refused in live mode") as caught:
        load_settings(StrategySettings)
    assert DEV_API_TOKEN not in caught.value.message
    monkeypatch.setenv("TRADER_API_TOKEN", "a-real-secret-of-my-own")
    with pytest.raises(ConfigError, match=r"trader_operator_token .* development token is refused"):
        load_settings(StrategySettings)
    monkeypatch.setenv("TRADER_OPERATOR_TOKEN", "a-real-secret-of-my-own")
    with pytest.raises(ConfigError, match="must differ from TRADER_API_TOKEN"):
        load_settings(StrategySettings)
    monkeypatch.setenv("TRADER_OPERATOR_TOKEN", "another-secret-for-the-operator")
    assert load_settings(StrategySettings).trading_mode == "live"


def test_fault_fractions_above_one_are_refused(config_dir: Path) -> None:
    edit_yaml(config_dir / "exchange_sim.yaml", "exchange_sim.faults.error_5xx_fraction", 0.7)
    edit_yaml(config_dir / "exchange_sim.yaml", "exchange_sim.faults.timeout_fraction", 0.6)
    with pytest.raises(ConfigError, match=r"fault fractions add up to 1\.3"):
        load_settings(SimSettings, config_dir=config_dir)


@pytest.mark.parametrize("service", ["ratelimit", "universe", "strategy", "executor", "exchange_sim"])
def test_service_exits_nonzero_with_one_line_on_bad_config(service: str, config_dir: Path) -> None:
    file, key = {
        "ratelimit": ("ratelimits.yaml", "ratelimit.expected_replicas"),
        "universe": ("universe.yaml", "universe.products_cache_minutes"),
        "strategy": ("policy.yaml", "strategy.cycle_interval_s"),
        "executor": ("risk.yaml", "risk.max_trades_per_hour"),
        "exchange_sim": ("exchange_sim.yaml", "exchange_sim.products"),
    }[service]
    edit_yaml(config_dir / file, key, "not-a-number")
    line = failed_start(service, CONFIG_DIR=str(config_dir))
    assert key in line and "'not-a-number'" in line


def failed_start(service: str, **env: str) -> str:
    """Start a service that must refuse its configuration: exit code 2 and the one line it printed."""
    result = subprocess.run(
        [sys.executable, "-m", f"services.{service}"],
        env={"PATH": "/usr/bin:/bin", "PORT": "1", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("url", ["notaurl", "http://127.0.0.1:6379/0", "redis://127.0.0.1:notaport/0"])
def test_a_redis_url_that_is_no_redis_url_stops_the_service_with_one_line(url: str) -> None:
    line = failed_start("ratelimit", REDIS_URL=url)
    assert f"redis_url = {url!r} (from environment variable REDIS_URL)" in line


def test_live_mode_without_an_exchange_key_stops_the_universe_with_one_line() -> None:
    line = failed_start(
        "universe",
        TRADING_MODE="live",
        TRADER_API_TOKEN="a-real-secret-of-my-own",
        TRADER_OPERATOR_TOKEN="the-operators-own-secret",
    )
    assert "universe: no Coinbase API key: set COINBASE_API_KEY_FILE or COINBASE_API_KEY_NAME" in line
