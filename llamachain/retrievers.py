"""``HybridRetriever``: dense (Chroma) and BM25 (bm25s) retrieval fused by reciprocal rank.

Each method fetches ``fetch_k`` candidates; a document's fused score is the sum over the
methods that found it of ``1 / (rrf_k + rank)`` (ranks start at 1).  The ``k`` best are
returned, ties broken by id, each with in its metadata:

* ``score`` -- the fused (RRF) score; ``rank`` -- its position, from 1;
* ``dense_score`` -- the cosine similarity to the query, when the dense search found it;
* ``bm25_score`` -- its BM25 score, when the keyword search found it.

Filters are Chroma ``where`` dicts, applied to both methods.  The knowledge-base pipeline
writes these metadata keys: ``source``, ``file_name``, ``file_type``, ``heading``, ``page``,
``chunk_index``, ``doc_hash``.  For example ``{"source": "/docs/manual.pdf"}``,
``{"file_type": {"$in": ["pdf", "md"]}}``, or
``{"$and": [{"file_type": "pdf"}, {"page": {"$lte": 10}}]}``.  Set ``filter`` on the retriever,
or pass ``filter=`` (and ``k=``, ``mode=``, ``where_document=``) to ``invoke``; both apply.

The BM25 index is built in memory from every document of the collection on first use (and
shared by every retriever over the same store object), and
rebuilt when the store changes: at once after any write through the same
:class:`~llamachain.vectorstores.ChromaVectorStore`, and, for writes by anyone else (another
process ingesting), when the number of documents in the collection changed -- checked at most
every ``recheck_seconds`` (counting is a scan: ~10 ms at 100k chunks).  A change that keeps the
count (metadata edits by another process) is not seen: :meth:`HybridRetriever.refresh` forces
a rebuild.  Stop words (NLTK's English list) are dropped and words are stemmed (Snowball
English) when PyStemmer is installed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables.config import run_in_executor
from pydantic import Field

from llamachain import _where
from llamachain.errors import ConfigError
from llamachain.vectorstores import ChromaVectorStore

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)

Mode = Literal["hybrid", "dense", "bm25"]
_MODES = ("hybrid", "dense", "bm25")
_PAGE = 5000
_MASKS = 16  # filters whose per-document results are remembered
_IGNORED_KWARGS = frozenset({"verbose"})
_BM25_KEY = "llamachain.retrievers.bm25"


def rrf_fuse(rankings: Iterable[Sequence[str]], rrf_k: int = 60) -> list[tuple[str, float]]:
    """Reciprocal rank fusion of ranked id lists: ``(id, score)`` best first, ties by id."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, doc_id in enumerate(ranking, start=1):
            scores[doc_id] = scores.get(doc_id, 0.0) + 1.0 / (rrf_k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def _and(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any] | None:
    if a is None or b is None:
        return a if b is None else b
    return {"$and": [a, b]}


class _BM25Index:
    """An in-memory BM25 index of one collection, with what filters need."""

    def __init__(self, store: ChromaVectorStore, revision: int) -> None:
        self.revision = revision
        self.checked_at = time.monotonic()
        self.ids: list[str] = []
        self.metadatas: list[dict[str, Any]] = []
        texts: list[str] = []
        seen: set[str] = set()
        offset = 0
        while True:
            got = store.get(limit=_PAGE, offset=offset, include=("documents", "metadatas"))
            page_ids = got["ids"]
            for i, d, m in zip(page_ids, got["documents"], got["metadatas"], strict=True):
                if i not in seen:
                    seen.add(i)
                    self.ids.append(i)
                    texts.append(d or "")
                    self.metadatas.append(dict(m or {}))
            if len(page_ids) < _PAGE:
                break
            offset += _PAGE
        self.count = len(self.ids)
        self._masks: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.model: Any = None
        self.vocab: dict[str, int] = {}
        self._tokenizer = _tokenizer()
        if self.count:
            import bm25s

            tokenized = self._tokenizer.tokenize(
                texts, update_vocab=True, return_as="tuple", show_progress=False
            )
            self.model = bm25s.BM25()
            self.model.index(tokenized, show_progress=False)
            self.vocab = self.model.vocab_dict
        self._stop = set(self._tokenizer.stopwords or ())

    def query_ids(self, query: str) -> list[int]:
        """Vocabulary ids of the query's words (stop words and unknown words left out)."""
        tok = self._tokenizer
        out = []
        for word in tok.splitter(query.lower()):
            if word in self._stop:
                continue
            stem = tok.stemmer(word) if tok.stemmer is not None else word
            sid = self.vocab.get(stem)
            if sid is not None and stem:
                out.append(sid)
        return out

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
        by_store = where_document is not None or _where.uses_document(where)
        mask = None if where is None or by_store else self._mask(where)
        pool = max(4 * n, 64)
        while True:
            top = self._best(hits, scores, pool)
            if mask is None:
                kept = self._filter_in_store(top, where, where_document, store)
            else:
                assert where is not None
                kept = self._filter_here(top, where, mask)
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

    def _filter_here(self, top: list[int], where: dict[str, Any], mask: np.ndarray) -> list[int]:
        kept = []
        for i in top:
            state = mask[i]
            if state < 0:
                state = 1 if _where.matches(self.metadatas[i], where) else 0
                mask[i] = state
            if state:
                kept.append(i)
        return kept

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


def _tokenizer() -> Any:
    from bm25s.tokenization import Tokenizer

    try:
        import Stemmer

        stemmer: Any = Stemmer.Stemmer("english")
    except ImportError:  # PyStemmer is optional
        stemmer = None
    return Tokenizer(lower=True, stopwords="en_plus", stemmer=stemmer)


class HybridRetriever(BaseRetriever):
    """Dense + BM25 retrieval over a :class:`ChromaVectorStore`, fused by reciprocal rank.

    ``mode`` picks ``"hybrid"`` (both), ``"dense"`` or ``"bm25"``.  ``fetch_k`` candidates
    come from each method before fusion.  ``filter`` is a Chroma ``where`` dict applied to
    both methods.  The store is asked whether someone else changed it at most every
    ``recheck_seconds`` (0: before every query).
    """

    vectorstore: ChromaVectorStore
    k: int = Field(default=4, ge=1)
    fetch_k: int = Field(default=20, ge=1)
    mode: Mode = "hybrid"
    rrf_k: int = Field(default=60, ge=1)
    filter: dict[str, Any] | None = None
    where_document: dict[str, Any] | None = None
    recheck_seconds: float = Field(default=2.0, ge=0.0)

    def __init__(self, **data: Any) -> None:
        # Checked here, not by a pydantic validator, so that a bad filter is a ConfigError
        # naming the filter rather than a ValidationError.
        for key in ("filter", "where_document"):
            if data.get(key) is not None and not isinstance(data[key], dict):
                raise ConfigError(f"{key} must be a dict, got {data[key]!r}")
        if data.get("filter") is not None:
            data["filter"] = _where.normalize(data["filter"])
        if data.get("where_document") is not None:
            data["where_document"] = _where.normalize_document(data["where_document"])
        super().__init__(**data)

    # ---- BM25 index -----------------------------------------------------------------------
    def refresh(self) -> None:
        """Forget the BM25 index; the next query rebuilds it from the store."""
        with self.vectorstore.derived_lock:
            self.vectorstore.derived.pop(_BM25_KEY, None)

    def _bm25_index(self) -> _BM25Index:
        store = self.vectorstore
        with store.derived_lock:
            index = store.derived.get(_BM25_KEY)
            revision = store.revision
            if index is not None and index.revision == revision:
                now = time.monotonic()
                if now - index.checked_at < self.recheck_seconds:
                    return index
                if store.count() == index.count:
                    index.checked_at = now
                    return index
            started = time.perf_counter()
            index = _BM25Index(store, revision)
            logger.info(
                "built the BM25 index of %s (%d documents) in %.2f s",
                store.collection_name,
                index.count,
                time.perf_counter() - started,
            )
            store.derived[_BM25_KEY] = index
            return index

    # ---- retrieval ------------------------------------------------------------------------
    def search(
        self,
        query: str,
        *,
        k: int | None = None,
        fetch_k: int | None = None,
        mode: str | None = None,
        filter: dict[str, Any] | None = None,
        where_document: dict[str, Any] | None = None,
    ) -> list[Document]:
        """The ``k`` best documents for ``query`` (see the class documentation)."""
        k = self.k if k is None else k
        fetch_k = max(self.fetch_k if fetch_k is None else fetch_k, k)
        mode = mode or self.mode
        if mode not in _MODES:
            raise ConfigError(
                f"unknown retrieval mode {mode!r}; choose one of: {', '.join(_MODES)}"
            )
        if k <= 0:
            return []
        where = _and(self.filter, _where.normalize(filter))
        where_doc = _and(self.where_document, _where.normalize_document(where_document))

        dense: list[tuple[Document, float]] = []
        if mode != "bm25":
            dense = self.vectorstore.similarity_search_with_score(
                query, fetch_k, where, where_document=where_doc
            )
        keyword: list[tuple[str, float]] = []
        if mode != "dense":
            keyword = self._bm25_index().search(query, fetch_k, where, where_doc, self.vectorstore)

        fused = rrf_fuse([[d.id or "" for d, _ in dense], [i for i, _ in keyword]], self.rrf_k)[:k]
        docs = {d.id: d for d, _ in dense}
        missing = [i for i, _ in fused if i not in docs]
        if missing:
            docs.update({d.id: d for d in self.vectorstore.get_by_ids(missing)})
        dense_scores = {d.id: s for d, s in dense}
        bm25_scores = dict(keyword)
        out: list[Document] = []
        for doc_id, score in fused:
            doc = docs.get(doc_id)
            if doc is None:  # deleted between the searches and the fetch
                continue
            meta = dict(doc.metadata)
            meta["score"] = score
            meta["rank"] = len(out) + 1
            if doc_id in dense_scores:
                meta["dense_score"] = dense_scores[doc_id]
            if doc_id in bm25_scores:
                meta["bm25_score"] = bm25_scores[doc_id]
            out.append(Document(page_content=doc.page_content, metadata=meta, id=doc_id))
        return out

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        fetch_k: int | None = None,
        mode: str | None = None,
        filter: dict[str, Any] | None = None,
        where_document: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        unknown = sorted(set(kwargs) - _IGNORED_KWARGS)
        if unknown:
            raise ConfigError(
                f"HybridRetriever got unknown arguments {', '.join(unknown)}; it takes k, "
                "fetch_k, mode, filter and where_document"
            )
        return self.search(
            query, k=k, fetch_k=fetch_k, mode=mode, filter=filter, where_document=where_document
        )

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        **kwargs: Any,
    ) -> list[Document]:
        # The searches block (Chroma, numpy, the embedder): run them off the event loop.
        return await run_in_executor(
            None, self._get_relevant_documents, query, run_manager=run_manager.get_sync(), **kwargs
        )
