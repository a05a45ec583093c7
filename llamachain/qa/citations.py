"""Citations and grounding: ``[n]`` markers checked against what was packed, answers checked
against the sources, and the JSON shape of the structured mode.

Only sources that were in the prompt can be cited: a marker naming any other number is
removed from the answer.  An answer is *supported* when the specific things it says -- code,
names, numbers, and most of its content words -- occur in the sources; an unsupported answer
is the small model inventing, and is not shown as an answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from llamachain.qa.evidence import terms

_MARKER = re.compile(r"\s?[\[【]\s*(\d{1,3}(?:\s*[,;]\s*\d{1,3})*)\s*[\]】]")
_SPECIFIC = re.compile(r"`([^`]{2,80})`|(\b[\w.]*[_.(][\w.()=,'\"\-]*\w\)?)|(\b\d[\w.,:%/-]*)")
_ABSTAIN = re.compile(
    r"\b(?:(?:do|does|did)(?:\s+not|n't)\s+(?:say|mention|contain|specify|provide|include|"
    r"cover|state|answer)|not\s+(?:mentioned|specified|stated|covered|provided|given|found|"
    r"in\s+the\s+(?:documents?|sources?|context))|no\s+(?:information|mention)|"
    r"(?:cannot|can't|unable\s+to)\s+(?:answer|find|determine)|i\s+(?:do\s+not|don't)\s+know)",
    re.IGNORECASE,
)


def markers(text: str) -> list[int]:
    """Source numbers cited in ``text``, in order of first appearance."""
    out: list[int] = []
    for m in _MARKER.finditer(text):
        for part in re.split(r"[,;]", m.group(1)):
            n = int(part)
            if n not in out:
                out.append(n)
    return out


def keep_valid(text: str, valid: Iterable[int]) -> tuple[str, list[int]]:
    """Remove markers naming no valid source; return the text and the valid numbers cited."""
    allowed = set(valid)
    cited: list[int] = []

    def repl(m: re.Match[str]) -> str:
        nums = [int(p) for p in re.split(r"[,;]", m.group(1))]
        good = [n for n in nums if n in allowed]
        for n in good:
            if n not in cited:
                cited.append(n)
        if not good:
            return "\x00"
        return " " + "".join(f"[{n}]" for n in dict.fromkeys(good))

    cleaned = _MARKER.sub(repl, text)
    # close the gap a removed marker leaves before punctuation ("port 5000 [7]." ->
    # "port 5000."), and only there: "the :meth:`x`" keeps its space
    cleaned = re.sub(r"[ \t]*\x00+(?=[.,;:!?])", "", cleaned).replace("\x00", "")
    return cleaned.strip(), cited


def strip_markers(text: str) -> str:
    return re.sub(r"[ \t]+([.,;:!?])", r"\1", _MARKER.sub("", text)).strip()


def says_not_found(text: str) -> bool:
    """Whether the model's reply says the sources do not contain the answer."""
    return bool(_ABSTAIN.search(text))


def _normal(text: str) -> str:
    return " ".join(text.lower().replace("``", "`").split())


def specifics(text: str) -> list[str]:
    """Code spans, dotted/underscored names and numbers mentioned in ``text``."""
    out = []
    for m in _SPECIFIC.finditer(strip_markers(text)):
        s = next(g for g in m.groups() if g)
        s = s.strip("`'\".,;:")
        if len(s) >= 2:
            out.append(s)
    return out


def support(answer: str, sources: Sequence[str], question: str = "") -> float:
    """Share of the answer's specific items and content words found in the sources (0..1).

    Words of the question count as found: restating the question is not inventing.
    """
    body = _normal(" ".join(sources))
    given = body + " " + _normal(question)
    items = specifics(answer)
    found_items = sum(_normal(s) in given for s in items)
    source_terms = set(terms(" ".join(sources))) | set(terms(question))
    words = [t for t in terms(strip_markers(answer)) if not t.isdigit()]
    found_words = sum(t in source_terms for t in words)
    total = len(items) * 2 + len(words)  # a specific item weighs two words
    if total == 0:
        return 1.0
    return (found_items * 2 + found_words) / total


