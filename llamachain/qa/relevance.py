"""Is the answer in the documents at all?  Signals for abstaining before the model is asked.

A question the documents cannot answer usually names something they never mention
("Which Prometheus metrics does it export?"), or shares only common words with the best
chunks.  Two cheap measures, computed from the retriever's BM25 statistics:

* :func:`coverage` -- how much of the question's information the packed chunks contain:
  the question's terms, each weighted by its inverse document frequency in the whole store
  (a term the store never saw weighs the most), and the share of that weight whose terms
  occur in the chunks.  1.0: every word of the question is there; ~0.2: only the generic ones.
  A word the store never saw that is an everyday English word ("suggested", "whether") is
  left out: no chunk can contain it, and it is usually the asker's paraphrase of what the
  documents say in other words.  In a small store most everyday words are unseen, and
  counting them would make every question look unanswerable.  Unseen words outside that
  vocabulary (``mypy``, ``gzip``) keep their full weight.
* :func:`unknown_names` -- words of the question that look like names (a capital letter
  inside the question, a digit, or all capitals: ``Kubernetes``, ``OAuth2``, ``CORS``) and
  that occur nowhere in the store; and :func:`missing_phrases` -- names of several such
  words (``AWS Lambda``, ``JSON Web Tokens``) that no retrieved chunk contains as written.

Without BM25 statistics (a retriever other than :class:`~llamachain.retrievers.HybridRetriever`)
the chunks themselves stand in for the store, and no name counts as unknown.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from llamachain.qa.evidence import terms

log = logging.getLogger(__name__)

_WORD = re.compile(r"[A-Za-z][\w.+-]*\w|[A-Za-z]")


@functools.cache
def everyday_words() -> frozenset[str]:
    """Whole English words of the bundled embedder's WordPiece vocabulary (~20k, lower case).

    A general-purpose list of common words, learnt from English books and Wikipedia, that
    ships with the default embedding model; empty (every unseen word counts) without it.
    """
    try:
        from llamachain._st_loader import bundled_model_dir

        lines = (bundled_model_dir() / "vocab.txt").read_text(encoding="utf-8").split()
    except Exception as e:  # no bundled model: coverage counts every word
        log.debug("no everyday-word list: %s", e)
        return frozenset()
    return frozenset(w for w in lines if w.isalpha() and w.islower() and len(w) > 1)


@dataclass(frozen=True)
class Relevance:
    """How well the packed chunks cover the question."""

    coverage: float
    unknown_names: tuple[str, ...] = ()

    def weak(self, min_coverage: float) -> bool:
        return bool(self.unknown_names) or self.coverage < min_coverage


def _idf(n: int, df: int) -> float:
    return math.log(1 + (n - df + 0.5) / (df + 0.5))


def coverage(
    question: str,
    texts: Sequence[str],
    n_docs: int,
    df: Mapping[str, int],
    everyday: Callable[[str], bool] | None = None,
) -> float:
    """Share of the question's IDF weight whose terms occur in ``texts`` (0..1).

    ``everyday(word)`` says whether a question word is common English: such a word is not
    counted when the store never saw it (``df`` of 0).  None: every word counts.
    """
    q_terms: dict[str, str] = {}  # term -> the question word it came from
    for word in question.split():
        for t in terms(word):
            q_terms.setdefault(t, word.strip(".,;:!?()[]{}\"'`"))
    if not q_terms:
        return 1.0  # nothing to look for: do not abstain on coverage
    present = {t for text in texts for t in terms(text)}
    n = max(n_docs, 1)
    weights = {
        t: _idf(n, df.get(t, 0))
        for t, word in q_terms.items()
        if df.get(t, 0) > 0 or everyday is None or not everyday(word)
    }
    total = sum(weights.values())
    if total <= 0:
        return 1.0
    return sum(w for t, w in weights.items() if t in present) / total


def _looks_like_name(word: str, first: bool) -> bool:
    if any(ch.isdigit() for ch in word):
        return True
    letters = [ch for ch in word if ch.isalpha()]
    if len(letters) >= 2 and all(ch.isupper() for ch in letters):
        return True
    inner_capital = any(ch.isupper() for ch in word[1:])
    return inner_capital or (not first and word[0].isupper())


def unknown_names(question: str, df: Mapping[str, int]) -> list[str]:
    """Name-like words of ``question`` whose terms occur in no document (``df`` of 0)."""
    out: list[str] = []
    for i, match in enumerate(_WORD.finditer(question)):
        word = match.group()
        if not _looks_like_name(word, first=i == 0):
            continue
        word_terms = terms(word)
        if word_terms and all(df.get(t, 0) == 0 for t in word_terms):
            out.append(word)
    return out


def name_phrases(question: str) -> list[str]:
    """Runs of two or more capitalised name-like words: ``AWS Lambda``, ``JSON Web Tokens``."""
    out: list[str] = []
    run: list[re.Match[str]] = []

    def close() -> None:
        if len(run) >= 2:
            out.append(" ".join(m.group() for m in run))
        run.clear()

    for i, match in enumerate(_WORD.finditer(question)):
        word = match.group()
        if word[0].isupper() and _looks_like_name(word, first=i == 0):
            if run and question[run[-1].end() : match.start()].strip():
                close()  # punctuation between them: two names
            run.append(match)
        else:
            close()
    close()
    return out


def _flat(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def missing_phrases(question: str, retrieved: Sequence[str]) -> list[str]:
    """Name phrases of ``question`` that occur in none of the ``retrieved`` chunks."""
    phrases = name_phrases(question)
    if not phrases or not retrieved:
        return []
    text = " " + " ".join(_flat(t) for t in retrieved) + " "
    return [p for p in phrases if f" {_flat(p)} " not in text]


def assess(
    question: str,
    texts: Sequence[str],
    statistics: tuple[int, Mapping[str, int]] | None,
    retrieved: Sequence[str] = (),
) -> Relevance:
    """:class:`Relevance` of ``texts`` (the packed chunks) for ``question``.

    ``statistics`` come from the retriever; ``retrieved`` are all the retrieved chunks, where
    a multi-word name of the question (``AWS Lambda``) must occur as written, else it counts
    as unknown: the documents mention its words but not the thing.
    """
    if statistics is None:
        local = [set(terms(t)) for t in texts]
        counts = {t: sum(t in s for s in local) for t in set(terms(question))}
        return Relevance(coverage(question, texts, len(texts), counts))
    n_docs, df = statistics
    words = everyday_words()
    unknown = unknown_names(question, df)
    unknown += [p for p in missing_phrases(question, retrieved) if p not in unknown]
    return Relevance(
        coverage(question, texts, n_docs, df, lambda w: w.lower() in words), tuple(unknown)
    )
