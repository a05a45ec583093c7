"""Evidence: the passage of the packed sources that best answers the question, to quote.

Documentation answers a question in one place, and usually right after the sentence that
matches the question's words ("If you call ``read()`` on the input stream your application
hangs.  The input stream has no end-of-file marker.").  So the packed chunks are cut into
sentences (paragraphs of prose split at sentence ends; code blocks, list items and table rows
kept whole), every sentence is scored against the question, and the best one is quoted with
the sentence before and after it.

A sentence's score adds, each scaled to the candidates' spread (z-scores):

* **words** -- the question's terms it contains (the BM25 analyzer's stemmed terms), each
  weighted by how rare it is among the candidate sentences;
* **meaning** -- the embedding similarity to the question, when an embedder is given
  (half weight; it misses exact names but catches paraphrase);
* **rank** -- the retrieval rank of its chunk (half weight): the first chunk is the likeliest.

The weights were chosen on two documentation sets (see ``benchmarks/bench_qa.py``).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

_PARAGRAPHS = re.compile(r"\n[ \t]*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[A-Z0-9`*\"'(\[:_.])")
_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "cf.", "Mr.", "Dr.", "No.", "approx.")
_RULE = re.compile(r"^\s*([=\-~^\"'`#*+_.:])\1{2,}\s*$")  # rst heading underlines, hr
_ITEM = re.compile(r"^\s*(?:[-*+•]|\d+[.)]|#\.)\s+")
_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^#{1,6}\s")
# a directive line without content of its own: ".. code-block:: python", ".. note::"
_DIRECTIVE_LINE = re.compile(
    r"^\s*\.\. (?:code-block|code|sourcecode|highlight|literalinclude|include|image|figure|"
    r"toctree|only|tab|rst-class|note|warning|tip|important|caution|seealso|admonition|"
    r"versionadded|versionchanged|deprecated|autoclass|automodule|autofunction)::.*$|"
    r"^\s*:(?:caption|language|linenos|emphasize-lines|name|class|members|noindex):(?:\s|$)"
)
MAX_UNIT_CHARS = 400

WORDS_WEIGHT = 1.0
MEANING_WEIGHT = 0.5
RANK_WEIGHT = 0.5


@dataclass(frozen=True)
class Passage:
    """A quotable piece of one packed chunk: the best sentence and its neighbours."""

    chunk: int  # index into the packed chunks
    text: str
    score: float
    sentence: str  # the best-matching sentence itself


@lru_cache(maxsize=1)
def _analyzer() -> Any:
    from llamachain._bm25 import Analyzer

    return Analyzer()


def terms(text: str) -> list[str]:
    """The BM25 analyzer's terms: lower case, no stop words, stemmed."""
    return list(_analyzer().terms(text))


