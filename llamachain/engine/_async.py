"""Run a blocking token iterator in a worker thread and consume it from asyncio.

The event loop never blocks on llama.cpp.  When the consumer stops early (cancelled task,
``break`` out of ``async for``), the cancel event is set and the worker stops generating at
the next token, releasing the model for other callers.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


async def aiter_in_thread(
    make_iter: Callable[[threading.Event], Iterator[T]],
) -> AsyncIterator[T]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    cancel = threading.Event()

    def put(item: object) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # loop closed: the consumer is gone
            cancel.set()

    def worker() -> None:
        try:
            for item in make_iter(cancel):
                put(item)
                if cancel.is_set():
                    break
        except BaseException as e:
            put(_Raise(e))
        finally:
            put(_DONE)

    thread = threading.Thread(target=worker, name="llamachain-generate", daemon=True)
    thread.start()
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                break
            if isinstance(item, _Raise):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        cancel.set()


class _Raise:
    def __init__(self, error: BaseException) -> None:
        self.error = error
