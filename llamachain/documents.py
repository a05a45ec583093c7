"""Retrieval-plugin documents over a knowledge base: upsert, query and delete by id or metadata.

A *document* here is a text given by a client (the chatgpt-retrieval-plugin model: an id, a
text and ``source`` / ``source_id`` / ``url`` / ``created_at`` / ``author`` metadata), or a
file uploaded whole.  :class:`DocumentStore` cuts it with the file ingestion's chunker and chunk
size (the embedder's tokens), embeds it with the knowledge base's embeddings and stores the
chunks in the knowledge base's own collection, so :meth:`KnowledgeBase.retriever`,
``llamachain ask`` and :class:`~llamachain.qa.GroundedQA` find and cite them like ingested files
(see :mod:`llamachain._doc_filter` for their metadata).  File ingestion never touches them, and
this module never touches the file ingestion's chunks or manifest.

>>> store = DocumentStore(KnowledgeBase("notes"))                           # doctest: +SKIP
>>> store.upsert([DocumentInput("The VPN needs port 443.", id="vpn")])      # doctest: +SKIP
['vpn']
>>> store.query("which port?", top_k=1)[0].document_id                     # doctest: +SKIP
'vpn'

Writes are all-or-nothing and serialized by the store's lock; queries run concurrently with each
other but not during a write, so they never see a document half replaced.  Use one
:class:`DocumentStore` per knowledge base in a process (the lock is the object's).  Writes do
not wait for a file ingestion into the same knowledge base (they touch different chunks).
``KnowledgeBase.stats()["chunks"]`` counts the chunks of both kinds.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llamachain import _doc_filter as df
from llamachain.errors import ConfigError, DocumentLoadError, EmbeddingError, LlamaChainError
from llamachain.ingest.loaders import LoadedDocument, Section

if TYPE_CHECKING:
    from llamachain.knowledge import KnowledgeBase
    from llamachain.retrievers import HybridRetriever

log = logging.getLogger(__name__)

__all__ = ["ChunkHit", "DocumentFilter", "DocumentInput", "DocumentMetadata", "DocumentStore"]

MAX_ID_LENGTH = df.MAX_ID_LENGTH
MAX_TOP_K = 100


@dataclass
class DocumentMetadata:
    """The retrieval plugin's document metadata (every field optional).

    ``source`` is one of ``"email"``, ``"file"``, ``"chat"``; ``created_at`` an ISO 8601 date
    or datetime (without a time zone it is taken as UTC).  Invalid values raise
    :class:`~llamachain.errors.ConfigError`.
    """

    source: str | None = None
    source_id: str | None = None
    url: str | None = None
    created_at: str | None = None
    author: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        df.check_source(self.source)
        for name in ("source_id", "url", "created_at", "author"):
            df.check_text_field(getattr(self, name), name)
        if self.created_at is not None:
            df.parse_time(self.created_at, "created_at")

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class DocumentInput:
    """A document to upsert; without ``id`` it gets a new uuid4 hex id.  Its text is cleaned
    as a text file's is (newlines unified, control characters and trailing spaces dropped)."""

    text: str
    id: str | None = None
    metadata: DocumentMetadata = field(default_factory=DocumentMetadata)


@dataclass
class DocumentFilter:
    """Which documents a query or delete applies to: every given field must match.

    ``start_date`` / ``end_date`` (ISO 8601) bound ``created_at`` inclusively, to the second;
    a bare date as ``end_date`` means the end of that day.  Documents without ``created_at``
    never match a date bound.
    """

    document_id: str | None = None
    source: str | None = None
    source_id: str | None = None
    author: str | None = None
    start_date: str | None = None
    end_date: str | None = None

    def is_empty(self) -> bool:
        return all(v is None for v in asdict(self).values())

    def where(self) -> dict[str, Any]:
        """The Chroma ``where`` of what :meth:`DocumentStore.query` searches for this filter,
        for any retriever over the knowledge base (``kb.retriever(filter=f.where())``,
        ``GroundedQA`` input ``{"question": ..., "filter": f.where()}``).  ConfigError for
        invalid values or an empty filter."""
        f = _checked_filter(self)
        if f is None:
            raise ConfigError("the filter is empty: set at least one field")
        return df.query_where(f)


