"""Packing retrieved chunks into the prompt's token budget, counted with the model's tokenizer.

The budget is what the context window leaves: ``n_ctx`` minus the prompt without sources
(system instructions, question, template tokens) minus the answer's ``max_tokens``, further
capped by ``max_source_tokens`` (small models answer worse from long prompts).  Chunks go in
rank order; one that does not fit is skipped and the next, shorter one tried, so the prompt
never overflows.  When not even the best chunk fits, it is cut to the budget at a sentence or
word boundary rather than dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Packed:
    """Which chunks went in (indices into the candidates), their rendered text and tokens."""

    indices: tuple[int, ...]
    texts: tuple[str, ...]
    tokens: tuple[int, ...]
    truncated: bool = False

    @property
    def total(self) -> int:
        return sum(self.tokens)


def _cut(text: str, keep_chars: int) -> str:
    head = text[:keep_chars]
    for mark in (". ", "\n\n", "\n", " "):
        i = head.rfind(mark)
        if i > keep_chars // 2:
            return head[: i + 1].rstrip() + " …"
    return head.rstrip() + " …"


def pack(
    rendered: Sequence[str],
    budget: int,
    count_tokens: Callable[[str], int],
    *,
    max_chunks: int | None = None,
) -> Packed:
    """Choose the rendered chunks (best first) whose tokens fit ``budget`` together."""
    if budget <= 0:
        return Packed((), (), ())
    indices: list[int] = []
    texts: list[str] = []
    tokens: list[int] = []
    used = 0
    for i, text in enumerate(rendered):
        if max_chunks is not None and len(indices) >= max_chunks:
            break
        n = count_tokens(text)
        if used + n <= budget:
            indices.append(i)
            texts.append(text)
            tokens.append(n)
            used += n
    if indices or not rendered:
        return Packed(tuple(indices), tuple(texts), tuple(tokens))
    # Not even the best chunk fits: cut it down until it does.
    text = rendered[0]
    n = count_tokens(text)
    while n > budget and len(text) > 16:
        text = _cut(text, max(16, int(len(text) * budget / n * 0.95)))
        n = count_tokens(text)
    if n > budget:
        return Packed((), (), ())
    log.info("the best chunk was cut to %d tokens to fit the prompt", n)
    return Packed((0,), (text,), (n,), truncated=True)
