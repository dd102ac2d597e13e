"""Configuration fuzzing: wrong types and out-of-range values for every key of every YAML file, and in the
environment, must stop the service with one line naming the key, never a traceback.

The keys are found by walking each service's settings model (nested sections, and the entries of the
mappings the committed YAML fills in, such as each pool and endpoint); hypothesis, bounded and derandomized,
picks the bad values from each field's type and constraints. Most cases load in process through the one
loader (`load_settings` raising ConfigError); a few start the real `python -m services.<name>` and read its
exit code and stderr.
"""

from __future__ import annotations

import decimal
import enum
import math
import os
import shutil
import string
import subprocess
import sys
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import annotated_types
import hypothesis
import pytest
import yaml
from hypothesis import strategies as st
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from services.exchange_sim.settings import SimSettings
from services.executor.settings import ExecutorSettings
from services.ratelimit.settings import RatelimitSettings
from services.strategy.settings import StrategySettings
from services.universe.settings import UniverseSettings
from shared.errors import ConfigError
from shared.settings import REPO_CONFIG_DIR, SECRET_WORDS, ServiceSettings, load_settings
from tests.conftest import bounded_examples

ROOT = Path(__file__).resolve().parents[2]
SETTINGS: tuple[type[ServiceSettings], ...] = (
    RatelimitSettings,
    UniverseSettings,
    StrategySettings,
    ExecutorSettings,
    SimSettings,
)
# Each YAML file's keys are fuzzed in full through one service that reads it; every service then gets a
# sample of all the keys it reads (the shared files too).
OWNER = {
    "ratelimits.yaml": RatelimitSettings,
    "universe.yaml": UniverseSettings,
    "policy.yaml": StrategySettings,
    "risk.yaml": ExecutorSettings,
    "exchange_sim.yaml": SimSettings,
}
# The platform settings that only come from the environment.
ENV_ONLY = ("port", "bind_host", "redis_url", "trading_mode", "log_level", "http_timeout_s", "sim_speed", "sim_seed")


def fuzz(max_examples: int) -> hypothesis.settings:
    return bounded_examples(max_examples)


@dataclass(frozen=True)
class Key:
    """One configuration key: where it sits, what type it takes and within which bounds."""

    settings_cls: type[ServiceSettings]
    file: str  # the YAML file holding it ("" for the environment only)
    path: tuple[str, ...]
    kind: str  # int, float, decimal, bool, str, choice, list, dict, section, pool_name
    nullable: bool = False
    bounds: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    choices: tuple[Any, ...] = ()

    @property
    def dotted(self) -> str:
        return ".".join(self.path)

    @property
    def env_name(self) -> str:
        return "__".join(self.path).upper()

    def __str__(self) -> str:
        return f"{self.settings_cls.service_name}:{self.file or 'env'}:{self.dotted}"


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(the type, whether None is allowed) of an annotation such as `float | None`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        nullable = len(members) < len(typing.get_args(annotation))
        if len(members) == 1:
            inner, inner_nullable = _unwrap(members[0])
            return inner, nullable or inner_nullable
        return annotation, nullable
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    return annotation, False


def _bounds(info: FieldInfo) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for meta in info.metadata:
        for name in ("ge", "gt", "le", "lt", "min_length", "pattern"):
            value = getattr(meta, name, None)
            if value is not None:
                found[name] = value
        if isinstance(meta, annotated_types.MinLen):
            found["min_length"] = meta.min_length
    return found


def _kind(tp: Any) -> tuple[str, tuple[Any, ...]]:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "choice", typing.get_args(tp)
    if origin is list:
        return "list", ()
    if origin is dict:
        return "dict", ()
    if isinstance(tp, type):
        if issubclass(tp, BaseModel):
            return "section", ()
        if issubclass(tp, enum.Enum):
            return "choice", tuple(member.value for member in tp)
        for base, name in ((bool, "bool"), (int, "int"), (float, "float"), (decimal.Decimal, "decimal"), (str, "str")):
            if issubclass(tp, base):
                return name, ()
    return "other", ()


