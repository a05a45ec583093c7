"""Revision tokens: how caches of a Chroma collection (the BM25 index) learn that it changed.

A collection's metadata holds a random token under ``llamachain_revision``
(:data:`~llamachain._chroma.REVISION_KEY`).  Every write through a
:class:`~llamachain.vectorstores.ChromaVectorStore`, in any process, replaces it:

1. before the first write of a batch (or of a lone write) the token becomes a *writing
   marker* (``writing-<random>``), so a process killed in the middle leaves a marker, never a
   token that a cache built before the write would still match;
2. after the last write of the batch (or of the lone write) -- even a failed one -- the token
   becomes a fresh random value (:meth:`Revisions.touch`).

A cache is therefore valid for as long as the token it was built under is still there.  A
marker, or no token at all (a collection written only by other tools), means "unknown": callers
fall back to cheaper, weaker checks (the number of records) and keep nothing on disk.

Two writers of the same collection at once (which the knowledge base's lock prevents) can let a
cache built between the first writer's final touch and the second writer's last write look
valid; if the second writer then dies before its own touch, that cache stays valid until the
next write.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any

from llamachain._chroma import REVISION_KEY, read_metadata, set_metadata
from llamachain.errors import LlamaChainError

logger = logging.getLogger(__name__)

_WRITING = "writing-"


def new_token(writing: bool = False) -> str:
    """A fresh random revision token (a writing marker when ``writing``)."""
    return (_WRITING if writing else "") + uuid.uuid4().hex


def stable_token(value: object) -> str | None:
    """``value`` if it is a usable revision token; ``None`` if absent or a writing marker."""
    if isinstance(value, str) and value and not value.startswith(_WRITING):
        return value
    return None


class Revisions:
    """Keeps one collection's revision token for one store object (thread-safe).

    :attr:`local` counts the writes made through this object (an in-process cache compares
    it to notice them at once, without asking Chroma).
    """

    def __init__(self, client: Any, collection: Any, where: str) -> None:
        self._client = client
        self._collection = collection
        self._where = where
        self._lock = threading.Lock()
        self._local = 0
        self._active = 0  # writes in progress
        self._batches = 0  # open write_batch() blocks
        self._marked = False  # a writing marker of ours is (probably) in the collection

    @property
    def local(self) -> int:
        return self._local

    def bump(self) -> None:
        with self._lock:
            self._local += 1

    def token(self) -> str | None:
        """The collection's revision token (``None``: none, or a write is in progress)."""
        return stable_token(
            read_metadata(self._client, self._collection, self._where).get(REVISION_KEY)
        )

    def _set(self, token: str) -> None:
        set_metadata(self._client, self._collection, {REVISION_KEY: token}, self._where)

    def touch(self) -> str:
        """Store a fresh token (the collection's other metadata is kept); return it."""
        token = new_token()
        with self._lock:
            self._set(token)
            self._marked = False
            self._local += 1
        logger.debug("collection %s is now at revision %s", self._collection.name, token)
        return token

    def _touch_after(self, failed: bool) -> None:
        if not failed:
            self.touch()
            return
        try:
            self.touch()
        except LlamaChainError as e:  # the write's own error is the one to report
            logger.warning(
                "could not record the change of collection %s (%s); caches of it are rebuilt "
                "until its next successful write",
                self._collection.name,
                e,
            )

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Around one write: mark before it, touch after it unless a batch is open."""
        with self._lock:
            if not self._marked:
                self._set(new_token(writing=True))
                self._marked = True
            self._active += 1
        failed = True
        try:
            yield
            failed = False
        finally:
            with self._lock:
                self._active -= 1
                self._local += 1
                due = self._active == 0 and self._batches == 0
            if due:
                self._touch_after(failed)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Writes inside share one marker and one final touch (none if nothing was written)."""
        with self._lock:
            self._batches += 1
        failed = True
        try:
            yield
            failed = False
        finally:
            with self._lock:
                self._batches -= 1
                due = self._batches == 0 and self._active == 0 and self._marked
            if due:
                self._touch_after(failed)

    def forget(self) -> None:
        """The collection was dropped: nothing is left to mark or touch."""
        with self._lock:
            self._marked = False
            self._local += 1
