"""Server-sent events: the framing, and a streaming response that always closes its source.

A streamed answer is an async generator that owns a running generation.  Starlette stops
iterating it when the client goes away (the request's task is cancelled, or a send fails) but
leaves closing it to the garbage collector; :class:`EventStream` closes it at once, so the
generator's ``finally`` runs and the model stops at its next token.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Send

#: Headers that keep proxies from buffering or caching an event stream.
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def event(data: Any, name: str | None = None) -> str:
    """One SSE event: ``event: name`` (if given) and one ``data:`` line of JSON (or text)."""
    text = (
        data
        if isinstance(data, str)
        else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    )
    # JSON never holds a raw newline; plain text is split into data lines as SSE requires.
    body = "".join(f"data: {line}\n" for line in text.split("\n"))
    return (f"event: {name}\n" if name else "") + body + "\n"


class EventStream(StreamingResponse):
    """``text/event-stream`` from an async iterator of already framed events."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[str]) -> None:
        super().__init__(content, headers=HEADERS)

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            await aclose(self.body_iterator)


async def aclose(iterator: Any) -> None:
    """Close an async generator now, even inside a cancelled task (its cleanup must run)."""
    import anyio

    close = getattr(iterator, "aclose", None)
    if close is None:
        return
    with anyio.CancelScope(shield=True):
        await close()


async def primed(iterator: AsyncIterator[Any]) -> tuple[Any, bool]:
    """The iterator's first item, read before the response starts, so that an error in
    preparing the answer (a bad filter, a prompt too long) is an ordinary HTTP error rather
    than a stream that breaks.  ``(item, False)``; ``(None, True)`` when it is empty."""
    try:
        return await iterator.__anext__(), False
    except StopAsyncIteration:
        return None, True
    except BaseException:
        await aclose(iterator)
        raise
