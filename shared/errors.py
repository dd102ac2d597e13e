"""The project's errors, split into retryable (try again later) and fatal (retrying will not help)."""

from __future__ import annotations

from typing import Any


class TraderError(Exception):
    """Base of every error a service raises on purpose; carries its HTTP status and JSON error code."""

    status_code: int = 500
    code: str = "internal_error"
    retryable: bool = False

    def __init__(self, message: str, *, details: dict[str, Any] | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}
        if code is not None:
            self.code = code

    def to_body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, "details": self.details}


class RetryableError(TraderError):
    """The same call may succeed later (a dependency is down, a limit will reset)."""

    retryable = True


class FatalError(TraderError):
    """The call is wrong or not allowed; repeating it unchanged fails the same way."""


class ConfigError(FatalError):
    """Configuration could not be loaded; the service must not start."""

    code = "invalid_configuration"


class NotFound(FatalError):
    status_code = 404
    code = "not_found"


class Unauthorized(FatalError):
    status_code = 401
    code = "unauthorized"


class InvalidRequest(FatalError):
    status_code = 422
    code = "invalid_request"


class ServiceUnavailable(RetryableError):
    status_code = 503
    code = "unavailable"
