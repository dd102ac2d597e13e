"""ASGI layers in front of every service: request ids, the token on writes and a cap on request bodies.

They run before any route reads the body, so a caller without the token, or with a body larger than
the service accepts, is answered without the body ever being read into memory.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.logging import request_id_var

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# A few KiB is more than any API body of the stack needs; routes that take more get their own limit.
DEFAULT_MAX_BODY_BYTES = 16 * 1024
MAX_REQUEST_ID = 128


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def token_matches(expected: str, header_value: bytes | None) -> bool:
    """Constant-time check of an `Authorization: Bearer <token>` header value."""
    return header_value is not None and hmac.compare_digest(header_value, f"Bearer {expected}".encode())


def scope_of(header_value: bytes | None, *, service: str, operator: str) -> str | None:
    """'operator', 'service' or None for the bearer token given; both comparisons always run, in constant time."""
    is_operator = token_matches(operator, header_value)
    is_service = token_matches(service, header_value)
    return "operator" if is_operator else "service" if is_service else None


def request_id_of(scope: Scope) -> str:
    """The caller's X-Request-ID (bounded), or a new one."""
    value = header(scope, b"x-request-id")
    return value.decode("latin-1")[:MAX_REQUEST_ID] if value else uuid.uuid4().hex[:16]


def with_request_id(send: Send, rid: str) -> Send:
    """A send callable that adds X-Request-ID to the answer."""

    async def send_with_id(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode("latin-1"))]
        await send(message)

    return send_with_id


async def send_error(
    send: Send, status: int, code: str, message: str, details: dict[str, Any] | None = None, **headers: str
) -> None:
    """The stack's JSON error shape, from bare ASGI."""
    body = orjson.dumps({"error": code, "message": message, "details": details or {}})
    extra = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyTooLarge(Exception):
    pass


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body, or BodyTooLarge as soon as it passes `limit` bytes."""
    chunks, seen = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        seen += len(chunk)
        if seen > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive callable that hands an already-read body to the next app once, then defers to the real one."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def declared_length(scope: Scope) -> int | None:
    value = header(scope, b"content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def too_large(send: Send, limit: int) -> Any:
    return send_error(send, 413, "body_too_large", f"request body is larger than {limit} bytes", {"max_bytes": limit})


class RequestGuard:
    """Request id in the logs and on the answer; the token on writes under the protected prefixes, checked
    before the body is read; bodies capped per path prefix (413 in the stack's JSON error shape)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str,
        operator_token: str,
        protected: tuple[str, ...],
        operator_routes: tuple[str, ...] = (),
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        body_limits: Mapping[str, int] | None = None,
    ):
        self.app = app
        self.token = token
        self.operator_token = operator_token
        self.protected = protected
        # "METHOD /path/prefix" of the writes only the operator may make
        self.operator_routes = tuple(tuple(route.split(" ", 1)) for route in operator_routes)
        self.max_body_bytes = max_body_bytes
        self.body_limits = sorted((body_limits or {}).items(), key=lambda item: -len(item[0]))

    def body_limit(self, path: str) -> int:
        return next((limit for prefix, limit in self.body_limits if path.startswith(prefix)), self.max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id_of(scope)
        token = request_id_var.set(rid)
        send_with_id = with_request_id(send, rid)

        try:
            path, method = scope["path"], scope["method"]
            if method in WRITE_METHODS and path.startswith(self.protected):
                given = scope_of(header(scope, b"authorization"), service=self.token, operator=self.operator_token)
                needs_operator = any(method == m and path.startswith(prefix) for m, prefix in self.operator_routes)
                if given is None:
                    wanted = "TRADER_OPERATOR_TOKEN" if needs_operator else "TRADER_API_TOKEN"
                    await send_error(
                        send_with_id,
                        401,
                        "unauthorized",
                        f"missing or wrong bearer token: send 'Authorization: Bearer <{wanted}>' on writes",
                        {"method": method, "path": path},
                    )
                    return
                if needs_operator and given != "operator":
                    await send_error(
                        send_with_id,
                        403,
                        "forbidden",
                        "this change is the operator's: send 'Authorization: Bearer <TRADER_OPERATOR_TOKEN>'",
                        {"method": method, "path": path},
                    )
                    return
            limit = self.body_limit(path)
            length = declared_length(scope)
            if length is not None and length > limit:
                await too_large(send_with_id, limit)
                return
            if length is None and method in WRITE_METHODS:
                # A chunked body has no declared size: read it here, up to the cap (the server enforces a
                # declared Content-Length, so those bodies are never longer than declared).
                try:
                    receive = replay(await read_body(receive, limit), receive)
                except BodyTooLarge:
                    await too_large(send_with_id, limit)
                    return
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)
