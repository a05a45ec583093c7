"""The hybrid retriever's BM25 index: built fast from a Chroma collection, searched with filters.

Text becomes terms the same way for documents and queries (:class:`Analyzer`): lower case,
runs of two or more word characters (``\\w``), English stop words left out (bm25s's
``en_plus`` list), Snowball English stems when PyStemmer is installed.  Scores are Lucene's
BM25 (``k1=1.5``, ``b=0.75``).

Building (:func:`build`) reads ids and texts only -- metadata is fetched later, for the few
candidates a filter has to judge -- in pages of ids.  Each page is split on whitespace and its
tokens numbered with C-level calls (``str.split``, one dict lookup per occurrence); the Python
work (regex words, stop words, stems) is done once per distinct token, and the term counts and
scores are computed with numpy.  The result is in bm25s's index format: bm25s scores queries
and saves and loads the index.

It is kept on disk by :mod:`llamachain._bm25_cache`.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Iterator, Sequence
from itertools import chain, count
from typing import TYPE_CHECKING, Any

from llamachain import _where

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np

    from llamachain.vectorstores import ChromaVectorStore

FORMAT = 1
K1 = 1.5
B = 0.75
PAGE = 10_000  # ids per read while building (SQLite allows ~32k variables a query)
_MASKS = 16  # filters whose per-document results are remembered
_WORD_PATTERN = r"(?u)\b\w\w+\b"
_WORDS = re.compile(_WORD_PATTERN).findall
_MEMO_MAX = 1_000_000  # tokens whose terms an Analyzer remembers


class Analyzer:
    """Text to BM25 terms (the same for documents and queries)."""

    def __init__(self) -> None:
        from bm25s.stopwords import STOPWORDS_EN_PLUS

        self.stopwords = frozenset(STOPWORDS_EN_PLUS)
        try:
            import Stemmer

            self._stemmer: Any = Stemmer.Stemmer("english")
        except ImportError:  # PyStemmer is optional
            self._stemmer = None
        self._memo: dict[str, list[str]] = {}

    @property
    def config(self) -> dict[str, Any]:
        """What decides the terms; an index on disk is used only by an equal analyzer."""
        return {
            "words": _WORD_PATTERN,
            "lower": True,
            "stopwords": "bm25s en_plus",
            "stemmer": "snowball english" if self._stemmer is not None else None,
        }

    def terms_of_tokens(self, tokens: Sequence[str]) -> list[list[str]]:
        """The terms of each lower-cased, whitespace-free token (``"well-known,"`` has two).

        Remembered per token, so rebuilding an index after a small write (the words of the
        whole collection again) analyses only the tokens it has not seen before.  The lists
        returned are shared: do not change them."""
        memo = self._memo
        out = [memo.get(t) for t in tokens]
        todo = list(dict.fromkeys(t for t, o in zip(tokens, out, strict=True) if o is None))
        if not todo:
            return out  # type: ignore[return-value]
        words = [_WORDS(t) for t in todo]
        kept = list(dict.fromkeys(w for ws in words for w in ws if w not in self.stopwords))
        stemmed = self._stemmer.stemWords(kept) if self._stemmer is not None else kept
        stems = dict(zip(kept, stemmed, strict=True))
        fresh = {t: [stems[w] for w in ws if w in stems] for t, ws in zip(todo, words, strict=True)}
        if len(memo) + len(fresh) > _MEMO_MAX:
            self._memo = memo = {}
        memo.update(fresh)
        return [o if o is not None else fresh[t] for t, o in zip(tokens, out, strict=True)]

    def terms(self, text: str) -> list[str]:
        return [t for ts in self.terms_of_tokens(text.lower().split()) for t in ts]


# ---- building -------------------------------------------------------------------------------
class Builder:
    """Accumulates pages of ``(ids, texts)`` into BM25 score arrays."""

    def __init__(self, analyzer: Analyzer) -> None:
        import numpy as np

        self.analyzer = analyzer
        self.tokens: defaultdict[str, int] = defaultdict(count().__next__)
        self.vocab: dict[str, int] = {}
        self.ids: list[str] = []
        self._first = np.zeros(0, dtype=np.int64)  # per token: where its terms start in _flat
        self._count = np.zeros(0, dtype=np.int64)  # per token: how many terms it has
        self._flat = np.zeros(0, dtype=np.int64)
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._lengths: list[np.ndarray] = []

    def _analyze_new_tokens(self) -> None:
        import numpy as np

        done = self._count.size
        new = list(self.tokens)[done:]
        if not new:
            return
        vocab = self.vocab
        terms = self.analyzer.terms_of_tokens(new)
        counts = np.fromiter(map(len, terms), dtype=np.int64, count=len(terms))
        flat = [vocab.setdefault(t, len(vocab)) for ts in terms for t in ts]
        firsts = self._flat.size + np.cumsum(counts) - counts
        self._first = np.concatenate((self._first, firsts))
        self._count = np.concatenate((self._count, counts))
        self._flat = np.concatenate((self._flat, np.asarray(flat, dtype=np.int64)))

    def add(self, ids: list[str], texts: list[str]) -> None:
        import numpy as np

        m = len(ids)
        if m == 0:
            return
        split = list(map(str.split, map(str.lower, texts)))
        per_doc = np.fromiter(map(len, split), dtype=np.int64, count=m)
        codes = np.fromiter(
            map(self.tokens.__getitem__, chain.from_iterable(split)),
            dtype=np.int64,
            count=int(per_doc.sum()),
        )
        del split
        self._analyze_new_tokens()
        doc = np.repeat(np.arange(m, dtype=np.int64), per_doc)
        n_terms = self._count[codes]
        keep = n_terms > 0  # stop words, one-letter words and punctuation have none
        doc, codes, n_terms = doc[keep], codes[keep], n_terms[keep]
        if bool((n_terms == 1).all()):  # the usual case
            term = self._flat[self._first[codes]]
        else:  # "well-known", "a/b.py": one row per term
            ends = np.cumsum(n_terms)
            within = np.arange(int(ends[-1])) - np.repeat(ends - n_terms, n_terms)
            term = self._flat[np.repeat(self._first[codes], n_terms) + within]
            doc = np.repeat(doc, n_terms)
        key, tf = np.unique(term * m + doc, return_counts=True)
        base = len(self.ids)
        self._parts.append(
            ((key // m).astype(np.int32), (key % m + base).astype(np.int32), tf.astype(np.float32))
        )
        self._lengths.append(np.bincount(doc, minlength=m))
        self.ids.extend(ids)

    def finish(self) -> Any:
        """A bm25s ``BM25`` model of everything added (``None`` if there is no term at all)."""
        import numpy as np

        n, v = len(self.ids), len(self.vocab)
        if n == 0 or v == 0:
            return None
        term = np.concatenate([p[0] for p in self._parts])
        doc = np.concatenate([p[1] for p in self._parts])
        tf = np.concatenate([p[2] for p in self._parts])
        lengths = np.concatenate(self._lengths).astype(np.float64)
        self._parts.clear()
        order = np.argsort(term, kind="stable")  # by term, then (already) by document
        term, doc, tf = term[order], doc[order], tf[order]
        df = np.bincount(term, minlength=v)
        idf = np.log1p((n - df + 0.5) / (df + 0.5))
        norm = K1 * (1.0 - B + B * lengths / (lengths.mean() or 1.0))
        data = (idf[term] * tf / (tf + norm[doc])).astype(np.float32)
        indptr = np.zeros(v + 1, dtype=np.int64)
        np.cumsum(df, out=indptr[1:])
        return model_of(data, doc, indptr, n, self.vocab)


def model_of(data: Any, indices: Any, indptr: Any, n: int, vocab: dict[str, int]) -> Any:
    """A bm25s ``BM25`` (Lucene) holding these score arrays -- what its ``index()`` sets."""
    import bm25s

    model = bm25s.BM25(k1=K1, b=B, method="lucene")
    model.scores = {"data": data, "indices": indices, "indptr": indptr, "num_docs": n}
    model.vocab_dict = vocab
    model.unique_token_ids_set = set(vocab.values())
    model.nonoccurrence_array = None
    return model


def _pages(
    store: ChromaVectorStore, phases: dict[str, float]
) -> Iterator[tuple[list[str], list[str]]]:
    started = time.perf_counter()
    all_ids = store.get(include=())["ids"]
    phases["fetch"] += time.perf_counter() - started
    for start in range(0, len(all_ids), PAGE):
        started = time.perf_counter()
        got = store.get(ids=all_ids[start : start + PAGE], include=("documents",))
        texts = [d or "" for d in got["documents"]]
        phases["fetch"] += time.perf_counter() - started
        yield list(got["ids"]), texts


def build(store: ChromaVectorStore, analyzer: Analyzer, token: str | None) -> BM25Index:
    """A new index of every document of ``store``."""
    started = time.perf_counter()
    phases = {"fetch": 0.0, "tokenize": 0.0, "index": 0.0}
    builder = Builder(analyzer)
    for ids, texts in _pages(store, phases):
        t = time.perf_counter()
        builder.add(ids, texts)
        phases["tokenize"] += time.perf_counter() - t
    t = time.perf_counter()
    model = builder.finish()
    phases["index"] = time.perf_counter() - t
    return BM25Index(
        builder.ids,
        model,
        analyzer,
        token=token,
        origin="built",
        seconds=time.perf_counter() - started,
        phases=phases,
    )


# ---- the index ------------------------------------------------------------------------------
class BM25Index:
    """A BM25 index of one collection: row ``i`` is the record ``ids[i]``."""

    def __init__(
        self,
        ids: list[str],
        model: Any,
        analyzer: Analyzer,
        *,
        token: str | None,
        origin: str,
        seconds: float,
        phases: dict[str, float] | None = None,
        path: Path | None = None,
    ) -> None:
        self.ids = ids
        self.count = len(ids)
        self.model = model
        self.vocab: dict[str, int] = model.vocab_dict if model is not None else {}
        self.analyzer = analyzer
        self.token = token
        self.origin = origin
        self.seconds = seconds
        self.phases = phases or {}
        self.path = path
        self.revision = -1  # the store's in-process write count it was made at
        self.checked_at = time.monotonic()
        self._masks: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        return {
            "documents": self.count,
            "terms": len(self.vocab),
            "origin": self.origin,
            "revision_token": self.token,
            "seconds": self.seconds,
            "phases": dict(self.phases),
            "path": str(self.path) if self.path is not None else None,
        }

    def is_current(self, store: ChromaVectorStore) -> bool:
        """Whether the collection is still what this index was made from (as far as the
        revision token -- or, without one, the number of records -- can tell)."""
        token = store.revision_token()
        if token != self.token:
            return False
        return token is not None or store.count() == self.count

    def document_frequencies(self, terms: Sequence[str]) -> dict[str, int]:
        """How many documents contain each (analyzed) term; 0 for terms never seen."""
        if self.model is None:
            return dict.fromkeys(terms, 0)
        indptr = self.model.scores["indptr"]
        out: dict[str, int] = {}
        for t in terms:
            i = self.vocab.get(t)
            out[t] = 0 if i is None else int(indptr[i + 1] - indptr[i])
        return out

    def query_ids(self, query: str) -> list[int]:
        """Vocabulary ids of the query's terms (unknown terms left out)."""
        vocab = self.vocab
        return [vocab[t] for t in self.analyzer.terms(query) if t in vocab]

    def search(
        self,
        query: str,
        n: int,
        where: dict[str, Any] | None,
        where_document: dict[str, Any] | None,
        store: ChromaVectorStore,
    ) -> list[tuple[str, float]]:
        """The ``n`` best ``(id, bm25 score)`` that pass the filters, best first."""
        import numpy as np

        token_ids = self.query_ids(query) if self.model is not None else []
        if not token_ids or n <= 0:
            return []
        scores = self.model.get_scores_from_ids(token_ids)
        hits = np.flatnonzero(scores > 0)
        if hits.size == 0:
            return []
        if where is None and where_document is None:
            return [(self.ids[i], float(scores[i])) for i in self._best(hits, scores, n)]
        # Chroma's own where_document (its regex flavour) is left to Chroma; at 100k records a
        # filtered get takes ~1-2 s, fetching the candidates' metadata ~15 ms.
        mask = None if where is None or where_document is not None else self._mask(where)
        pool = max(4 * n, 64)
        while True:
            top = self._best(hits, scores, pool)
            if mask is None:
                kept = self._filter_in_store(top, where, where_document, store)
            else:
                assert where is not None
                kept = self._filter_here(top, where, mask, store)
            if len(kept) >= n or pool >= hits.size:
                break
            pool *= 4
        return [(self.ids[i], float(scores[i])) for i in kept[:n]]

    def _best(self, hits: np.ndarray, scores: np.ndarray, m: int) -> list[int]:
        """Indices of the ``m`` best-scored hits, by score then id (ties at the cut kept)."""
        import numpy as np

        if hits.size > m:
            part = np.argpartition(-scores[hits], m - 1)[:m]
            cut = scores[hits[part]].min()
            hits = hits[scores[hits] >= cut]
        order = sorted(hits.tolist(), key=lambda i: (-float(scores[i]), self.ids[i]))
        return order[:m]

    def _mask(self, where: dict[str, Any]) -> np.ndarray:
        """Remembered filter results per document: -1 unknown, 0 fails, 1 passes."""
        import numpy as np

        key = _where.canonical(where)
        with self._lock:
            mask = self._masks.get(key)
            if mask is None:
                mask = np.full(self.count, -1, dtype=np.int8)
                self._masks[key] = mask
                while len(self._masks) > _MASKS:
                    self._masks.popitem(last=False)
            else:
                self._masks.move_to_end(key)
        return mask

    def _filter_here(
        self, top: list[int], where: dict[str, Any], mask: np.ndarray, store: ChromaVectorStore
    ) -> list[int]:
        """Judge the candidates by their metadata (and text, for a ``#document`` condition),
        fetched once for those not yet judged."""
        unknown = [i for i in top if mask[i] < 0]
        if unknown:
            texts = _where.uses_document(where)
            got = store.get(
                ids=[self.ids[i] for i in unknown],
                include=("metadatas", "documents") if texts else ("metadatas",),
            )
            docs = [d or "" for d in got["documents"]] if texts else [None] * len(got["ids"])
            found = {i: (m, d) for i, m, d in zip(got["ids"], got["metadatas"], docs, strict=True)}
            for i in unknown:
                record = found.get(self.ids[i])  # None: deleted since the index was made
                mask[i] = 0 if record is None else int(_where.matches(record[0], where, record[1]))
        return [i for i in top if mask[i] == 1]

    def _filter_in_store(
        self,
        top: list[int],
        where: dict[str, Any] | None,
        where_document: dict[str, Any] | None,
        store: ChromaVectorStore,
    ) -> list[int]:
        if not top:
            return []
        got = store.get(
            ids=[self.ids[i] for i in top], where=where, where_document=where_document, include=()
        )
        passing = set(got["ids"])
        return [i for i in top if self.ids[i] in passing]
