"""How a service gets its exchange client: the quota client, the API key and the Coinbase client, built one way."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client import CollectorRegistry

from shared.errors import ConfigError
from shared.exchange.auth import ApiKey
from shared.exchange.client import ExchangeClient
from shared.exchange.errors import AuthError
from shared.quota import QuotaClient, default_client_id
from shared.ratelimits import RateLimitConfig
from shared.settings import ServiceSettings, TradingMode

KEY_VARIABLES = ("COINBASE_API_KEY_FILE", "COINBASE_API_KEY_NAME")


def throwaway_key() -> ApiKey:
    """A fresh EC key: the simulator checks JWT signatures only when it is given a public key."""
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    return ApiKey("organizations/sim/apiKeys/throwaway", pem.decode())


def api_key(settings: ServiceSettings) -> ApiKey:
    """The configured Coinbase key; in sim mode without one, a throwaway key the simulator accepts.

    Raises ConfigError (the service stops with one line) when a key is needed and cannot be read."""
    if not any(os.environ.get(name) for name in KEY_VARIABLES) and settings.trading_mode is not TradingMode.LIVE:
        return throwaway_key()
    try:
        return ApiKey.from_env()
    except AuthError as exc:
        raise ConfigError(f"{settings.service_name}: {exc.message}") from None


def create_exchange_client(
    settings: ServiceSettings, ratelimits: RateLimitConfig, registry: CollectorRegistry, key: ApiKey
) -> ExchangeClient:
    """The service's exchange client, taking quota from the ratelimit service as this process."""
    quota = QuotaClient(
        base_url=settings.ratelimit_url,
        token=settings.trader_api_token,
        config=ratelimits,
        registry=registry,
        client_id=f"{settings.service_name}:{default_client_id()}",
    )
    return ExchangeClient(
        base_url=settings.exchange_api_url,
        quota=quota,
        registry=registry,
        api_key=key,
        timeout_s=settings.http_timeout_s * 2,
    )
