"""Saved KV states of shared prompt prefixes, so an interleaved prompt does not evict them.

The live KV state can only serve the prompt that follows it.  A QA chain whose system prompt
is shared by every question loses it as soon as another prompt (a chat turn, a
question-rewriting step) runs in between.  :class:`PrefixSnapshots` keeps a few copies of
sequence 0's KV cells for block-aligned prompt prefixes -- exactly the states the aligned
prefill would rebuild, so restoring one changes no output -- in a bounded LRU.

The store itself is plain Python (unit-tested without a model); :func:`capture` and
:func:`restore` move the bytes to and from llama.cpp.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llamachain.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_MAX_SNAPSHOTS = 8
DEFAULT_MAX_SNAPSHOT_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class Snapshot:
    """The KV cells of sequence 0 after evaluating ``tokens`` (a whole number of blocks)."""

    tokens: tuple[int, ...]
    data: Any  # a ctypes uint8 array, or any object with a length for tests
    size: int


def common_blocks(a: Sequence[int], b: Sequence[int], limit: int, block: int) -> int:
    """Length of the common prefix of ``a`` and ``b``, at most ``limit``, in whole blocks."""
    n = 0
    limit = min(limit, len(a), len(b))
    while n < limit and a[n] == b[n]:
        n += 1
    return n // block * block


class PrefixSnapshots:
    """A thread-safe LRU of :class:`Snapshot`, bounded by count and by total bytes.

    ``max_count=0`` turns it off.  A snapshot larger than ``max_bytes`` is never kept.
    """

    def __init__(
        self, max_count: int = DEFAULT_MAX_SNAPSHOTS, max_bytes: int = DEFAULT_MAX_SNAPSHOT_BYTES
    ) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[int, ...], Snapshot] = OrderedDict()
        self.max_count = 0
        self.max_bytes = 0
        self.configure(max_count, max_bytes)
        self.hits = 0  # prompts that started from a restored snapshot
        self.hit_tokens = 0  # prompt tokens those restores saved evaluating
        self.saves = 0
        self.evictions = 0

    def configure(self, max_count: int, max_bytes: int) -> None:
        """Change the bounds; evicts at once if the store is over them."""
        if max_count < 0:
            raise ConfigError(f"prefix_snapshots must be >= 0 (0: off), got {max_count}")
        if max_bytes < 0:
            raise ConfigError(f"prefix_snapshot_bytes must be >= 0, got {max_bytes}")
        with self._lock:
            self.max_count = max_count
            self.max_bytes = max_bytes
            self._evict()

    @property
    def enabled(self) -> bool:
        return self.max_count > 0 and self.max_bytes > 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def covers(self, tokens: Sequence[int]) -> bool:
        """Whether some snapshot starts with ``tokens`` (it is then marked as recently used)."""
        key = tuple(tokens)
        with self._lock:
            for k in reversed(self._items):
                if len(k) >= len(key) and k[: len(key)] == key:
                    self._items.move_to_end(k)
                    return True
        return False

    def best(self, tokens: Sequence[int], limit: int, block: int) -> tuple[Snapshot | None, int]:
        """The snapshot sharing the most whole blocks with ``tokens`` (up to ``limit``)."""
        found: Snapshot | None = None
        reuse = 0
        with self._lock:
            for snap in self._items.values():
                n = common_blocks(snap.tokens, tokens, limit, block)
                if n > reuse:
                    found, reuse = snap, n
        return found, reuse

    def add(self, snap: Snapshot) -> bool:
        """Keep ``snap`` as the most recent; drops snapshots it covers, then evicts LRU ones."""
        if not self.enabled or snap.size > self.max_bytes:
            return False
        with self._lock:
            n = len(snap.tokens)
            for k in [k for k in self._items if len(k) <= n and snap.tokens[: len(k)] == k]:
                del self._items[k]  # a prefix of the new one: redundant
            self._items[snap.tokens] = snap
            self.saves += 1
            self._evict()
        return True

    def used(self, snap: Snapshot, reused: int) -> None:
        with self._lock:
            if snap.tokens in self._items:
                self._items.move_to_end(snap.tokens)
            self.hits += 1
            self.hit_tokens += reused

    def discard(self, snap: Snapshot) -> None:
        with self._lock:
            self._items.pop(snap.tokens, None)

    def clear(self) -> None:
        """Drop every snapshot (the counters stay)."""
        with self._lock:
            self._items.clear()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "count": len(self._items),
                "bytes": sum(s.size for s in self._items.values()),
                "tokens": sum(len(k) for k in self._items),
                "hits": self.hits,
                "hit_tokens": self.hit_tokens,
                "saves": self.saves,
                "evictions": self.evictions,
                "max_count": self.max_count,
                "max_bytes": self.max_bytes,
            }

    def _evict(self) -> None:
        total = sum(s.size for s in self._items.values())
        while self._items and (len(self._items) > self.max_count or total > self.max_bytes):
            _, old = self._items.popitem(last=False)
            total -= old.size
            self.evictions += 1


# -- moving states in and out of llama.cpp -------------------------------------------------


def capture(llama: Any, tokens: Sequence[int], max_bytes: int) -> Snapshot | None:
    """Snapshot sequence 0, which must hold exactly the KV cells of ``tokens``.

    None if llama.cpp reports no state or it would be larger than ``max_bytes``.
    """
    import ctypes

    import llama_cpp

    size = llama_cpp.llama_state_seq_get_size(llama.ctx, 0)
    if not 0 < size <= max_bytes:
        logger.debug("not keeping a %d-byte snapshot (limit %d)", size, max_bytes)
        return None
    buf = (ctypes.c_uint8 * size)()
    got = llama_cpp.llama_state_seq_get_data(llama.ctx, buf, size, 0)
    if got != size:
        logger.debug("llama_state_seq_get_data wrote %d of %d bytes; not kept", got, size)
        return None
    return Snapshot(tuple(tokens), buf, size)


def restore(llama: Any, snap: Snapshot, keep: int) -> bool:
    """Load ``snap`` into sequence 0 and keep its first ``keep`` tokens; False if it failed.

    ``llama.input_ids`` / ``n_tokens`` are updated to match; on failure the state is empty.
    """
    import llama_cpp

    if llama_cpp.llama_state_seq_set_data(llama.ctx, snap.data, snap.size, 0) == 0:
        llama.reset()
        llama._ctx.kv_cache_seq_rm(-1, 0, -1)
        return False
    if keep < len(snap.tokens):
        llama._ctx.kv_cache_seq_rm(-1, keep, -1)
    llama.input_ids[:keep] = snap.tokens[:keep]
    llama.n_tokens = keep
    llama._requires_eval = True
    return True