@dataclass
class ChunkHit:
    """One chunk a query found.

    ``score`` is the hybrid retriever's fused reciprocal-rank score (the sum over the dense and
    BM25 searches that found the chunk of ``1 / (60 + rank)``): higher is more relevant, at
    most about 0.033; it ranks results within one query and is not comparable across queries.
    A chunk from an ingested file has its path as ``document_id`` and ``source="file"``.
    """

    id: str
    text: str
    score: float
    document_id: str
    metadata: DocumentMetadata
    embedding: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "text": self.text,
            "metadata": {**self.metadata.to_dict(), "document_id": self.document_id},
            "embedding": self.embedding,
            "score": self.score,
        }


@dataclass
class _Prepared:
    """A validated, chunked and embedded document, ready to write."""

    document_id: str
    ids: list[str]
    texts: list[str]
    metadatas: list[dict[str, Any]]
    vectors: list[list[float]] = field(default_factory=list)


def _checked(meta: object, what: str) -> DocumentMetadata:
    if meta is None:
        return DocumentMetadata()
    if not isinstance(meta, DocumentMetadata):
        raise ConfigError(f"{what}: metadata must be a DocumentMetadata, got {type(meta).__name__}")
    meta.validate()
    return meta


def _checked_filter(f: object) -> DocumentFilter | None:
    """``f`` checked (ConfigError if invalid); ``None`` for no filter or an empty one."""
    if f is None:
        return None
    if not isinstance(f, DocumentFilter):
        raise ConfigError(f"filter must be a DocumentFilter, got {type(f).__name__}")
    df.check_filter(f)
    return None if f.is_empty() else f


