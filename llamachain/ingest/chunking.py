"""Token-aware chunking: sections to chunks that the embedder reads whole.

Each section is tokenized once with the embedder's own tokenizer (character offsets of its
tokens), then cut by those offsets:

* **Size.** A chunk has at most ``chunk_tokens`` tokens.  The default, and the hard
  maximum, is the tokenizer's ``max_chunk_tokens`` (for all-MiniLM-L6-v2: 256 minus the two
  special tokens): a larger request is silently lowered to it, because the embedder would
  otherwise cut the chunk's end off and that text would never be searchable.
* **Boundaries.** Within that budget a chunk ends at the best boundary available -- a blank
  line (paragraph), then the end of a sentence, a line break, a space between words -- taking
  the latest boundary of the best kind found in the last two thirds of the budget.  A word is
  only cut when it alone is longer than the budget (a long URL or a base64 blob); it is then
  cut between two of its tokens.
* **Overlap.** The next chunk starts up to ``overlap_tokens`` tokens before the previous one
  ended (clamped below half the chunk size), at the earliest sentence start in that range,
  else the earliest word start.  A chunk that ends at a paragraph break has no overlap: the
  next one starts with the next paragraph; nor does one whose overlap would leave no room to
  end at a word boundary (it starts where the previous chunk ended instead).
* **Sections.** A chunk never spans two sections (it carries its section's heading path and
  page); empty or whitespace-only chunks are never produced.
* **Offsets.** A chunk's text is an exact substring of its section's text, starting at
  ``start``, without leading or trailing whitespace; together the chunks of a section cover
  all of its non-whitespace text.

The same input always gives the same chunks.  The work is linear in the text's length.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llamachain._protocols import ChunkTokenizer
from llamachain.errors import ConfigError

if TYPE_CHECKING:
    from llamachain.ingest.loaders import LoadedDocument

log = logging.getLogger(__name__)

# Boundary kinds, best first; a cut "before token i" has the kind of the gap before it.
PARAGRAPH, SENTENCE, LINE, WORD, INSIDE_WORD = 4, 3, 2, 1, 0
_KIND = [bytes([k]) for k in range(5)]
_SENTENCE_END = frozenset(".!?\u2026")
_CJK_SENTENCE_END = frozenset("\u3002\uff01\uff1f")
_CLOSERS = frozenset("\"')]}\u201d\u2019\u00bb*_`")


@dataclass(frozen=True)
class Chunk:
    """A piece of a document small enough to embed whole."""

    text: str
    index: int  # position in the document, 0-based
    heading: str  # heading path of its section
    page: int | None  # page of its section (paged formats)
    n_tokens: int  # tokens by the embedder's tokenizer
    start: int  # character offset of ``text`` within its section's text


def effective_sizes(
    tokenizer: ChunkTokenizer, chunk_tokens: int | None = None, overlap_tokens: int = 32
) -> tuple[int, int]:
    """``(chunk size, overlap)`` in tokens after clamping: the size to at most
    ``tokenizer.max_chunk_tokens``, the overlap to below half the size."""
    if not isinstance(tokenizer, ChunkTokenizer):
        raise ConfigError(
            f"{type(tokenizer).__name__} cannot tell how long a chunk may be: chunking needs "
            "token_offsets() and max_chunk_tokens (use llamachain's embeddings, or implement "
            "llamachain._protocols.ChunkTokenizer)"
        )
    maximum = int(tokenizer.max_chunk_tokens)
    if maximum < 1:
        raise ConfigError(f"the tokenizer's max_chunk_tokens is {maximum}; it must be >= 1")
    if chunk_tokens is None:
        size = maximum
    elif chunk_tokens < 1:
        raise ConfigError(f"chunk_tokens is {chunk_tokens}; it must be at least 1")
    else:
        if chunk_tokens > maximum:
            log.debug("chunk_tokens %d lowered to the embedder's %d", chunk_tokens, maximum)
        size = min(chunk_tokens, maximum)
    overlap = max(0, min(int(overlap_tokens or 0), (size - 1) // 2))
    return size, overlap


def chunk_document(
    doc: LoadedDocument,
    tokenizer: ChunkTokenizer,
    chunk_tokens: int | None = None,
    overlap_tokens: int = 32,
) -> list[Chunk]:
    """Cut ``doc``'s sections into chunks of at most ``chunk_tokens`` tokens (see the module
    documentation for the rules).  ``chunk_tokens`` defaults to, and is lowered to,
    ``tokenizer.max_chunk_tokens``; ``overlap_tokens`` is clamped below half of it."""
    size, overlap = effective_sizes(tokenizer, chunk_tokens, overlap_tokens)
    chunks: list[Chunk] = []
    for section in doc.sections:
        text = section.text
        for start, end, n in split_text(text, tokenizer, size, overlap):
            chunks.append(
                Chunk(text[start:end], len(chunks), section.heading, section.page, n, start)
            )
    return chunks


# ---- the cutter -------------------------------------------------------------------------------


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _cut_at(text: str, offsets: list[tuple[int, int]], i: int) -> int:
    """Character position of a cut before token ``i``: after the last whitespace between it
    and the token before (characters the tokenizer skipped stay with their word)."""
    a, b = offsets[i - 1][1], offsets[i][0]
    for j in range(b - 1, a - 1, -1):
        if text[j].isspace():
            return j + 1
    return a if a and text[a - 1] in _CJK_SENTENCE_END else b


def _gap_kind(text: str, gap: str, prev_end: int) -> int:
    newlines = gap.count("\n")
    if newlines >= 2:
        return PARAGRAPH
    c = text[prev_end - 1] if prev_end > 0 else ""
    if c in _CLOSERS and prev_end > 1:
        c = text[prev_end - 2]
    if c in _SENTENCE_END or c in _CJK_SENTENCE_END:
        return SENTENCE
    if newlines:
        return LINE
    if any(ch.isspace() for ch in gap):
        return WORD
    return INSIDE_WORD  # characters the tokenizer skipped, glued to their neighbours


def boundary_kinds(text: str, offsets: list[tuple[int, int]]) -> bytearray:
    """``kinds[i]`` is the kind of boundary before token ``i`` (0 for ``i == 0``)."""
    n = len(offsets)
    kinds = bytearray(n + 1)
    if not n:
        return kinds
    prev_end = offsets[0][1]
    for i in range(1, n):
        start, end = offsets[i]
        if start > prev_end:
            gap = text[prev_end:start]
            if gap == " ":  # the common case, kept fast
                c = text[prev_end - 1]
                kinds[i] = SENTENCE if c in _SENTENCE_END else WORD
                if c in _CLOSERS:
                    kinds[i] = _gap_kind(text, gap, prev_end)
            else:
                kinds[i] = _gap_kind(text, gap, prev_end)
        elif start < end and text[start].isspace():
            # A tokenizer whose tokens carry their leading whitespace (SentencePiece-like).
            j = start
            while j < end and text[j].isspace():
                j += 1
            kinds[i] = _gap_kind(text, text[start:j], prev_end)
        elif prev_end > 0 and text[prev_end - 1] in _CJK_SENTENCE_END:
            kinds[i] = SENTENCE
        prev_end = max(prev_end, end)
    return kinds


def _last(kinds: bytearray, lo: int, hi: int, best: int) -> int:
    """Latest position in ``[lo, hi)`` with the best kind >= ``best`` present there, or -1."""
    for k in range(PARAGRAPH, best - 1, -1):
        j = kinds.rfind(_KIND[k], lo, hi)
        if j >= 0:
            return j
    return -1


def _last_any(kinds: bytearray, lo: int, hi: int, least: int) -> int:
    """Latest position in ``[lo, hi)`` of any kind >= ``least``, or -1."""
    return max(kinds.rfind(_KIND[k], lo, hi) for k in range(least, PARAGRAPH + 1))


def _first_any(kinds: bytearray, lo: int, hi: int, least: int) -> int:
    """Earliest position in ``[lo, hi)`` of any kind >= ``least``, or -1."""
    found = [j for k in range(least, PARAGRAPH + 1) if (j := kinds.find(_KIND[k], lo, hi)) >= 0]
    return min(found) if found else -1


def split_text(
    text: str, tokenizer: ChunkTokenizer, size: int, overlap: int
) -> list[tuple[int, int, int]]:
    """``(start, end, n_tokens)`` of the chunks of one section's text (sizes already clamped,
    see :func:`effective_sizes`)."""
    offsets = tokenizer.token_offsets(text)
    n = len(offsets)
    if n <= size:
        start, end = _strip(text, 0, len(text))
        return [(start, end, n)] if start < end else []
    kinds = boundary_kinds(text, offsets)
    min_fill = max(1, size // 3)
    out: list[tuple[int, int, int]] = []
    s, prev_e = 0, 0
    while True:
        hard = s + size  # cutting before token `hard` leaves exactly `size` tokens
        if hard >= n:
            e = n
        else:
            lo = max(s + min_fill, prev_e + 1)
            e = _last(kinds, lo, hard + 1, WORD)
            if e < 0:  # no word boundary late enough: the latest one earlier, or cut a word
                e = _last_any(kinds, max(s + 1, prev_e + 1), lo, WORD)
                if e < 0:
                    if s < prev_e:  # the overlap leaves no room for the next word: drop it
                        s = prev_e
                        continue
                    e = hard
        cs = 0 if s == 0 else _cut_at(text, offsets, s)
        ce = len(text) if e >= n else _cut_at(text, offsets, e)
        n_tok = e - s
        if (s and not kinds[s]) or (e < n and not kinds[e]):
            # Cut inside a word: its pieces may tokenize differently on their own.
            n_tok = len(tokenizer.token_offsets(text[cs:ce]))
            while n_tok > size and e - 1 > max(s, prev_e):
                e -= min(n_tok - size, e - 1 - max(s, prev_e))
                ce = _cut_at(text, offsets, e)
                n_tok = len(tokenizer.token_offsets(text[cs:ce]))
        cs, ce = _strip(text, cs, ce)
        if cs < ce:
            out.append((cs, ce, n_tok))
        if e >= n:
            return out
        prev_e = e
        if overlap and kinds[e] != PARAGRAPH:
            lo = max(e - overlap, s + 1)
            nxt = _first_any(kinds, lo, e, SENTENCE)
            if nxt < 0:
                nxt = _first_any(kinds, lo, e, WORD)
            s = nxt if nxt >= 0 else e
        else:
            s = e