_BOILERPLATE = re.compile(
    r"^\s*(?:(?:the\s+)?answer(?:\s+to\s+(?:this|your|the)\s+question)?\s+is\s*:?|"
    r"answer\s*:|according\s+to\s+the\s+(?:sources?|documents?|context)\s*,?)\s*",
    re.IGNORECASE,
)
_REPLY_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=\S)|\n\s*\n")


def tidy_reply(text: str, *, sentences: int = 2, words: int = 60) -> str:
    """The reply without "The answer is:" openers, cut to its first ``sentences`` sentences
    (a line ending in a colon keeps what follows it) and at most ``words`` words."""
    text = text.strip()
    while True:
        cut = _BOILERPLATE.sub("", text, count=1).lstrip()
        if cut == text:
            break
        text = cut
    parts = [p.strip() for p in _REPLY_SENTENCE.split(text) if p and p.strip()]
    kept: list[str] = []
    for part in parts:
        kept.append(part)
        if len([k for k in kept if not k.endswith(":")]) >= sentences:
            break
    out = " ".join(kept)
    tokens = out.split(" ")
    if len(tokens) > words:
        out = " ".join(tokens[:words]).rstrip(",;:") + " …"
    return out


_OPENERS = (
    "the answer to this question is",
    "the answer to your question is",
    "the answer to the question is",
    "the answer is",
    "answer:",
    "according to the sources",
    "according to the source",
    "according to the documents",
    "according to the document",
    "according to the context",
)


class ReplyView:
    """What a streaming reply will show, released as soon as it can no longer change.

    The shown reply is the model's text with markers that name no packed source removed,
    cut by :func:`tidy_reply`.  While the reply grows, text that may still turn out to be
    an opener ("The answer is"), a sentence boundary (trailing space) or a marker (``[1``)
    is held back; the rest is the same as the final reply's beginning, so the stream is its
    prefix.  ``sentences=0`` (a whole or structured reply) passes the text through.
    """

    def __init__(self, sentences: int, valid: Iterable[int]) -> None:
        self.sentences = sentences
        self.valid = list(valid)
        self.sent = ""

    def update(self, text: str, *, final: bool = False) -> str:
        """The new part of the view of ``text`` (all of the reply so far)."""
        view = self._view(text, final)
        if not view.startswith(self.sent):
            return ""  # it changed its mind (a repeated line cut, say): the result has it
        delta, self.sent = view[len(self.sent) :], view
        return delta

    def _view(self, text: str, final: bool) -> str:
        if not self.sentences:
            return text
        if not final:
            head = " ".join(text.lower().split())
            if any(o.startswith(head) for o in _OPENERS):
                return ""
            text = text.rstrip()
            bracket = max(text.rfind("["), text.rfind("【"))
            if bracket != -1 and "]" not in text[bracket:] and "】" not in text[bracket:]:
                text = text[:bracket].rstrip()
        cleaned, _ = keep_valid(text, self.valid)
        return tidy_reply(cleaned, sentences=self.sentences) if cleaned else ""


def reply_complete(text: str, *, sentences: int = 2) -> bool:
    """Whether a streaming reply already holds the ``sentences`` that :func:`tidy_reply`
    keeps, each finished (more text has started after the last): generating on is wasted."""
    body = _BOILERPLATE.sub("", text.strip(), count=1)
    parts = [p for p in _REPLY_SENTENCE.split(body) if p and p.strip()]
    done = 0
    for part in parts[:-1]:  # the last part may still be growing
        if not part.strip().endswith(":"):
            done += 1
    return done >= sentences


def novelty(reply: str, question: str) -> float:
    """Share of the reply's content words that the question does not already contain."""
    words = set(terms(strip_markers(reply)))
    if not words:
        return 0.0
    return len(words - set(terms(question))) / len(words)


def structured_schema(valid: Sequence[int], max_answer_chars: int = 400) -> dict[str, Any]:
    """JSON schema of the structured reply; citation values are limited to ``valid``."""
    return {
        "title": "GroundedAnswer",
        "type": "object",
        "properties": {
            "answer": {"type": "string", "maxLength": max_answer_chars},
            "citations": {
                "type": "array",
                "items": {"type": "integer", "enum": list(valid)},
                "maxItems": max(1, len(valid)),
            },
        },
        "required": ["answer", "citations"],
        "additionalProperties": False,
    }
