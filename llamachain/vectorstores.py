"""``ChromaVectorStore``: LangChain's ``VectorStore`` over a Chroma collection.

The same class works on a local Chroma directory and on a Chroma server (see
:func:`llamachain._chroma.make_client`).  Chroma never embeds anything itself: vectors always
come from the ``embedding`` given here (or precomputed, through :meth:`upsert_embedded`), so
Chroma's default embedding function -- which would download a model -- is never used.

Scores: :meth:`ChromaVectorStore.similarity_search_with_score` returns the **cosine
similarity** between the query and each document, in ``[-1, 1]``: higher means more similar,
always (Chroma's own cosine *distance* is ``1 - similarity``).  The relevance scores of
:meth:`~langchain_core.vectorstores.VectorStore.similarity_search_with_relevance_scores` map it
linearly to ``[0, 1]`` as ``(1 + similarity) / 2``.

The collection records the embedding model that wrote it (``llamachain_embedding_model``,
``llamachain_embedding_dimension`` in its metadata).  Opening it with another model, or with
vectors of another size, raises :class:`~llamachain.errors.EmbeddingMismatchError`.

Every write also replaces a random revision token in the collection's metadata (see
:meth:`ChromaVectorStore.touch`): caches of the collection (the BM25 index) compare it.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from llamachain import _where
from llamachain._chroma import (
    DIMENSION_KEY,
    MODEL_KEY,
    EmbedderGuard,
    as_vectors,
    chroma_errors,
    clean_metadata,
    collection_space,
    drop_collection,
    embedder_record,
    location,
    make_client,
    nearest,
    open_collection,
    replacing_metadatas,
    similarity_from_distance,
    upsert_records,
)
from llamachain._revision import Revisions
from llamachain.errors import ConfigError
from llamachain.settings import Settings

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

logger = logging.getLogger(__name__)

__all__ = ["DIMENSION_KEY", "MODEL_KEY", "ChromaVectorStore"]

_SEARCH_KWARGS = frozenset({"where_document"})


def _check_kwargs(kwargs: dict[str, Any], method: str) -> None:
    unknown = sorted(set(kwargs) - _SEARCH_KWARGS)
    if unknown:
        raise ConfigError(
            f"{method}() got unknown arguments {', '.join(unknown)}; it takes k, filter "
            "(a Chroma where dict) and where_document"
        )


class ChromaVectorStore(VectorStore):
    """A Chroma collection (cosine space) as a LangChain vector store.

    ``client`` defaults to :func:`llamachain._chroma.make_client` for ``settings`` /
    ``path``.  With ``create=False`` a missing collection is an error instead of being
    created.  ``collection_metadata`` is stored on a new collection.

    Writes use upsert semantics: adding a text with an existing id replaces it.  Every write
    increments :attr:`revision` and replaces the revision token (see :meth:`write_batch`).
    """

    def __init__(
        self,
        collection_name: str = "langchain",
        embedding: Embeddings | None = None,
        *,
        client: ClientAPI | None = None,
        settings: Settings | None = None,
        path: Path | None = None,
        create: bool = True,
        collection_metadata: dict[str, Any] | None = None,
    ) -> None:
        self.collection_name = collection_name
        self._embedding = embedding
        self._settings = settings
        self._client = client if client is not None else make_client(settings, path=path)
        self._where = location(self._client)
        self._derived: dict[str, Any] = {}
        self._derived_lock = threading.RLock()
        self._batch_size: int | None = None
        metadata = {**(collection_metadata or {}), **embedder_record(embedding)}
        self._collection: Collection = open_collection(
            self._client, collection_name, create=create, metadata=metadata
        )
        space = collection_space(self._collection)
        self._to_similarity = similarity_from_distance(space)
        self._revisions = Revisions(self._client, self._collection, self._where)
        self._guard = EmbedderGuard(
            self._client, self._collection, collection_name, embedding, self._where
        )
        self._guard.check_at_open()
        logger.debug("opened collection %s at %s (%s space)", collection_name, self._where, space)

    # ---- properties -----------------------------------------------------------------------
    @property
    def client(self) -> ClientAPI:
        return self._client

    @property
    def collection(self) -> Collection:
        """The Chroma collection (cosine space)."""
        return self._collection

    @property
    def embeddings(self) -> Embeddings | None:
        return self._embedding

    @property
    def settings(self) -> Settings | None:
        """The settings this store was opened with, if any."""
        return self._settings

    @property
    def revision(self) -> int:
        """How many writes (and touches) went through this object; in-process caches compare
        it to notice them without asking Chroma."""
        return self._revisions.local

    @property
    def derived(self) -> dict[str, Any]:
        """Data derived from the collection (the BM25 index), shared by every retriever over
        this store object; entries check :attr:`revision` and :meth:`revision_token`
        themselves.  Hold :attr:`derived_lock` while reading or replacing one."""
        return self._derived

    @property
    def derived_lock(self) -> threading.RLock:
        return self._derived_lock

    @property
    def location(self) -> str:
        """The Chroma directory or server URL."""
        return self._where

    # ---- revision token -------------------------------------------------------------------
    def revision_token(self) -> str | None:
        """The collection's revision token (one metadata read): a random string that every
        write through a :class:`ChromaVectorStore`, in any process, replaces.  ``None`` if it has
        none (written by other tools only) or while a write or :meth:`write_batch` is under way
        (or was killed midway)."""
        return self._revisions.token()

    def touch(self) -> str:
        """Record that the collection changed: store a fresh random revision token under
        ``llamachain_revision`` in its metadata (other keys and the configuration kept); return it.

        Writes through this store call it themselves (after each write, or once at the end of a
        :meth:`write_batch`); calling it again is harmless.  Call it after changing the
        collection behind this store's back (through :attr:`collection` or another client)."""
        return self._revisions.touch()

    @contextmanager
    def write_batch(self) -> Iterator[None]:
        """Group writes: the revision token becomes a writing marker before the first write in
        the block and a fresh token once when the (outermost) block exits, even by an error --
        instead of twice per write.  Without writes inside, the token is left alone."""
        with self._revisions.batch():
            yield

    def _require_embedding(self) -> Embeddings:
        if self._embedding is None:
            raise ConfigError(
                f"ChromaVectorStore({self.collection_name!r}) has no embedding model: pass "
                "embedding= to embed texts and queries"
            )
        return self._embedding

    def _max_batch(self) -> int:
        if self._batch_size is None:
            with chroma_errors("asking the batch size", self._where):
                self._batch_size = int(self._client.get_max_batch_size())
        return self._batch_size

    # ---- writing --------------------------------------------------------------------------
    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed ``texts`` and upsert them; returns their ids (new uuid4 hex ids where absent)."""
        texts = list(texts)
        if metadatas is not None and len(metadatas) != len(texts):
            raise ConfigError(f"got {len(metadatas)} metadatas for {len(texts)} texts")
        if ids is not None and len(ids) != len(texts):
            raise ConfigError(f"got {len(ids)} ids for {len(texts)} texts")
        given: list[str | None] = list(ids) if ids is not None else [None] * len(texts)
        out = [i if i else uuid.uuid4().hex for i in given]
        if not texts:
            return out
        vectors = self._require_embedding().embed_documents(texts)
        self.upsert_embedded(out, texts, vectors, metadatas)
        return out

    def upsert_embedded(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        embeddings: Sequence[Sequence[float]] | Any,
        metadatas: Sequence[dict[str, Any] | None] | None = None,
    ) -> None:
        """Upsert records whose vectors are already computed (no embedding call).

        Sent in batches no larger than the client accepts.  Within one call a repeated id
        keeps its last record.
        """
        n = len(ids)
        if (
            len(texts) != n
            or len(embeddings) != n
            or (metadatas is not None and len(metadatas) != n)
        ):
            raise ConfigError("upsert_embedded() needs as many texts, vectors and metadatas as ids")
        if n == 0:
            return
        vectors = as_vectors(embeddings)
        self._guard.check_vector(int(vectors.shape[1]))
        metas = [clean_metadata(m) for m in metadatas] if metadatas is not None else [None] * n
        with self._revisions.writing():
            upsert_records(
                self._collection, ids, texts, vectors, metas, self._max_batch(), self._where
            )

    def update_metadatas(self, ids: Sequence[str], metadatas: Sequence[dict[str, Any]]) -> None:
        """Replace the metadata of existing records (documents and vectors stay)."""
        if len(ids) != len(metadatas):
            raise ConfigError("update_metadatas() needs one metadata per id")
        metas = [clean_metadata(m) or {} for m in metadatas]
        if not ids:
            return
        step = self._max_batch()
        with self._revisions.writing():
            for start in range(0, len(ids), step):
                part_ids = [str(i) for i in ids[start : start + step]]
                with chroma_errors("updating metadata", self._where):
                    self._collection.update(
                        ids=part_ids,
                        metadatas=replacing_metadatas(
                            self._collection, part_ids, metas[start : start + step]
                        ),
                    )

    def delete(
        self, ids: list[str] | None = None, *, where: dict[str, Any] | None = None, **kwargs: Any
    ) -> bool | None:
        """Delete records by ``ids`` and/or by a ``where`` filter (at least one is needed).

        Ids that do not exist are ignored.  Use :meth:`delete_collection` to drop everything.
        """
        if kwargs:
            raise ConfigError(f"delete() got unknown arguments {', '.join(sorted(kwargs))}")
        if ids is None and where is None:
            raise ConfigError(
                "delete() needs ids or a where filter; use delete_collection() to drop the "
                "whole collection"
            )
        if ids is not None and not ids:
            return True
        clause = _where.normalize(where)
        with self._revisions.writing(), chroma_errors("deleting records", self._where):
            if ids is None:
                self._collection.delete(where=clause)
            else:
                step = self._max_batch()
                for start in range(0, len(ids), step):
                    self._collection.delete(ids=list(ids[start : start + step]), where=clause)
        return True

    def delete_collection(self) -> None:
        """Drop the collection and everything in it (and the BM25 index kept on disk)."""
        from llamachain._bm25_cache import forget_cache

        try:
            with chroma_errors("deleting the collection", self._where):
                drop_collection(self._client, self.collection_name)
        finally:
            self._revisions.forget()
        forget_cache(self)

    # ---- reading --------------------------------------------------------------------------
    def count(self) -> int:
        with chroma_errors("counting records", self._where):
            return int(self._collection.count())

    def get(
        self,
        where: dict[str, Any] | None = None,
        ids: Sequence[str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        include: Sequence[str] = ("documents", "metadatas"),
        where_document: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Chroma's ``collection.get`` (a dict of ``ids``, ``documents``, ``metadatas``...)."""
        with chroma_errors("reading records", self._where):
            got = self._collection.get(
                ids=list(ids) if ids is not None else None,
                where=_where.normalize(where),
                limit=limit,
                offset=offset,
                where_document=_where.normalize_document(where_document),  # type: ignore[arg-type]
                include=list(include),  # type: ignore[arg-type]
            )
        return dict(got)

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The documents with these ids, in the order asked (missing ids are skipped)."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        got = self.get(ids=wanted)
        found = {
            i: Document(page_content=d or "", metadata=dict(m or {}), id=i)
            for i, d, m in zip(got["ids"], got["documents"], got["metadatas"], strict=True)
        }
        return [found[i] for i in wanted if i in found]

    def _query(
        self,
        vector: Sequence[float],
        k: int,
        filter: dict[str, Any] | None,
        where_document: dict[str, Any] | None,
        include: list[str],
    ) -> dict[str, Any]:
        """The first (and only) query of Chroma's result lists (see :func:`nearest`)."""
        import numpy as np

        query = np.asarray([vector], dtype=np.float32)
        self._guard.check_vector(int(query.shape[1]))
        return nearest(self._collection, query, k, filter, where_document, include, self._where)

    def similarity_search_by_vector_with_score(
        self,
        embedding: Sequence[float],
        k: int = 4,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """The ``k`` documents nearest to ``embedding``, with their cosine similarity."""
        _check_kwargs(kwargs, "similarity_search_by_vector_with_score")
        if k <= 0:
            return []
        got = self._query(
            embedding,
            k,
            filter,
            kwargs.get("where_document"),
            ["documents", "metadatas", "distances"],
        )
        return [
            (Document(page_content=d or "", metadata=dict(m or {}), id=i), self._to_similarity(s))
            for i, d, m, s in zip(
                got["ids"][0],
                got["documents"][0],
                got["metadatas"][0],
                got["distances"][0],
                strict=True,
            )
        ]

    def similarity_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        pairs = self.similarity_search_by_vector_with_score(embedding, k, filter, **kwargs)
        return [doc for doc, _ in pairs]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """The ``k`` documents most similar to ``query``, with their cosine similarity
        (higher = more similar)."""
        _check_kwargs(kwargs, "similarity_search_with_score")
        if k <= 0:
            return []
        vector = self._require_embedding().embed_query(query)
        return self.similarity_search_by_vector_with_score(vector, k, filter, **kwargs)

    def similarity_search(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Relevance in ``[0, 1]`` from our cosine similarity: ``(1 + similarity) / 2``."""
        return lambda similarity: min(1.0, max(0.0, (1.0 + similarity) / 2.0))

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """``k`` documents among the ``fetch_k`` nearest, chosen for relevance and diversity."""
        import numpy as np
        from langchain_core.vectorstores.utils import maximal_marginal_relevance

        _check_kwargs(kwargs, "max_marginal_relevance_search")
        if k <= 0:
            return []
        got = self._query(
            embedding,
            max(fetch_k, k),
            filter,
            kwargs.get("where_document"),
            ["documents", "metadatas", "embeddings"],
        )
        vectors = got["embeddings"][0] if got.get("embeddings") is not None else []
        if len(vectors) == 0:
            return []
        picked = maximal_marginal_relevance(
            np.asarray(embedding, dtype=np.float32),
            list(np.asarray(vectors, dtype=np.float32)),
            lambda_mult=lambda_mult,
            k=k,
        )
        ids, docs, metas = got["ids"][0], got["documents"][0], got["metadatas"][0]
        return [
            Document(page_content=docs[i] or "", metadata=dict(metas[i] or {}), id=ids[i])
            for i in picked
        ]

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        vector = self._require_embedding().embed_query(query)
        return self.max_marginal_relevance_search_by_vector(
            vector, k, fetch_k, lambda_mult, filter, **kwargs
        )

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        collection_name: str = "langchain",
        client: ClientAPI | None = None,
        settings: Settings | None = None,
        path: Path | None = None,
        collection_metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> ChromaVectorStore:
        """A store (created if needed) holding ``texts``."""
        if kwargs:
            raise ConfigError(f"from_texts() got unknown arguments {', '.join(sorted(kwargs))}")
        store = cls(
            collection_name,
            embedding,
            client=client,
            settings=settings,
            path=path,
            collection_metadata=collection_metadata,
        )
        store.add_texts(texts, metadatas, ids=ids)
        return store

    def __repr__(self) -> str:
        return f"ChromaVectorStore({self.collection_name!r}, at {self._where!r})"