def _walk(cls: type[ServiceSettings], file: str, path: tuple[str, ...], info: FieldInfo, value: Any) -> Iterator[Key]:
    tp, nullable = _unwrap(info.annotation)
    kind, choices = _kind(tp)
    if kind == "other":
        return
    yield Key(cls, file, path, kind, nullable, _bounds(info), choices)
    if kind == "section":
        present = value if isinstance(value, dict) else {}
        for name, sub in tp.model_fields.items():
            yield from _walk(cls, file, (*path, name), sub, present.get(name))
    elif kind == "dict" and isinstance(value, dict):
        key_type, value_type = typing.get_args(tp)
        key_info = FieldInfo.from_annotation(key_type)
        if "pattern" in _bounds(key_info):
            yield Key(cls, file, path, "pool_name", bounds=_bounds(key_info))
        item_info = FieldInfo.from_annotation(value_type)
        # the entries are alike (pools, endpoints, balances): the first two stand for the rest
        for name, item in list(value.items())[:2]:
            yield from _walk(cls, file, (*path, str(name)), item_info, item)


def read_config(file: str) -> dict[str, Any]:
    return yaml.safe_load((REPO_CONFIG_DIR / file).read_text()) or {}


def keys_of(cls: type[ServiceSettings], files: tuple[str, ...] | None = None) -> list[Key]:
    """Every key of these YAML files (by default all the service reads) that the service's model takes."""
    keys = []
    for file in files if files is not None else cls.config_files:
        for top, value in read_config(file).items():
            if top in cls.model_fields:
                keys.extend(_walk(cls, file, (top,), cls.model_fields[top], value))
    return keys


YAML_KEYS = [key for file, cls in OWNER.items() for key in keys_of(cls, (file,))]
ENV_KEYS = [
    key
    for cls in SETTINGS
    for name in ENV_ONLY
    if name in cls.model_fields
    for key in _walk(cls, "", (name,), cls.model_fields[name], None)
]


# Bad values. Text is printable ASCII, so YAML writes and reads it back unchanged.
TEXT = st.text(string.ascii_letters + string.punctuation + " ", min_size=1, max_size=12)
BOOL_WORDS = {"true", "false", "yes", "no", "on", "off", "y", "n", "t", "f", "1", "0"}


def _parses(text: str, parse: Callable[[str], Any]) -> bool:
    try:
        parse(text.strip().replace("_", ""))
    except (ValueError, ArithmeticError):
        return False
    return True


def _not_a_number(text: str) -> bool:
    return not (_parses(text, float) or _parses(text, decimal.Decimal) or text.strip().lower() in BOOL_WORDS)


CONTAINERS = st.one_of(
    st.lists(st.integers(), min_size=1, max_size=3), st.dictionaries(TEXT, st.integers(), max_size=2)
)


def wrong_type(key: Key) -> st.SearchStrategy[Any]:
    """Values of another type than the key takes (None only where the key cannot be null)."""
    options: list[st.SearchStrategy[Any]] = [] if key.nullable else [st.none()]
    if key.kind == "int":
        options += [TEXT.filter(_not_a_number), st.floats(0.1, 1e6).filter(lambda x: not x.is_integer()), CONTAINERS]
    elif key.kind in ("float", "decimal"):
        options += [TEXT.filter(_not_a_number), CONTAINERS]
    elif key.kind == "bool":
        options += [TEXT.filter(lambda t: t.strip().lower() not in BOOL_WORDS), st.integers(2, 10**6), CONTAINERS]
    elif key.kind == "str":
        options += [st.integers(), st.floats(allow_nan=False), CONTAINERS]
    elif key.kind == "choice":
        options += [TEXT.filter(lambda t: t not in key.choices), st.integers().filter(lambda i: i not in key.choices)]
    elif key.kind == "list":
        options += [TEXT, st.integers(), st.dictionaries(TEXT, st.integers(), min_size=1, max_size=2)]
    elif key.kind in ("dict", "section"):
        options += [TEXT, st.integers(), st.lists(st.integers(), min_size=1, max_size=3)]
    return st.one_of(options)


def out_of_range(key: Key) -> st.SearchStrategy[Any] | None:
    """Values of the right type beyond the key's bounds, or None when it has no bounds."""
    b = key.bounds
    options: list[st.SearchStrategy[Any]] = []
    if key.kind == "int":
        if "ge" in b:
            options.append(st.integers(1, 10**9).map(lambda d: b["ge"] - d))
        if "gt" in b:
            options.append(st.integers(0, 10**9).map(lambda d: b["gt"] - d))
        if "le" in b:
            options.append(st.integers(1, 10**9).map(lambda d: b["le"] + d))
        if "lt" in b:
            options.append(st.integers(0, 10**9).map(lambda d: b["lt"] + d))
    elif key.kind in ("float", "decimal"):
        delta = st.floats(1e-6, 1e6)
        if "ge" in b:
            options.append(delta.map(lambda d: float(b["ge"]) - d))
        if "gt" in b:
            options.append(st.just(float(b["gt"])) | delta.map(lambda d: float(b["gt"]) - d))
        if "le" in b:
            options.append(delta.map(lambda d: float(b["le"]) + d))
        if "lt" in b:
            options.append(st.just(float(b["lt"])) | delta.map(lambda d: float(b["lt"]) + d))
    elif key.kind == "list" and b.get("min_length"):
        options.append(st.just([]))
    elif key.kind == "dict" and b.get("min_length"):
        options.append(st.just({}))
    elif key.kind == "pool_name":
        options.append(st.sampled_from(["Bad Name", "1pool", "UPPER", "a" * 64, "dash-ed", "ünï"]))
    return st.one_of(options) if options else None


