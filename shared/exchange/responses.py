"""Turning the exchange's HTTP answers into models or into the errors of shared.exchange.errors."""

from __future__ import annotations

import email.utils
import math
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import orjson
from pydantic import BaseModel, ValidationError

from shared.exchange.errors import BadExchangeResponse, ExchangeRejected
from shared.exchange.models import CreateOrderResponse, Product

M = TypeVar("M", bound=BaseModel)

# Past this a x-ratelimit-reset value is an epoch timestamp rather than a number of seconds.
EPOCH_S_THRESHOLD = 1_000_000_000
EPOCH_MS_THRESHOLD = 1_000_000_000_000

EXPECTED = {
    "decimal_parsing": "is not a decimal",
    "decimal_type": "is not a decimal",
    "int_parsing": "is not an integer",
    "int_type": "is not an integer",
    "int_from_float": "is not an integer",
    "bool_parsing": "is not a boolean",
    "bool_type": "is not a boolean",
    "datetime_parsing": "is not a date-time",
    "datetime_from_date_parsing": "is not a date-time",
    "datetime_type": "is not a date-time",
    "string_type": "is not a string",
    "list_type": "is not a list",
    "model_type": "is not an object",
    "model_attributes_type": "is not an object",
    "dict_type": "is not an object",
}


def parse_body(endpoint: str, response: httpx.Response, model: type[M]) -> M:
    """The body as `model`, or BadExchangeResponse naming the first field that does not fit."""
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise BadExchangeResponse(
            f"{endpoint}: the exchange answered {response.status_code} with a body that is not JSON: "
            f"{response.text[:120]!r}",
            endpoint=endpoint,
            value=response.text[:200],
        ) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise describe_invalid(endpoint, exc) from None


def describe_invalid(endpoint: str, exc: ValidationError) -> BadExchangeResponse:
    """A BadExchangeResponse such as "list_products: products[3].price: 'abc' is not a decimal"."""
    error = exc.errors(include_url=False)[0]
    return BadExchangeResponse(
        f"{endpoint}: {explain(exc)}", endpoint=endpoint, field=field_path(error["loc"]), value=error.get("input")
    )


def explain(exc: ValidationError) -> str:
    """The first problem of a ValidationError as "path: what is wrong"."""
    error = exc.errors(include_url=False)[0]
    if error["type"] == "missing":
        problem = "is missing"
    elif error["type"] == "value_error":
        problem = str(error["ctx"]["error"])
    else:
        problem = f"{_short(error['input'])} {EXPECTED.get(error['type'], '- ' + error['msg'].lower())}"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{field_path(error['loc']) or '(body)'}: {problem}{more}"


def field_path(loc: tuple[int | str, ...]) -> str:
    """("products", 3, "price") as "products[3].price"."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def rejection(endpoint: str, response: httpx.Response) -> ExchangeRejected:
    """ExchangeRejected from a 4xx body in Coinbase's {error, message, error_details} shape (or the v2 errors list)."""
    body = _json_or_none(response)
    error = message = details = None
    if isinstance(body, dict):
        if isinstance(body.get("errors"), list) and body["errors"] and isinstance(body["errors"][0], dict):
            first = body["errors"][0]
            error, message = _str(first.get("id")), _str(first.get("message"))
        else:
            error, message = _str(body.get("error")), _str(body.get("message"))
            details = _str(body.get("error_details"))
    elif response.text:
        message = response.text[:200]
    summary = ": ".join(part for part in (error, message or details) if part) or "no reason given"
    return ExchangeRejected(
        f"{endpoint}: the exchange rejected the request with {response.status_code}: {summary}",
        status=response.status_code,
        error=error,
        error_message=message,
        error_details=details,
    )


def order_refusal(client_order_id: str, response: CreateOrderResponse) -> ExchangeRejected:
    """ExchangeRejected for a create_order answer with success=false, e.g. INSUFFICIENT_FUND."""
    error = response.error_response
    if error is None:
        reason = response.failure_reason or "no reason given"
        return ExchangeRejected(
            f"create_order {client_order_id!r}: the exchange refused the order: {reason}",
            status=200,
            error=response.failure_reason,
        )
    # Coinbase fills the reason fields that do not apply with UNKNOWN_FAILURE_REASON and the like.
    reasons = (error.error, error.preview_failure_reason, error.new_order_failure_reason)
    known = [r for r in dict.fromkeys(reasons) if r and not r.startswith("UNKNOWN_")]
    reason = ", ".join(known) or "no reason given"
    message = f" ({error.message})" if error.message else ""
    return ExchangeRejected(
        f"create_order {client_order_id!r}: the exchange refused the order: {reason}{message}",
        status=200,
        error=error.error,
        error_message=error.message,
        error_details=error.error_details,
        preview_failure_reason=error.preview_failure_reason,
        new_order_failure_reason=error.new_order_failure_reason,
    )


def retry_after_s(response: httpx.Response, *, now: float) -> float | None:
    """The wait a 429 advises: Retry-After (seconds or an HTTP date), else x-ratelimit-reset (seconds or epoch)."""
    retry_after = response.headers.get("retry-after")
    if retry_after:
        try:
            seconds = float(retry_after)
        except ValueError:
            seconds = None
        if seconds is not None:
            return max(seconds, 0.0) if math.isfinite(seconds) else None
        try:
            return max(email.utils.parsedate_to_datetime(retry_after).timestamp() - now, 0.0)
        except (TypeError, ValueError):
            pass
    reset = response.headers.get("x-ratelimit-reset")
    if reset:
        try:
            value = float(reset)
        except ValueError:
            return None
        if not math.isfinite(value):
            return None
        if value >= EPOCH_MS_THRESHOLD:
            value = value / 1000 - now
        elif value >= EPOCH_S_THRESHOLD:
            value -= now
        return max(value, 0.0)
    return None


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None


def _str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True, slots=True)
class UnreadableProduct:
    """A product of the list that does not fit the documented shape: which one, which field, what is wrong."""

    product_id: str
    field: str
    problem: str


def read_products(raw: list[dict[str, Any]]) -> tuple[list[Product], list[UnreadableProduct]]:
    """Each product of a raw listing as a Product, and the ones that could not be read with the reason."""
    products, unreadable = [], []
    for index, item in enumerate(raw):
        product_id = item.get("product_id") if isinstance(item, dict) else None
        name = product_id if isinstance(product_id, str) and product_id else f"products[{index}]"
        try:
            products.append(Product.model_validate(item))
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            unreadable.append(UnreadableProduct(name, field_path(error["loc"]) or "(product)", explain(exc)))
    return products, unreadable
