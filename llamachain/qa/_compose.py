"""From the model's reply to a grounded answer: validate citations, check support, quote.

The rules, in order:

1. ``[n]`` markers naming no packed source are removed (structured replies: citation values
   are already limited to the packed numbers).
2. A reply that says the sources do not answer is an abstention (``trust_model_abstention``).
3. A reply whose specifics and words are mostly not in the sources (``support`` below
   ``min_support``) is not shown: with ``quote`` the answer becomes the supporting passage
   alone, without it the chain abstains (reason ``"unsupported"``).
4. With ``quote`` the best supporting passage (:mod:`llamachain.qa.evidence`) is quoted after
   the reply, marked with its source's number, and that source is cited first.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llamachain.qa import citations as cit
from llamachain.qa.config import QAConfig
from llamachain.qa.evidence import Passage, best_passages
from llamachain.qa.prompt import ABSTAIN_TEXT
from llamachain.qa.result import Citation, SourceChunk

Similarity = Callable[[str, Sequence[str]], Sequence[float]]


@dataclass
class Composed:
    answer: str
    model_answer: str
    citations: list[Citation]
    abstained: bool
    reason: str | None
    quote: str
    support: float | None
    reply_shown: bool = False


def _citation(chunk: SourceChunk, snippet: str) -> Citation:
    assert chunk.n is not None
    return Citation(
        n=chunk.n,
        chunk_id=chunk.id,
        source=chunk.source,
        file_name=chunk.file_name,
        section=chunk.section,
        page=chunk.page,
        snippet=snippet,
    )


def _snippet(text: str, limit: int = 240) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rsplit(" ", 1)[0] + " …"


def parse_structured(text: str, valid: Sequence[int]) -> tuple[str, list[int]]:
    """``(answer, citations)`` of a structured reply (a broken one yields its raw text)."""
    try:
        data = json.loads(text)
        answer = str(data.get("answer", "")).strip()
        cited = [int(n) for n in data.get("citations", []) if int(n) in set(valid)]
    except (ValueError, TypeError, AttributeError):
        return text.strip(), []
    return answer, list(dict.fromkeys(cited))


def abstention(reason: str, model_answer: str = "") -> Composed:
    return Composed(ABSTAIN_TEXT, model_answer, [], True, reason, "", None)


def compose(
    question: str,
    reply: str,
    packed: Sequence[SourceChunk],
    retrieved: Sequence[SourceChunk],
    cfg: QAConfig,
    similarity: Similarity | None,
) -> Composed:
    """The grounded answer for ``reply`` (the model's raw text) to ``question``.

    ``packed`` are the chunks the model saw; ``retrieved`` all of them, best first.
    """
    valid = [c.n for c in packed if c.n is not None]
    if cfg.structured:
        text, cited = parse_structured(reply, valid)
    else:
        text, cited = cit.keep_valid(reply.strip(), valid)
    model_answer = text
    if not packed:
        return abstention("no_documents", model_answer)
    if cfg.trust_model_abstention and cit.says_not_found(text):
        return abstention("model", model_answer)

    if cfg.reply_sentences:
        text = cit.tidy_reply(text, sentences=cfg.reply_sentences)
    texts = [c.text for c in packed]
    support = cit.support(text, texts, question) if text else 0.0
    # a reply that only restates the question says nothing
    supported = bool(text) and support >= cfg.min_support and cit.novelty(text, question) > 0.2
    by_n = {c.n: c for c in packed}

    passage: Passage | None = None
    candidates = list(packed)
    if cfg.quote_from == "retrieved":
        candidates += [c for c in retrieved if all(c.id != p.id for p in packed)]
    if cfg.quote:
        found = best_passages(
            question,
            [c.text for c in candidates],
            embed=similarity,
            top=1,
            before=cfg.quote_before,
            after=cfg.quote_after,
        )
        passage = found[0] if found else None

    if not supported and passage is None:
        return Composed(
            ABSTAIN_TEXT, model_answer, [], True, "unsupported", "", support if text else None
        )

    citations: list[Citation] = []
    if passage is not None:
        chunk = candidates[passage.chunk]
        citations.append(_citation(chunk, passage.text))
    if supported:
        for n in cited:
            chunk = by_n[n]
            if all(c.n != n for c in citations) and cit.support(text, [chunk.text]) >= 0.5:
                citations.append(_citation(chunk, _snippet(chunk.text)))
        if not citations:  # supported, nothing cited: the chunk that supports it best
            best = max(packed, key=lambda c: cit.support(text, [c.text]))
            citations.append(_citation(best, _snippet(best.text)))

    lead = cit.strip_markers(text) if supported else ""
    if passage is None:
        answer = f"{lead} " + "".join(f"[{c.n}]" for c in citations)
        return Composed(answer.strip(), model_answer, citations, False, None, "", support, True)

    n = citations[0].n
    quote = passage.text
    if lead and len(lead) >= 0.6 * len(quote) and _normal(lead) in _normal(quote):
        lead = ""  # the reply is the passage itself
    shown = bool(lead) or supported
    quoted = f"“{quote}”"
    answer = f"{lead} [{n}]\n\n{quoted} [{n}]" if lead else f"According to [{n}]: {quoted}"
    return Composed(answer, model_answer, citations, False, None, quote, support, shown)


def _normal(text: str) -> str:
    return " ".join(text.lower().split())
