"""Request-body size limits, enforced before a handler reads (or buffers) the body.

A declared ``Content-Length`` over the limit is refused at once; a body without one (chunked)
is counted as it arrives and refused as soon as it passes the limit.  Either way the client gets
413 with a JSON message, and nothing of the request reaches the knowledge base.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from fastapi import HTTPException

Scope = dict[str, Any]
Message = dict[str, Any]


class _TooLarge(HTTPException):
    """Raised from ``receive``: FastAPI passes HTTP exceptions from body parsing on as they are
    (other errors there become a 400), so the app's handler answers 413 itself."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(status_code=413, detail=_message(size, limit))


def _mib(n: int) -> str:
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} bytes"
    return f"{n / (1024 * 1024):.1f} MiB"


class BodyLimitMiddleware:
    """ASGI middleware: bodies up to ``max_bytes`` (``upload_bytes`` on ``upload_paths``)."""

    def __init__(
        self,
        app: Any,
        *,
        max_bytes: int,
        upload_bytes: int,
        upload_paths: Sequence[str] = (),
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.upload_bytes = upload_bytes
        # A multipart body carries its boundaries and headers besides the file itself.
        self.upload_paths = frozenset(upload_paths)

    def _limit(self, path: str) -> tuple[int, int]:
        if path in self.upload_paths:
            return self.upload_bytes, self.upload_bytes + 64 * 1024
        return self.max_bytes, self.max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        shown, limit = self._limit(scope.get("path", ""))
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _reply(send, 400, "invalid Content-Length header")
                    return
        if declared is not None and declared > limit:
            await _reply(send, 413, _message(declared, shown))
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message: Message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge(seen, shown)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _reply(send, 413, _message(seen, shown))


def _message(size: int, limit: int) -> str:
    return f"request body too large ({_mib(size)}; the limit is {_mib(limit)})"


async def _reply(send: Any, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