class DocumentStore:
    """Plugin documents in a :class:`~llamachain.knowledge.KnowledgeBase`.

    ``chunk_tokens`` / ``chunk_overlap`` default to the knowledge base's settings (as file
    ingestion uses them).  The store is safe to call from many threads at once.
    """

    def __init__(
        self,
        kb: KnowledgeBase,
        *,
        chunk_tokens: int | None = None,
        chunk_overlap: int | None = None,
    ) -> None:
        from llamachain.ingest.chunking import effective_sizes

        self.kb = kb
        s = kb.settings
        self.chunk_tokens = chunk_tokens if chunk_tokens is not None else s.chunk_tokens
        self.chunk_overlap = chunk_overlap if chunk_overlap is not None else s.chunk_overlap
        self._sizes = effective_sizes(kb.embeddings, self.chunk_tokens, self.chunk_overlap)  # type: ignore[arg-type]
        self._store = kb.vectorstore  # opened now: the property is not thread-safe
        self._lock = df.RWLock()
        self._retriever: HybridRetriever | None = None
        self._retriever_lock = threading.Lock()

    # ---- writing ----------------------------------------------------------------------------
    def upsert(self, documents: Sequence[DocumentInput]) -> list[str]:
        """Add documents, replacing any stored under the same id; returns their ids in order.

        All or nothing: every document is checked, chunked and embedded before anything is
        written, and if a write fails the store is put back as it was.  Upserting a document
        unchanged writes nothing.  A repeated id within one call keeps its last document.
        """
        from llamachain.ingest._text import normalize

        ids: list[str] = []
        latest: dict[str, _Prepared] = {}
        for position, doc in enumerate(documents):
            if not isinstance(doc, DocumentInput):
                raise ConfigError(
                    f"document {position} is a {type(doc).__name__}, not a DocumentInput"
                )
            doc_id = uuid.uuid4().hex if doc.id is None else df.check_id(doc.id, position)
            what = f"document {position}" + (f" ({doc.id!r})" if doc.id is not None else "")
            if not isinstance(doc.text, str):
                raise ConfigError(f"{what}: text must be a string, got {type(doc.text).__name__}")
            text = normalize(doc.text)  # cleaned as a text file's is
            if not text:
                raise ConfigError(f"{what} has no text to index: send a non-empty text")
            meta = _checked(doc.metadata, what)
            latest.pop(doc_id, None)
            latest[doc_id] = self._prepare(doc_id, [Section(text)], meta, None, "text")
            ids.append(doc_id)
        self._write(list(latest.values()))
        return ids

    def upsert_file(
        self,
        path: str | os.PathLike[str],
        *,
        metadata: DocumentMetadata | None = None,
        document_id: str | None = None,
        filename: str | None = None,
    ) -> str:
        """Load a file of any type file ingestion reads and upsert its text as one document
        (its sections' headings and pages are kept for citations); returns the document id.

        ``filename`` is the name citations show (default: the file's own name).  Raises
        :class:`~llamachain.errors.DocumentLoadError` for an unsupported, unreadable or
        text-less file.
        """
        from llamachain.ingest.loaders import load_file

        doc_id = uuid.uuid4().hex if document_id is None else df.check_id(document_id, 0)
        meta = _checked(metadata, "the file")
        shown = filename or Path(path).name
        try:
            loaded = load_file(Path(path))
        except DocumentLoadError as e:  # name the file as the caller knows it
            raise DocumentLoadError(shown, e.problem) from e
        sections = [s for s in loaded.sections if s.text.strip()]
        if not sections:
            raise DocumentLoadError(shown, "the file has no text to index")
        self._write([self._prepare(doc_id, sections, meta, shown, loaded.file_type)])
        return doc_id

    def _prepare(
        self,
        doc_id: str,
        sections: list[Section],
        meta: DocumentMetadata,
        filename: str | None,
        file_type: str,
    ) -> _Prepared:
        plugin = meta.to_dict()
        title = df.readable_title(doc_id, plugin, filename)
        shared = df.chunk_metadata(doc_id, plugin, title=title, file_type=file_type)
        from llamachain.ingest.chunking import chunk_document

        doc = LoadedDocument(Path(filename or doc_id), file_type, title, sections)
        size, overlap = self._sizes
        chunks = chunk_document(doc, self.kb.embeddings, size, overlap)  # type: ignore[arg-type]
        ids, texts, metas = df.cut(doc_id, chunks, shared)
        prep = _Prepared(doc_id, ids, texts, metas)
        if not prep.ids:
            raise ConfigError(f"document {doc_id!r} has no text to index")
        return prep

    def _embed(self, docs: list[_Prepared]) -> None:
        """Vectors for every chunk: reused from the store where that exact chunk is stored
        already (its id names its text), else embedded; nothing is written here."""
        known = df.vectors_of(self._store, [i for d in docs for i in d.ids])
        todo = [(i, t) for d in docs for i, t in zip(d.ids, d.texts, strict=True) if i not in known]
        if todo:
            try:
                vectors = self.kb.embeddings.embed_documents([t for _, t in todo])
            except LlamaChainError:
                raise
            except Exception as e:
                raise EmbeddingError(
                    f"embedding the documents failed: {type(e).__name__}: {e}"
                ) from e
            if len(vectors) != len(todo):
                raise EmbeddingError(
                    f"the embedder returned {len(vectors)} vectors for {len(todo)} texts"
                )
            known.update((i, list(v)) for (i, _), v in zip(todo, vectors, strict=True))
        for d in docs:
            d.vectors = [known[i] for i in d.ids]

    def _write(self, docs: list[_Prepared]) -> None:
        if not docs:
            return
        self._embed(docs)
        with self._lock.write():
            doc_ids = [d.document_id for d in docs]
            old = df.existing(self._store, doc_ids, ["documents", "metadatas", "embeddings"])
            old_meta = dict(zip(old["ids"], old["metadatas"], strict=True))
            by_doc: dict[str, set[str]] = {}
            for i, m in zip(old["ids"], old["metadatas"], strict=True):
                by_doc.setdefault(str((m or {}).get("document_id")), set()).add(i)
            changed = [
                d
                for d in docs
                if by_doc.get(d.document_id, set()) != set(d.ids)
                or any(old_meta.get(i) != m for i, m in zip(d.ids, d.metadatas, strict=True))
            ]
            if not changed:
                return
            new_ids = {i for d in changed for i in d.ids}
            stale = [i for d in changed for i in by_doc.get(d.document_id, ()) if i not in new_ids]
            try:
                with self._store.write_batch():
                    for d in changed:
                        self._store.upsert_embedded(d.ids, d.texts, d.vectors, d.metadatas)
                    if stale:
                        self._store.delete(ids=stale)
            except BaseException:
                df.restore(self._store, new_ids, old, self.kb.name)
                raise
        log.info(
            "upserted %d documents (%d chunks, %d replaced)",
            len(changed),
            len(new_ids),
            sum(1 for d in changed if d.document_id in by_doc),
        )

    def delete(
        self,
        *,
        ids: Sequence[str] | None = None,
        filter: DocumentFilter | None = None,
        delete_all: bool = False,
    ) -> int:
        """Remove plugin documents: those in ``ids``, those matching ``filter`` (both may be
        given), or with ``delete_all`` every one of them.  Returns how many were removed
        (unknown ids count 0).

        Only documents upserted through this API are removed: content from file ingestion
        belongs to the ingestion (delete the files and ingest again), even with ``delete_all``.
        """
        filter = _checked_filter(filter)
        if ids is not None:
            if isinstance(ids, str):
                raise ConfigError("ids must be a list of document ids, not one string")
            ids = [df.check_id(i, n) for n, i in enumerate(ids)]
        if ids is None and filter is None and not delete_all:
            raise ConfigError(
                "delete() needs something to delete: pass ids, filter or delete_all=True"
            )
        with self._lock.write():
            found: dict[str, str] = {}  # chunk id -> document id
            wheres: list[dict[str, Any]] = []
            if delete_all:
                wheres.append(df.plugin_where(None))
            else:
                if filter is not None:
                    wheres.append(df.plugin_where(filter))
                for start in range(0, len(ids or ()), df.IN_BATCH):
                    part = list(ids or ())[start : start + df.IN_BATCH]
                    wheres.append(df.ids_where(part))
            for where in wheres:
                got = self._store.get(where=where, include=["metadatas"])
                for i, m in zip(got["ids"], got["metadatas"], strict=True):
                    found[i] = str((m or {}).get("document_id"))
            if found:
                with self._store.write_batch():
                    self._store.delete(ids=sorted(found))
        n = len(set(found.values()))
        log.info("deleted %d documents (%d chunks) from %s", n, len(found), self.kb.name)
        return n

    # ---- reading ----------------------------------------------------------------------------
    def _first_chunks(self) -> dict[str, Any]:
        where = {"$and": [{df.ORIGIN_KEY: df.ORIGIN}, {"chunk_index": 0}]}
        return self._store.get(where=where, include=["metadatas"])

    def count(self) -> int:
        """How many plugin documents are stored (ingested files not counted)."""
        with self._lock.read():
            return len(self._first_chunks()["ids"])

    def document_ids(self) -> list[str]:
        """The ids of the stored plugin documents, sorted."""
        with self._lock.read():
            metas = self._first_chunks()["metadatas"]
        return sorted({str((m or {}).get("document_id")) for m in metas})

    def _hybrid(self) -> HybridRetriever:
        with self._retriever_lock:
            if self._retriever is None:
                self._retriever = self.kb.retriever(mode=self.kb.settings.retrieval_mode)
            return self._retriever

    def query(
        self,
        query: str,
        *,
        top_k: int = 3,
        filter: DocumentFilter | None = None,
        include_embeddings: bool = False,
    ) -> list[ChunkHit]:
        """The ``top_k`` (1 to 100) chunks most relevant to ``query``, best first, by the
        knowledge base's hybrid retriever (its mode from the settings).

        Without a filter every chunk of the knowledge base competes, ingested files included.
        A filter keeps the chunks whose metadata, as the hits report it, match: plugin
        documents, and ingested-file chunks only for a filter on nothing but ``document_id``
        (their path) and/or ``source="file"``.  ``include_embeddings`` adds each chunk's
        stored vector.
        """
        if not isinstance(query, str) or not query.strip():
            raise ConfigError("the query is empty: pass the text to search for")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
            raise ConfigError(f"top_k must be a whole number from 1 to {MAX_TOP_K}, got {top_k!r}")
        f = _checked_filter(filter)
        where = None if f is None else df.query_where(f)
        retriever = self._hybrid()
        with self._lock.read():
            docs = retriever.search(query, k=top_k, filter=where)
            wanted = [str(d.id) for d in docs] if include_embeddings else []
            vectors = df.vectors_of(self._store, wanted)
        hits = []
        for d in docs:
            m = dict(d.metadata)
            doc_id = m.get("document_id") if df.is_plugin(m) else m.get("source")
            hits.append(
                ChunkHit(
                    id=str(d.id),
                    text=d.page_content,
                    score=float(m.get("score", 0.0)),
                    document_id=str(doc_id or d.id),
                    metadata=DocumentMetadata(**df.plugin_fields(m)),
                    embedding=vectors.get(str(d.id)) if include_embeddings else None,
                )
            )
        return hits