def _clip(text: str, limit: int = MAX_UNIT_CHARS) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[: cut if cut > limit // 2 else limit].rstrip(",;:") + " …"


def _sentences(prose: str) -> list[str]:
    flat = " ".join(prose.split())
    # protect abbreviations from the sentence-end rule
    for i, abbr in enumerate(_ABBREVIATIONS):
        flat = flat.replace(abbr, f"\x00{i}\x00")
    parts = _SENTENCE_END.split(flat)
    out = []
    for part in parts:
        for i, abbr in enumerate(_ABBREVIATIONS):
            part = part.replace(f"\x00{i}\x00", abbr)
        if part.strip():
            out.append(part.strip())
    return out


def split_units(text: str) -> list[str]:
    """Sentences of prose; code blocks, list items and table rows whole; rules dropped."""
    units: list[str] = []
    for para in _PARAGRAPHS.split(text):
        raw = [ln for ln in para.splitlines() if ln.strip()]
        lines = [
            ln
            for i, ln in enumerate(raw)
            if not _RULE.match(ln)  # rst underlines and overlines
            and not (i + 1 < len(raw) and _RULE.match(raw[i + 1]))  # rst headings
            and not _HEADING.match(ln)  # markdown headings
        ]
        if not lines:
            continue
        lines = [ln for ln in lines if not _DIRECTIVE_LINE.match(ln)]
        if not lines:
            continue
        code = all(ln.startswith(("    ", "\t")) for ln in lines) or _FENCE.match(lines[0])
        if code or all(ln.lstrip().startswith(("|", "+-", "+=")) for ln in lines):
            block = [ln for ln in lines if not _FENCE.match(ln)]
            if block:
                units.append(_clip(" ".join(ln.strip() for ln in block)))
            continue
        prose: list[str] = []
        for ln in lines:
            if _ITEM.match(ln) and prose:
                units.extend(_clip(s) for s in _sentences(" ".join(prose)))
                prose = []
            prose.append(ln.strip())
        if prose:
            units.extend(_clip(s) for s in _sentences(" ".join(prose)))
    return [u for u in units if len(u) > 2]


_ROLE = re.compile(r":[\w:.+-]+:`~?([^`<]*?)\s*(?:<[^>`]*>)?`")
_LITERAL = re.compile(r"``([^`]+)``")
_LINK = re.compile(r"\[([^\]]+)\]\((?:[^)\s]+)\)")
_DIRECTIVE = re.compile(r"(?:^|\s)\.\. [\w:-]+::\s*")


def readable(text: str) -> str:
    """reStructuredText / Markdown markup reduced for quoting: ``:func:`~a.b``` becomes
    ```a.b```, ````x```` becomes ```x```, links keep their text, directives their argument."""
    text = _ROLE.sub(lambda m: f"`{m.group(1)}`" if m.group(1) else "", text)
    text = _LITERAL.sub(r"`\1`", text)
    text = _LINK.sub(r"\1", text)
    return _DIRECTIVE.sub(" ", text).strip()


def _z(values: Sequence[float]) -> list[float]:
    if not values:
        return []
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return [(v - mean) / sd if sd > 1e-9 else 0.0 for v in values]


def score_sentences(
    question: str,
    sentences: Sequence[str],
    ranks: Sequence[int],
    embed: Callable[[str, Sequence[str]], Sequence[float]] | None = None,
) -> list[float]:
    """Scores of ``sentences`` for ``question`` (higher is better); ``ranks`` from 0."""
    q_terms = set(terms(question))
    s_terms = [set(terms(s)) for s in sentences]
    df = Counter(t for ts in s_terms for t in ts)
    n = len(sentences)
    words = [sum(math.log(1 + n / df[t]) for t in ts & q_terms) for ts in s_terms]
    total = [WORDS_WEIGHT * w for w in _z(words)]
    prior = _z([1.0 / (1 + r) for r in ranks])
    total = [t + RANK_WEIGHT * p for t, p in zip(total, prior, strict=True)]
    if embed is not None and sentences:
        meaning = _z(list(embed(question, sentences)))
        total = [t + MEANING_WEIGHT * m for t, m in zip(total, meaning, strict=True)]
    return total


def best_passages(
    question: str,
    texts: Sequence[str],
    *,
    embed: Callable[[str, Sequence[str]], Sequence[float]] | None = None,
    top: int = 1,
    before: int = 1,
    after: int = 1,
) -> list[Passage]:
    """The ``top`` best passages of ``texts`` (the packed chunks, best-ranked first)."""
    per_chunk = [split_units(t) for t in texts]
    index = [(c, i) for c, units in enumerate(per_chunk) for i in range(len(units))]
    if not index:
        return []
    sentences = [per_chunk[c][i] for c, i in index]
    scores = score_sentences(question, sentences, [c for c, _ in index], embed)
    order = sorted(range(len(index)), key=lambda j: -scores[j])
    taken: set[tuple[int, int]] = set()
    out: list[Passage] = []
    for j in order:
        if len(out) >= top:
            break
        c, i = index[j]
        span = range(max(0, i - before), min(len(per_chunk[c]), i + after + 1))
        if any((c, k) in taken for k in span):
            continue
        taken.update((c, k) for k in span)
        text = readable(" ".join(per_chunk[c][k] for k in span))
        out.append(Passage(chunk=c, text=text, score=scores[j], sentence=sentences[j]))
    return out


def embedder_similarity(embeddings: Any) -> Callable[[str, Sequence[str]], list[float]]:
    """A ``(question, sentences) -> cosine similarities`` function over LangChain embeddings."""

    def similarity(question: str, sentences: Sequence[str]) -> list[float]:
        q = embeddings.embed_query(question)
        vs = embeddings.embed_documents(list(sentences))
        qn = math.sqrt(sum(x * x for x in q)) or 1.0
        out = []
        for v in vs:
            vn = math.sqrt(sum(x * x for x in v)) or 1.0
            out.append(sum(a * b for a, b in zip(q, v, strict=False)) / (qn * vn))
        return out

    return similarity
