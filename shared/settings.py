"""The settings base every service builds on: environment contract plus YAML domain config."""

from __future__ import annotations

import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError
from redis.connection import parse_url

from shared.errors import ConfigError
from shared.redis import is_sentinel_url, parse_sentinel_url

REPO_CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"

# Documented in README and .env.example; accepted only in sim mode.
DEV_API_TOKEN = "dev-token-change-me"
DEV_OPERATOR_TOKEN = "dev-operator-token-change-me"


# Settings whose values never appear in an error message.
SECRET_WORDS = ("token", "secret", "private_key", "password")


class TradingMode(StrEnum):
    SIM = "sim"
    LIVE = "live"


def _config_dir(init_kwargs: dict[str, Any]) -> Path:
    raw = init_kwargs.get("config_dir") or os.environ.get("CONFIG_DIR") or REPO_CONFIG_DIR
    return Path(raw)


def read_yaml_file(path: Path) -> dict[str, Any]:
    """Parse one YAML config file into a mapping; a syntax error names the file and line."""
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} not found (set CONFIG_DIR to the folder holding it)") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"config file {path}{where}: invalid YAML: {problem}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


class YamlFilesSource(PydanticBaseSettingsSource):
    """Reads the service's YAML files from CONFIG_DIR; later files win on a shared top-level key.

    Not pydantic-settings' YamlConfigSettingsSource: it skips a file that does not exist (a mistyped
    CONFIG_DIR would start the service on defaults, trading with limits nobody chose) and lets a YAML syntax
    error through without the file's name; here both stop the service with a line naming the file.
    """

    def __init__(self, settings_cls: type[BaseSettings], init_kwargs: dict[str, Any]):
        super().__init__(settings_cls)
        self.config_dir = _config_dir(init_kwargs)
        self.origins: dict[str, Path] = {}
        self.data: dict[str, Any] = {}
        for name in getattr(settings_cls, "config_files", ()):
            path = self.config_dir / name
            for key, value in read_yaml_file(path).items():
                self.data[key] = value
                self.origins[key] = path

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self.data.items() if k in self.settings_cls.model_fields}


class ServiceSettings(BaseSettings):
    """The Platform contract: every service reads these from the environment."""

    model_config = SettingsConfigDict(
        env_nested_delimiter="__",
        extra="ignore",
        validate_default=True,
    )

    service_name: ClassVar[str] = "service"
    default_port: ClassVar[int] = 8000
    # YAML files under CONFIG_DIR this service reads; their top-level keys are settings fields.
    config_files: ClassVar[tuple[str, ...]] = ()

    port: int = Field(default=0, ge=0, le=65535, description="0 means the service's contract port")
    # Loopback unless told otherwise (the container image sets 0.0.0.0): a bot's API is not for the network.
    bind_host: str = "127.0.0.1"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Prepended to every Redis key; lets tests and several stacks share one Redis.
    key_prefix: str = ""
    ratelimit_url: str = "http://127.0.0.1:8001"
    universe_url: str = "http://127.0.0.1:8002"
    strategy_url: str = "http://127.0.0.1:8003"
    executor_url: str = "http://127.0.0.1:8004"
    exchange_api_url: str = "http://127.0.0.1:8010"
    trading_mode: TradingMode = TradingMode.SIM
    # The services' token: acquire quota, post proposals, run a cycle.
    trader_api_token: str = Field(default=DEV_API_TOKEN, min_length=8, repr=False)
    # The operator's token: change limits, halt and resume, change the policy, invalidate caches.
    trader_operator_token: str = Field(default=DEV_OPERATOR_TOKEN, min_length=8, repr=False)
    config_dir: Path = REPO_CONFIG_DIR
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    http_timeout_s: float = Field(default=5.0, gt=0, le=120)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        init_kwargs = getattr(init_settings, "init_kwargs", {})
        return (init_settings, env_settings, YamlFilesSource(settings_cls, init_kwargs))

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, url: str) -> str:
        if is_sentinel_url(url):
            try:
                parse_sentinel_url(url)
            except ValueError as exc:
                raise ValueError(f"invalid Sentinel URL: {exc}") from None
            return url
        try:
            parse_url(url)
        except ValueError as exc:
            raise ValueError(
                "expected redis://host:port/db, rediss://..., unix:///path.sock or "
                f"redis+sentinel://host1:26379,host2:26379/<master name>/<db> ({exc})"
            ) from None
        return url

    @field_validator("trader_api_token", "trader_operator_token")
    @classmethod
    def _no_dev_token_in_live(cls, token: str, info: ValidationInfo) -> str:
        if info.data.get("trading_mode") is TradingMode.LIVE and token in (DEV_API_TOKEN, DEV_OPERATOR_TOKEN):
            raise ValueError("the documented development token is refused in live mode; set a secret of your own")
        if info.field_name == "trader_operator_token" and token == info.data.get("trader_api_token"):
            raise ValueError("must differ from TRADER_API_TOKEN, or the services could do what only the operator may")
        return token

    @model_validator(mode="after")
    def _default_port(self) -> ServiceSettings:
        if self.port == 0:
            self.port = self.default_port
        return self


