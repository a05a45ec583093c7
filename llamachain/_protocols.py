"""Small interfaces shared across layers (swappable parts are ``Protocol``s, not base classes)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class ChunkTokenizer(Protocol):
    """What the chunker needs from an embedding model's tokenizer.

    ``token_offsets`` gives the character span ``(start, end)`` of every token of ``text`` in
    order, without special tokens.  ``max_chunk_tokens`` is how many such tokens the embedder
    reads from one document text (its sequence limit minus special tokens and any document
    prefix): a chunk of at most that many tokens is never cut by the embedder.
    """

    def token_offsets(self, text: str) -> list[tuple[int, int]]: ...

    @property
    def max_chunk_tokens(self) -> int: ...


@runtime_checkable
class IdentifiedEmbeddings(Protocol):
    """An embedder that can say what it is, so a knowledge base can record it.

    ``model_id`` is stable across machines and runs for the same weights and settings that
    change the vectors (for example a query/document prefix), ``dimension`` the vector size.
    """

    @property
    def model_id(self) -> str: ...

    @property
    def dimension(self) -> int: ...