def bad_values(key: Key) -> st.SearchStrategy[Any]:
    beyond = out_of_range(key)
    if key.kind == "pool_name":
        assert beyond is not None
        return beyond
    return wrong_type(key) if beyond is None else st.one_of(wrong_type(key), beyond)


# Writing and loading


def config_copy(tmp: Path) -> Path:
    target = tmp / "config"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(REPO_CONFIG_DIR, target)
    return target


def set_in_yaml(path: Path, keys: tuple[str, ...], value: Any, *, as_key: bool = False) -> None:
    """Set `keys` in the YAML file to `value`, creating missing sections; with `as_key`, add `value` as a new
    entry name (a copy of the first entry) under `keys`."""
    data = yaml.safe_load(path.read_text()) or {}
    node = data
    for part in keys[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    if as_key:
        entries = node[keys[-1]]
        entries[value] = next(iter(entries.values()))
    else:
        node[keys[-1]] = value
    path.write_text(yaml.safe_dump(data, allow_unicode=True))


def shown(value: Any) -> str:
    """How the loader shows a value in its one line."""
    text = repr(value)
    return text[:77] if isinstance(value, dict | list) and len(text) > 80 else text


def assert_one_clean_line(key: Key, value: Any, message: str, origin: str) -> None:
    assert "\n" not in message, message
    assert "Traceback" not in message, message
    assert message.startswith(f"{key.settings_cls.service_name}: invalid configuration: "), message
    # the environment's names are case-insensitive: a mapping's entry comes back in lower case from there
    named = key.dotted.lower() in message.lower() if origin.startswith("from environment") else key.dotted in message
    assert named, f"{key} not named: {message}"
    if not any(word in key.dotted for word in SECRET_WORDS):
        assert shown(value) in message, f"{value!r} not shown: {message}"
    assert origin in message, f"{origin!r} not named: {message}"


def read_back(path: Path, keys: tuple[str, ...]) -> Any:
    node: Any = yaml.safe_load(path.read_text())
    for part in keys:
        node = node[part]
    return node


def load_bad_yaml(key: Key, value: Any, tmp: Path) -> tuple[str, Any]:
    """The loader's message for this value at this key, and the value as the YAML file holds it."""
    config = config_copy(tmp)
    set_in_yaml(config / key.file, key.path, value, as_key=key.kind == "pool_name")
    written = value if key.kind == "pool_name" else read_back(config / key.file, key.path)
    with pytest.raises(ConfigError) as caught:
        load_settings(key.settings_cls, config_dir=config)
    return caught.value.message, written


@pytest.mark.parametrize("key", YAML_KEYS, ids=str)
def test_every_yaml_key_refuses_wrong_types_and_out_of_range_values(key: Key, tmp_path: Path) -> None:
    @fuzz(3)
    @hypothesis.given(value=bad_values(key))
    def check(value: Any) -> None:
        message, written = load_bad_yaml(key, value, tmp_path)
        assert_one_clean_line(key, written, message, str(tmp_path / "config" / key.file))

    check()


@pytest.mark.parametrize("cls", SETTINGS, ids=lambda cls: cls.service_name)
def test_every_service_refuses_bad_values_in_each_file_it_reads(cls: type[ServiceSettings], tmp_path: Path) -> None:
    """The shared files (ratelimits.yaml, policy.yaml) through every service that reads them."""
    keys = keys_of(cls)
    assert {key.file for key in keys} == set(cls.config_files)

    @fuzz(25)
    @hypothesis.given(data=st.data())
    def check(data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(keys), label="key")
        value = data.draw(bad_values(key), label="value")
        message, written = load_bad_yaml(key, value, tmp_path)
        assert_one_clean_line(key, written, message, str(tmp_path / "config" / key.file))

    check()


def test_the_walk_reaches_every_file_and_the_nested_keys() -> None:
    dotted = {key.dotted for key in YAML_KEYS}
    assert {key.file for key in YAML_KEYS} == set(OWNER)
    for expected in (
        "universe.products_cache_minutes",
        "universe.adaptive_ttl.min_minutes",
        "strategy.weights.strength",
        "strategy.signals.rsi_low",
        "latency.stage_budgets.universe_build",
        "risk.max_open_positions",
        "worker.claim_idle_s",
        "ratelimit.pools.private.rate",
        "ratelimit.endpoints.get_product.pools.public",
        "ratelimit.endpoints.list_products.priority",
        "exchange_sim.faults.malformed_json_fraction",
        "exchange_sim.starting_balances.USD",
        "sim_speed",
    ):
        assert expected in dotted, expected
    assert len(YAML_KEYS) > 90


# The environment: every key above can be overridden as SECTION__KEY; the platform's own settings only there.


def env_value(key: Key) -> st.SearchStrategy[str]:
    """A bad value as an environment variable holds it: text."""
    if key.kind in ("int", "float", "decimal"):
        beyond = out_of_range(key)
        words = TEXT.filter(_not_a_number)
        return words if beyond is None else st.one_of(words, beyond.map(str))
    if key.kind == "bool":
        return TEXT.filter(lambda t: t.strip().lower() not in BOOL_WORDS)
    if key.kind == "choice":
        return TEXT.filter(lambda t: t not in key.choices)
    if key.kind == "str" and "pattern" in key.bounds:
        return st.sampled_from(["LOUD", "debug ", "", "TRACE"])
    if key.kind == "str" and key.dotted == "redis_url":
        return st.sampled_from(["notaurl", "http://127.0.0.1:6379/0", "redis://127.0.0.1:notaport/0"])
    raise AssertionError(f"no bad environment value for {key}")


SCALAR_KEYS = [key for key in YAML_KEYS if key.kind in ("int", "float", "decimal", "bool", "choice")]
ENV_SCALAR_KEYS = [
    key
    for key in ENV_KEYS
    if key.kind in ("int", "float", "choice") or "pattern" in key.bounds or key.path == ("redis_url",)
]


@pytest.mark.parametrize("cls", SETTINGS, ids=lambda cls: cls.service_name)
def test_bad_environment_overrides_name_the_variable(cls: type[ServiceSettings]) -> None:
    keys = [key for key in SCALAR_KEYS if key.file in cls.config_files and key.path[0] in cls.model_fields] + [
        key for key in ENV_SCALAR_KEYS if key.settings_cls is cls
    ]
    keys = [Key(cls, key.file, key.path, key.kind, key.nullable, key.bounds, key.choices) for key in keys]

    @fuzz(30)
    @hypothesis.given(data=st.data())
    def check(data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(keys), label="key")
        value = data.draw(env_value(key), label="value")
        with pytest.MonkeyPatch.context() as env:
            env.setenv(key.env_name, value)
            with pytest.raises(ConfigError) as caught:
                load_settings(cls)
        assert_one_clean_line(key, value, caught.value.message, f"from environment variable {key.env_name}")

    check()


@pytest.mark.parametrize("value", ["abc", "-5", "1.5", "", " ", "5 minutes", "1e3", "99999999999999999999", "[5]"])
def test_products_cache_minutes_from_the_environment(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIVERSE__PRODUCTS_CACHE_MINUTES", value)
    with pytest.raises(ConfigError) as caught:
        load_settings(UniverseSettings)
    key = Key(UniverseSettings, "universe.yaml", ("universe", "products_cache_minutes"), "int")
    assert_one_clean_line(
        key, value, caught.value.message, "from environment variable UNIVERSE__PRODUCTS_CACHE_MINUTES"
    )


# A list or a whole section set from the environment is read as JSON; what is not JSON must be refused with the
# same one line (it is the natural way to write a list: USD,USDC).
NOT_JSON = [
    (UniverseSettings, "UNIVERSE__QUOTE_CURRENCIES", "USD,USDC"),
    (UniverseSettings, "UNIVERSE__DENY", "[BTC-USD"),
    (UniverseSettings, "UNIVERSE__ADAPTIVE_TTL", "on"),
    (UniverseSettings, "UNIVERSE", "products_cache_minutes=5"),
    (StrategySettings, "LATENCY__STAGE_BUDGETS", "{"),
    (RatelimitSettings, "RATELIMIT__POOLS", "private:30"),
    (SimSettings, "EXCHANGE_SIM__STARTING_BALANCES", "USD=100"),
]


@pytest.mark.parametrize(("cls", "name", "value"), NOT_JSON, ids=[name for _, name, _ in NOT_JSON])
def test_a_list_or_section_from_the_environment_that_is_not_json_names_the_variable(
    cls: type[ServiceSettings], name: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(cls)
    message = caught.value.message
    assert "\n" not in message and name in message and repr(value) in message, message


# Non-finite numbers: YAML's .inf and .nan are floats, and every float key has bounds, so neither is a setting:
# an infinite risk limit or volume floor switches the check off without saying so.


FLOAT_KEYS = [key for key in YAML_KEYS if key.kind in ("float", "decimal")]


@pytest.mark.parametrize("key", FLOAT_KEYS, ids=str)
@pytest.mark.parametrize("value", [math.inf, math.nan], ids=["inf", "nan"])
def test_non_finite_numbers_are_refused(key: Key, value: float, tmp_path: Path) -> None:
    config = config_copy(tmp_path)
    set_in_yaml(config / key.file, key.path, value)
    try:
        settings = load_settings(key.settings_cls, config_dir=config)
    except ConfigError as exc:
        assert "\n" not in exc.message and key.dotted in exc.message, exc.message
        return
    node: Any = settings
    for part in key.path:
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    pytest.fail(f"{key.file}: {key.dotted}: {value} accepted as {node!r}")


def test_an_environment_override_of_a_balance_changes_that_balance(monkeypatch: pytest.MonkeyPatch) -> None:
    """EXCHANGE_SIM__STARTING_BALANCES__BTC must override the YAML's BTC, not add a currency named 'btc'."""
    monkeypatch.setenv("EXCHANGE_SIM__STARTING_BALANCES__BTC", "7")
    balances = load_settings(SimSettings).exchange_sim.starting_balances
    assert balances.get("BTC") == 7 and "btc" not in balances, balances


def test_a_negative_starting_balance_is_refused(tmp_path: Path) -> None:
    config = config_copy(tmp_path)
    set_in_yaml(config / "exchange_sim.yaml", ("exchange_sim", "starting_balances", "USD"), -5)
    with pytest.raises(ConfigError, match=r"exchange_sim\.starting_balances\.USD = -5"):
        load_settings(SimSettings, config_dir=config)


# Real starts: exit code 2, one line on stderr naming the key and the value, no traceback.


def failed_start(service: str, env: dict[str, str]) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, "-m", f"services.{service}"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PORT": "1", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode, result.stderr


# (service, YAML file and key to spoil or "" for none, the value, the environment, what the line must name)
STARTS = [
    ("universe", "universe.yaml", ("universe", "adaptive_ttl", "min_minutes"), -3, {}, ()),
    ("executor", "risk.yaml", ("risk", "max_open_positions"), [1, 2], {}, ()),
    ("exchange_sim", "exchange_sim.yaml", ("exchange_sim", "faults", "malformed_json_fraction"), "lots", {}, ()),
    ("universe", "", (), "", {"UNIVERSE__PRODUCTS_CACHE_MINUTES": "abc"}, ("universe.products_cache_minutes", "'abc'")),
    ("universe", "", (), "", {"UNIVERSE__PRODUCTS_CACHE_MINUTES": "-5"}, ("universe.products_cache_minutes", "'-5'")),
    ("ratelimit", "", (), "", {"RATELIMIT__POOLS__PRIVATE__RATE": "fast"}, ("ratelimit.pools.private.rate", "'fast'")),
    ("universe", "", (), "", {"UNIVERSE__QUOTE_CURRENCIES": "USD,USDC"}, ("UNIVERSE__QUOTE_CURRENCIES", "'USD,USDC'")),
]


@pytest.mark.parametrize(
    ("service", "file", "path", "value", "env", "expected"),
    STARTS,
    ids=[f"{s[0]}-{'.'.join(s[2]) or ','.join(f'{k}={v}' for k, v in s[4].items())}" for s in STARTS],
)
def test_a_real_start_with_bad_config_exits_2_with_one_line(
    service: str,
    file: str,
    path: tuple[str, ...],
    value: Any,
    env: dict[str, str],
    expected: tuple[str, ...],
    tmp_path: Path,
) -> None:
    config = config_copy(tmp_path)
    if file:
        set_in_yaml(config / file, path, value)
        expected = (".".join(path), repr(value), str(config / file))
    code, stderr = failed_start(service, {"CONFIG_DIR": str(config), **env})
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr, stderr[-3000:]
    assert code == 2, stderr[-3000:]
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"error: {service}: "), lines[0]
    for part in expected:
        assert part in lines[0], (part, lines[0])
    for name in env:
        assert f"from environment variable {name}" in lines[0], lines[0]