def _describe_location(settings_cls: type[ServiceSettings], loc: tuple[Any, ...]) -> tuple[str, str]:
    """Return (dotted key, where it came from) for a validation error location."""
    key = ".".join(str(part) for part in loc) if loc else "(settings)"
    env_name = "__".join(str(part) for part in loc).upper()
    if loc and env_name in os.environ:
        return key, f"environment variable {env_name}"
    return key, ""


S = TypeVar("S", bound=ServiceSettings)


def load_settings(settings_cls: type[S], **overrides: Any) -> S:
    """Build a service's settings, turning every validation problem into one ConfigError line."""
    try:
        return settings_cls(**overrides)
    except SettingsError as exc:  # a list or section given in the environment that is not JSON
        found = re.search(r'field "(\w+)"', str(exc))
        field = (found.group(1) if found else "").upper()
        given = sorted(
            f"{k.lower().replace('__', '.')} = {v!r} (from environment variable {k})"
            for k, v in os.environ.items()
            if k == field or k.startswith(f"{field}__")
        )
        raise ConfigError(
            f"{settings_cls.service_name}: invalid configuration: {'; '.join(given) or field.lower()}: a list or "
            'section set in the environment must be JSON, e.g. UNIVERSE__QUOTE_CURRENCIES=\'["USD","USDC"]\''
        ) from None
    except ValidationError as exc:
        config_dir = _config_dir(overrides)
        origins: dict[str, Path] = {}
        for name in settings_cls.config_files:
            path = config_dir / name
            if path.exists():
                for top in read_yaml_file(path):
                    origins[str(top)] = path
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            key, origin = _describe_location(settings_cls, loc)
            if not origin and loc and str(loc[0]) in origins:
                origin = str(origins[str(loc[0])])
            value = err.get("input")
            shown = "(missing)" if err["type"] == "missing" else repr(value)
            if any(word in key for word in SECRET_WORDS):
                shown = "(hidden)"
            if isinstance(value, dict | list) and len(repr(value)) > 80:
                shown = repr(value)[:77] + "..."
            where = f" (from {origin})" if origin else ""
            problems.append(f"{key} = {shown}{where}: {err['msg']}")
        raise ConfigError(f"{settings_cls.service_name}: invalid configuration: " + "; ".join(problems)) from None


class StageBudgets(BaseModel):
    """Seconds each stage of a cycle may take (the design note's `latency.stage_budgets.*`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    universe_build: float = Field(default=5.0, gt=0, le=600)
    market_data: float = Field(default=5.0, gt=0, le=600)
    signals: float = Field(default=2.0, gt=0, le=600)
    execution: float = Field(default=5.0, gt=0, le=600)


class LatencyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    stage_budgets: StageBudgets = StageBudgets()
