"""Long texts: cut into windows the model reads whole, embed each, average.

Embedding models stop reading after a fixed number of tokens and silently drop the rest.
llamachain never does that: with ``long_text="split"`` a text longer than the model reads is
cut at token boundaries into consecutive windows, and its vector is the token-weighted mean of
the windows' vectors (normalised again when the embedder normalises); with
``long_text="error"`` it raises :class:`EmbeddingError` instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from llamachain.errors import ConfigError, EmbeddingError

T = TypeVar("T")

LongText = Literal["split", "error"]
LONG_TEXT_CHOICES = ("split", "error")


def check_long_text(value: str) -> LongText:
    if value not in LONG_TEXT_CHOICES:
        raise ConfigError(f"long_text must be one of {', '.join(LONG_TEXT_CHOICES)}, got {value!r}")
    return value  # type: ignore[return-value]


@dataclass(frozen=True)
class Piece(Generic[T]):
    """One unit of work for the encoder: the whole text, or one window of it."""

    owner: int  # index of the input text
    item: T  # what is encoded: a string, or token ids
    weight: int  # tokens of the input text it covers


def window_spans(offsets: Sequence[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """Character spans of consecutive windows of at most ``size`` tokens each."""
    if size < 1:
        raise ValueError("window size must be at least one token")
    return [
        (offsets[i][0], offsets[min(i + size, len(offsets)) - 1][1])
        for i in range(0, len(offsets), size)
    ]


def plan(
    texts: Sequence[str],
    counts: Sequence[int],
    limit: int,
    *,
    long_text: LongText,
    offsets: Callable[[str], list[tuple[int, int]]],
    window: int,
    fits: Callable[[str], bool],
    what: str,
) -> list[Piece[str]]:
    """Split the texts whose token count (``counts``) is over ``limit`` into windows.

    ``window`` is the starting window size in text tokens; a window that does not ``fits``
    after all (tokenizers can merge differently at a cut) is shrunk until it does.
    """
    pieces: list[Piece[str]] = []
    for i, (text, n) in enumerate(zip(texts, counts, strict=True)):
        if n <= limit:
            pieces.append(Piece(i, text, max(n, 1)))
            continue
        if long_text == "error":
            raise EmbeddingError(
                f"text {i} is {n} tokens long but {what} reads at most {limit}; split it "
                "before embedding, or pass long_text='split' to embed it in windows"
            )
        spans = offsets(text)
        start = 0
        while start < len(spans):
            size = min(window, len(spans) - start)
            while size > 1:
                a, b = spans[start][0], spans[start + size - 1][1]
                if fits(text[a:b]):
                    break
                size -= max(1, size // 16)
            a, b = spans[start][0], spans[start + size - 1][1]
            pieces.append(Piece(i, text[a:b], size))
            start += size
    return pieces


def combine(
    pieces: Sequence[Piece[Any]], vectors: Any, n_texts: int, normalize: bool
) -> list[list[float]]:
    """One vector per input text: its own, or the token-weighted mean of its windows."""
    import numpy as np

    vectors = np.asarray(vectors, dtype=np.float32)
    if len(pieces) == n_texts:  # nothing was split
        return [[float(x) for x in row] for row in vectors]
    dim = vectors.shape[1]
    sums = np.zeros((n_texts, dim), dtype=np.float64)
    weights = np.zeros(n_texts, dtype=np.float64)
    for piece, vec in zip(pieces, vectors, strict=True):
        sums[piece.owner] += piece.weight * vec.astype(np.float64)
        weights[piece.owner] += piece.weight
    means = sums / weights[:, None]
    if normalize:
        norms = np.linalg.norm(means, axis=1, keepdims=True)
        means = means / np.where(norms == 0.0, 1.0, norms)
    return [[float(x) for x in row] for row in means.astype(np.float32)]
