"""A bare-ASGI route for the hot `POST /v1/acquire`, in front of the FastAPI app.

FastAPI's routing, dependency injection and middleware cost more than the Redis decision itself
(about 2,500 requests/s for a constant endpoint on one core, against about 11,800 for bare ASGI).
Quota is asked for before every exchange call, so the common case skips that stack: a request
with the right token and a valid body is decided here, by the same Limiter the FastAPI route uses.
Anything else (no token, a body that does not validate) is replayed to the FastAPI app, so errors
keep one shape and one place.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import orjson
from fastapi import FastAPI
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from services.ratelimit.limiter import Limiter
from shared.errors import TraderError
from shared.logging import request_id_var
from shared.middleware import (
    BodyTooLarge,
    declared_length,
    header,
    read_body,
    replay,
    request_id_of,
    token_matches,
    too_large,
    with_request_id,
)
from shared.quota_models import AcquireDenied, AcquireIn

log = logging.getLogger(__name__)
PATH = "/v1/acquire"
JSON_HEADERS = [(b"content-type", b"application/json")]
# An acquire body is about 100 bytes.
MAX_BODY_BYTES = 4096


class AcquireFastPath:
    """Wraps the whole FastAPI app; the process serves this object."""

    def __init__(self, app: FastAPI, *, token: str):
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        # Without the token the body is never read: the app's guard answers 401 from the headers.
        length = declared_length(scope)
        if not token_matches(self.token, header(scope, b"authorization")) or (length or 0) > MAX_BODY_BYTES:
            await self.app(scope, receive, send)
            return
        rid = request_id_of(scope)
        token = request_id_var.set(rid)
        try:
            try:
                body = await read_body(receive, MAX_BODY_BYTES)
            except BodyTooLarge:
                await too_large(with_request_id(send, rid), MAX_BODY_BYTES)
                return
            try:
                request = AcquireIn.model_validate_json(body)
            except ValidationError:
                await self.app(scope, replay(body, receive), send)
                return
            await self.decide(request, send, rid)
        finally:
            request_id_var.reset(token)

    async def decide(self, request: AcquireIn, send: Send, rid: str) -> None:
        limiter: Limiter = self.app.state.limiter
        try:
            result = await limiter.acquire(request)
        except TraderError as exc:
            await respond(send, exc.status_code, exc.to_body(), rid)
            return
        except Exception as exc:  # answered in the stack's error shape, like the app's own handler does
            log.exception("unexpected error deciding quota for %s", request.endpoint)
            body = {"error": "internal_error", "message": f"unexpected {type(exc).__name__}; see the service log"}
            await respond(send, 500, body | {"details": {}}, rid)
            return
        if isinstance(result, AcquireDenied):
            retry_s = str(max(1, math.ceil(result.retry_after_ms / 1000))).encode()
            await respond(send, 429, result.model_dump(), rid, [(b"retry-after", retry_s)])
        else:
            await respond(send, 200, result.model_dump(), rid)


async def respond(
    send: Send,
    status: int,
    payload: dict[str, Any],
    request_id: str,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    data = orjson.dumps(payload)
    headers = [
        *JSON_HEADERS,
        (b"content-length", str(len(data)).encode()),
        (b"x-request-id", request_id.encode("latin-1")),
    ]
    if extra:
        headers += extra
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
