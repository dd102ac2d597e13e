"""What can go wrong talking to the exchange, split into retryable and fatal like the rest of the stack."""

from __future__ import annotations

from typing import Any

from shared.errors import FatalError, RetryableError


class RateLimited(RetryableError):
    """The exchange answered 429; wait `retry_after_s` (None when it gave no hint) before calling again."""

    status_code = 429
    code = "exchange_rate_limited"

    def __init__(self, message: str, *, endpoint: str, retry_after_s: float | None):
        super().__init__(message, details={"endpoint": endpoint, "retry_after_s": retry_after_s})
        self.endpoint = endpoint
        self.retry_after_s = retry_after_s


class ExchangeUnavailable(RetryableError):
    """5xx answers, timeouts or connection errors persisted through the bounded retries."""

    status_code = 503
    code = "exchange_unavailable"


class OrderOutcomeUnknown(RetryableError):
    """An order attempt may have reached the exchange and the call failed after it: the order may be live.

    Resending the same body with the same `client_order_id` is how to learn the outcome: Coinbase answers a
    repeated client_order_id with the order it already has, never with a second one."""

    status_code = 503
    code = "order_outcome_unknown"

    def __init__(self, message: str, *, client_order_id: str, cause: str):
        super().__init__(message, details={"client_order_id": client_order_id, "cause": cause})
        self.client_order_id = client_order_id


class AuthError(FatalError):
    """The exchange refused the API key (401/403), or the key itself is unusable; names the key, never the secret."""

    status_code = 502
    code = "exchange_auth_failed"

    def __init__(self, message: str, *, key_name: str):
        super().__init__(message, details={"key_name": key_name})
        self.key_name = key_name


class ExchangeRejected(FatalError):
    """The exchange refused the request (4xx or an order with success=false); repeating it fails the same way."""

    status_code = 422
    code = "exchange_rejected"

    def __init__(
        self,
        message: str,
        *,
        status: int,
        error: str | None = None,
        error_message: str | None = None,
        error_details: str | None = None,
        preview_failure_reason: str | None = None,
        new_order_failure_reason: str | None = None,
    ):
        details: dict[str, Any] = {
            "status": status,
            "error": error,
            "message": error_message,
            "error_details": error_details,
            "preview_failure_reason": preview_failure_reason,
            "new_order_failure_reason": new_order_failure_reason,
        }
        super().__init__(message, details={k: v for k, v in details.items() if v is not None})
        self.status = status
        self.error = error
        self.error_message = error_message
        self.error_details = error_details
        self.preview_failure_reason = preview_failure_reason
        self.new_order_failure_reason = new_order_failure_reason


class BadExchangeResponse(FatalError):
    """A body that is not JSON or does not match the documented shape; names the field and value."""

    status_code = 502
    code = "bad_exchange_response"

    def __init__(self, message: str, *, endpoint: str, field: str | None = None, value: Any = None):
        super().__init__(message, details={"endpoint": endpoint, "field": field, "value": repr(value)[:200]})
        self.endpoint = endpoint
        self.field = field
        self.value = value
