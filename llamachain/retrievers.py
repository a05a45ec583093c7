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

The BM25 index (see :mod:`llamachain._bm25`) is shared by every retriever over the same store
object, and kept on disk (:mod:`llamachain._bm25_cache`) -- next to a local Chroma directory, or
under ``Settings.home/cache`` for a Chroma server -- under the collection's *revision token*, a
random value that every write through a :class:`~llamachain.vectorstores.ChromaVectorStore`
replaces (see :meth:`~llamachain.vectorstores.ChromaVectorStore.touch`).  A new process (each
``llamachain search``) whose collection still has that token loads the index instead of
rebuilding it.

It is made again when the store changes: at once after any write through the same store
object, and, for writes by anyone else (another process ingesting), when the revision token
changed -- checked (one metadata read) at most every ``recheck_seconds``.  A collection without
a token (written only by other tools) falls back to comparing the number of records, and its
index is not kept on disk.  :meth:`HybridRetriever.refresh` forces a rebuild.  Words are
lower-cased, English stop words dropped and words stemmed (Snowball English) when PyStemmer is
installed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables.config import run_in_executor
from pydantic import Field

from llamachain import _where
from llamachain._bm25 import BM25Index
from llamachain._bm25_cache import forget_cache, open_index
from llamachain.errors import ConfigError
from llamachain.vectorstores import ChromaVectorStore

logger = logging.getLogger(__name__)

Mode = Literal["hybrid", "dense", "bm25"]
_MODES = ("hybrid", "dense", "bm25")
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


class HybridRetriever(BaseRetriever):
    """Dense + BM25 retrieval over a :class:`ChromaVectorStore`, fused by reciprocal rank.

    ``mode`` picks ``"hybrid"`` (both), ``"dense"`` or ``"bm25"``.  ``fetch_k`` candidates
    come from each method before fusion.  ``filter`` is a Chroma ``where`` dict applied to
    both methods.  The store is asked whether someone else changed it at most every
    ``recheck_seconds`` (0: before every query).  ``cache_bm25=False`` keeps the BM25 index in
    memory only (neither loaded from nor saved to disk).
    """

    vectorstore: ChromaVectorStore
    k: int = Field(default=4, ge=1)
    fetch_k: int = Field(default=20, ge=1)
    mode: Mode = "hybrid"
    rrf_k: int = Field(default=60, ge=1)
    filter: dict[str, Any] | None = None
    where_document: dict[str, Any] | None = None
    recheck_seconds: float = Field(default=2.0, ge=0.0)
    cache_bm25: bool = True

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
        """Forget the BM25 index, also on disk; the next query rebuilds it from the store."""
        with self.vectorstore.derived_lock:
            self.vectorstore.derived.pop(_BM25_KEY, None)
            forget_cache(self.vectorstore)

    def bm25_info(self) -> dict[str, Any]:
        """The BM25 index in use (made first if needed): ``documents``, ``terms``, ``origin``
        (``"built"`` or ``"loaded"``), ``revision_token``, ``seconds`` it took, ``phases``
        (their seconds) and ``path`` (where it is kept on disk, or ``None``)."""
        return self._bm25_index().info()

    def _bm25_index(self) -> BM25Index:
        store = self.vectorstore
        with store.derived_lock:
            index: BM25Index | None = store.derived.get(_BM25_KEY)
            if index is not None and index.revision == store.revision:
                now = time.monotonic()
                if now - index.checked_at < self.recheck_seconds:
                    return index
                if index.is_current(store):
                    index.checked_at = now
                    return index
            revision = store.revision
            # The previous index's analyzer remembers the terms of every token it has seen:
            # a rebuild after a small write analyses only the new words.
            analyzer = index.analyzer if index is not None else None
            index = open_index(store, persist=self.cache_bm25, analyzer=analyzer)
            index.revision = revision
            phases = ", ".join(f"{k} {v:.2f} s" for k, v in index.phases.items())
            logger.info(
                "%s the BM25 index of %s (%d documents) in %.2f s%s%s",
                index.origin,
                store.collection_name,
                index.count,
                index.seconds,
                f" ({phases})" if phases else "",
                f"; kept in {index.path}" if index.path is not None else "",
            )
            store.derived[_BM25_KEY] = index
            return index

    def term_statistics(self, text: str) -> tuple[int, dict[str, int]]:
        """``(documents in the index, {term: documents containing it})`` for the BM25 terms of
        ``text`` -- how rare each word of a question is in this store (0: never seen)."""
        index = self._bm25_index()
        terms = list(dict.fromkeys(index.analyzer.terms(text)))
        return index.count, index.document_frequencies(terms)

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
