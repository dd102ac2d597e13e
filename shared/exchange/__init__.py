"""The Coinbase Advanced Trade client of the stack."""

from shared.exchange.auth import ApiKey, JwtSigner
from shared.exchange.client import ExchangeClient
from shared.exchange.errors import (
    AuthError,
    BadExchangeResponse,
    ExchangeRejected,
    ExchangeUnavailable,
    OrderOutcomeUnknown,
    RateLimited,
)
from shared.exchange.retry import RetryPolicy

__all__ = [
    "ApiKey",
    "AuthError",
    "BadExchangeResponse",
    "ExchangeClient",
    "ExchangeRejected",
    "ExchangeUnavailable",
    "JwtSigner",
    "OrderOutcomeUnknown",
    "RateLimited",
    "RetryPolicy",
]
