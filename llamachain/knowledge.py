"""Knowledge bases: named sets of ingested documents in Chroma, with the embedder they use.

A knowledge base ``NAME`` is two Chroma collections in one database -- ``NAME`` (the chunks,
with their vectors) and ``NAME__files`` (the manifest of ingested files, see
:mod:`llamachain.ingest.manifest`).  The database is a local directory under
``Settings.kb_dir`` by default, or a Chroma server when ``Settings.chroma_host`` is set.

>>> kb = KnowledgeBase("docs")                       # doctest: +SKIP
>>> kb.ingest(["~/notes"], progress=True)            # doctest: +SKIP
>>> kb.retriever(k=4).invoke("how do I reset it?")   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llamachain._chroma import DIMENSION_KEY, MODEL_KEY
from llamachain.errors import ConfigError, KnowledgeBaseError
from llamachain.ingest.manifest import MANIFEST_SUFFIX, Manifest
from llamachain.ingest.pipeline import Ingestor, IngestSummary, Progress, ProgressCallback
from llamachain.settings import Settings

if TYPE_CHECKING:
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings

    from llamachain.retrievers import HybridRetriever
    from llamachain.vectorstores import ChromaVectorStore

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{1,60}[A-Za-z0-9]$")
KIND_KEY = "llamachain_kind"
KIND = "knowledge_base"
EMBEDDING_PATH_KEY = "llamachain_embedding_path"


def validate_name(name: str) -> str:
    if not _NAME.match(name) or MANIFEST_SUFFIX in name:
        raise ConfigError(
            f"invalid knowledge base name {name!r}: use 3-62 letters, digits, '-' or '_', "
            "starting and ending with a letter or digit (and no '__files')"
        )
    return name


class KnowledgeBase:
    """A named, incrementally updated collection of document chunks.

    ``embeddings`` defaults to the model the knowledge base was built with when that model is
    a local directory that still exists, else to :class:`~llamachain.embeddings.LocalEmbeddings`
    from ``settings``.  ``create=False`` raises :class:`KnowledgeBaseError` for an unknown name
    instead of creating it.
    """

    def __init__(
        self,
        name: str,
        *,
        settings: Settings | None = None,
        embeddings: Embeddings | None = None,
        client: Any = None,
        create: bool = True,
    ) -> None:
        self.name = validate_name(name)
        self.settings = settings or Settings()
        self._client = client
        self._embeddings = embeddings
        self._create = create
        self._store: ChromaVectorStore | None = None
        self._manifest: Manifest | None = None
        if not create and not self.exists():
            raise KnowledgeBaseError(
                f"no knowledge base named {name!r} in {self.location}; create it with "
                f"`llamachain ingest PATH --kb {name}` (known: {', '.join(self.names()) or 'none'})"
            )

    # ---- plumbing ---------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            from llamachain._chroma import make_client

            self._client = make_client(self.settings)
        return self._client

    @property
    def location(self) -> str:
        s = self.settings
        if s.chroma_host:
            return f"{'https' if s.chroma_ssl else 'http'}://{s.chroma_host}:{s.chroma_port}"
        return str(s.kb_dir)

    def _collection(self) -> Any | None:
        try:
            return self.client.get_collection(self.name, embedding_function=None)
        except Exception:
            return None

    def _collection_metadata(self) -> dict[str, Any] | None:
        col = self._collection()
        return None if col is None else dict(col.metadata or {})

    def exists(self) -> bool:
        meta = self._collection_metadata()
        return meta is not None and meta.get(KIND_KEY) == KIND

    def names(self) -> list[str]:
        return sorted(
            c.name
            for c in self.client.list_collections()
            if (c.metadata or {}).get(KIND_KEY) == KIND
        )

    @property
    def embeddings(self) -> Embeddings:
        if self._embeddings is None:
            from llamachain.embeddings import LocalEmbeddings

            model = self.settings.embedding_model
            recorded = (self._collection_metadata() or {}).get(EMBEDDING_PATH_KEY)
            if model is None and recorded and Path(str(recorded)).is_dir():
                model = str(recorded)
            self._embeddings = LocalEmbeddings(model_name=model, settings=self.settings)
        return self._embeddings

    @property
    def vectorstore(self) -> ChromaVectorStore:
        if self._store is None:
            from llamachain.vectorstores import ChromaVectorStore

            meta: dict[str, Any] = {KIND_KEY: KIND}
            path = getattr(self.embeddings, "model_dir", None)
            if path:
                meta[EMBEDDING_PATH_KEY] = str(path)
            self._store = ChromaVectorStore(
                self.name,
                self.embeddings,
                client=self.client,
                settings=self.settings,
                create=self._create,
                collection_metadata=meta,
            )
        return self._store

    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            self._manifest = Manifest(self.client, self.name)
        return self._manifest

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """One ingestion at a time per local knowledge base (a server has no shared lock)."""
        if self.settings.chroma_host:
            yield
            return
        import fcntl

        lock_dir = self.settings.kb_dir / "locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        with open(lock_dir / f"{self.name}.lock", "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise KnowledgeBaseError(
                    f"another ingestion into knowledge base {self.name!r} is running; "
                    "wait for it to finish"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # ---- operations -------------------------------------------------------------------------
    def ingest(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        progress: bool | ProgressCallback = False,
        chunk_tokens: int | None = None,
        chunk_overlap: int | None = None,
    ) -> IngestSummary:
        """Bring the knowledge base up to date with ``paths`` (files and directories).

        New and changed files are loaded, chunked and embedded; unchanged ones are skipped;
        files that disappeared from under the given directories are removed.  Unreadable files
        are reported in ``summary.failed`` and the run goes on.  Safe to interrupt at any point:
        the next run finishes the job.
        """
        if not paths:
            raise ConfigError("nothing to ingest: pass at least one file or directory")
        callback: ProgressCallback | None
        bar = None
        if progress is True:
            bar, callback = _progress_bar()
        elif progress is False:
            callback = None
        else:
            callback = progress
        ingestor = Ingestor(
            self.vectorstore,
            self.manifest,
            self.embeddings,
            chunk_tokens=chunk_tokens if chunk_tokens is not None else self.settings.chunk_tokens,
            chunk_overlap=(
                chunk_overlap if chunk_overlap is not None else self.settings.chunk_overlap
            ),
            batch_size=self.settings.embedding_batch_size,
        )
        try:
            with self._lock():
                return ingestor.run(paths, include=include, exclude=exclude, progress=callback)
        finally:
            if bar is not None:
                bar.close()

    def retriever(
        self,
        *,
        k: int | None = None,
        fetch_k: int | None = None,
        mode: str | None = None,
        filter: dict[str, Any] | None = None,
    ) -> HybridRetriever:
        from llamachain.retrievers import HybridRetriever

        s = self.settings
        return HybridRetriever(
            vectorstore=self.vectorstore,
            k=k or s.retrieval_k,
            fetch_k=fetch_k or s.fetch_k,
            mode=mode or s.retrieval_mode,
            filter=filter,
        )

    def search(
        self,
        query: str,
        *,
        k: int | None = None,
        mode: str | None = None,
        filter: dict[str, Any] | None = None,
    ) -> list[Document]:
        """The top chunks for ``query``; each has ``score`` (and per-method scores) in metadata."""
        return self.retriever(k=k, mode=mode, filter=filter).invoke(query)

    def stats(self) -> dict[str, Any]:
        col = self._collection()
        if col is None:
            raise KnowledgeBaseError(f"knowledge base {self.name!r} no longer exists")
        meta = dict(col.metadata or {})
        files = self.manifest.files()
        docs = self.manifest.docs()
        types: dict[str, int] = {}
        for d in docs.values():
            types[d.file_type] = types.get(d.file_type, 0) + len(d.sources or [])
        out: dict[str, Any] = {
            "name": self.name,
            "location": self.location,
            "chunks": col.count(),
            "files": len(files),
            "contents": len(docs),
            "pending": sum(1 for d in docs.values() if d.status != "complete"),
            "file_types": dict(sorted(types.items())),
            "embedding_model": meta.get(MODEL_KEY),
            "embedding_dimension": meta.get(DIMENSION_KEY),
        }
        return out

    def delete(self) -> None:
        """Delete the knowledge base's chunks and manifest (its source files are untouched)."""
        if self.exists():
            self.vectorstore.delete_collection()  # also drops its BM25 index on disk
        from llamachain._chroma import drop_collection

        with contextlib.suppress(Exception):
            drop_collection(self.client, self.name + MANIFEST_SUFFIX)
        self._store = None
        self._manifest = None

    @classmethod
    def list(cls, settings: Settings | None = None, *, client: Any = None) -> list[dict[str, Any]]:
        """Every knowledge base in the configured store, with its size and embedder."""
        settings = settings or Settings()
        if client is None:
            from llamachain._chroma import make_client

            client = make_client(settings)
        out = []
        for c in client.list_collections():
            meta = c.metadata or {}
            if meta.get(KIND_KEY) != KIND:
                continue
            out.append(
                {
                    "name": c.name,
                    "chunks": c.count(),
                    "embedding_model": meta.get(MODEL_KEY),
                    "embedding_dimension": meta.get(DIMENSION_KEY),
                }
            )
        return sorted(out, key=lambda d: d["name"])


def _progress_bar() -> tuple[Any, ProgressCallback]:
    from tqdm import tqdm

    bar = tqdm(total=0, unit="file", desc="ingesting", dynamic_ncols=True, leave=True)

    def update(p: Progress) -> None:
        bar.total = p.files_total
        bar.n = p.files_done
        bar.set_postfix(chunks=p.chunks, rate=f"{p.chunks_per_second:.1f} chunks/s", refresh=False)
        bar.refresh()

    return bar, update
