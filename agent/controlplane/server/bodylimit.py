"""Request body limit of the reference control plane, enforced while the body streams in.

FastAPI reads a whole body before validating it, so a 30 MB event was held in
memory (and stored) before any field limit could refuse it. This ASGI
middleware sits in front: a declared `Content-Length` above the limit is
refused before a byte is read, and a body without one (chunked transfer) is
counted as it arrives and refused as soon as it passes the limit. Either way
the answer is `413 {"error": "request_too_large", ...}` and at most `limit`
bytes were ever buffered.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: default limit: a deployment spec, an event or a heartbeat of hundreds of deployments fit
DEFAULT_MAX_BODY_BYTES = 1024 * 1024


class BodyLimit:
    """Refuse request bodies larger than `limit` bytes with 413, reading at most `limit`."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is None:
            await _error(send, 400, "invalid_request", "invalid Content-Length header")
            return
        if declared > self.limit:
            await self._too_large(send, f"Content-Length {declared}")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # http.disconnect: nobody to answer
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                await self._too_large(send, f"more than {self.limit} bytes")
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    async def _too_large(self, send: Send, seen: str) -> None:
        await _error(send, 413, "request_too_large",
                     f"request body too large ({seen}); the limit is {self.limit} bytes "
                     "(control-plane serve --max-body-bytes)")


def _content_length(scope: Scope) -> int | None:
    """The declared length, 0 when absent (chunked or no body), None when malformed."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return 0


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the buffered body over once, then waits for the disconnect
    (the long poll watches for it)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _error(send: Send, status: int, error: str, detail: str) -> None:
    body = json.dumps({"error": error, "detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]})
    await send({"type": "http.response.body", "body": body})
