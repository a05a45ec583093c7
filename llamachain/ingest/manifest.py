"""What a knowledge base has ingested: one record per file and one per distinct content.

The manifest lives in the same Chroma database as the chunks (a second collection,
``<name>__files``), so a knowledge base on a Chroma server is complete on its own and a local
one is a single directory to back up.  Chroma needs a vector with every record; manifest
records carry a constant 1-d placeholder.

Records:

* ``file:<path>`` -- a source file: its content hash (``doc_hash``), size and mtime.  Written
  only once that content's chunks are all in the store.
* ``doc:<hash>`` -- a distinct content: ``status`` (``pending`` while its chunks are being
  written, ``complete`` after), the number of chunks, the chunking signature it was cut with,
  and the sorted paths (``sources``) that the chunks' metadata currently names.

Every step of an ingestion is idempotent and ordered so that a crash at any point leaves a state
that the next run completes to exactly what an uninterrupted run would have produced (see
:mod:`llamachain.ingest.pipeline`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from llamachain.errors import StoreError

MANIFEST_SUFFIX = "__files"
_PLACEHOLDER = [0.0]
_PAGE = 5000


@dataclass
class FileRecord:
    path: str
    doc_hash: str
    size: int
    mtime_ns: int

    @property
    def id(self) -> str:
        return "file:" + self.path

    def metadata(self) -> dict[str, Any]:
        return {
            "kind": "file",
            "path": self.path,
            "doc_hash": self.doc_hash,
            "size": self.size,
            # Chroma stores 64-bit ints; nanosecond mtimes fit.
            "mtime_ns": self.mtime_ns,
        }


@dataclass
class DocRecord:
    doc_hash: str
    status: str  # "pending" | "complete"
    signature: str
    n_chunks: int = 0
    chunk_ids: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    file_type: str = ""
    title: str = ""

    @property
    def id(self) -> str:
        return "doc:" + self.doc_hash

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "kind": "doc",
            "doc_hash": self.doc_hash,
            "status": self.status,
            "signature": self.signature,
            "n_chunks": self.n_chunks,
            "file_type": self.file_type,
            "title": self.title,
        }
        # Chroma rejects empty lists as metadata values.
        if self.sources:
            meta["sources"] = list(self.sources)
        return meta


def _doc_from(meta: dict[str, Any], document: str | None) -> DocRecord:
    sources = meta.get("sources") or []
    if isinstance(sources, str):
        sources = [sources]
    return DocRecord(
        doc_hash=str(meta["doc_hash"]),
        status=str(meta.get("status", "pending")),
        signature=str(meta.get("signature", "")),
        n_chunks=int(meta.get("n_chunks", 0)),
        chunk_ids=(document or "").split() if document else [],
        sources=[str(s) for s in sources],
        file_type=str(meta.get("file_type", "")),
        title=str(meta.get("title", "")),
    )


class Manifest:
    """The ``<name>__files`` collection of a knowledge base."""

    def __init__(self, client: Any, kb_name: str, *, create: bool = True) -> None:
        self.name = kb_name + MANIFEST_SUFFIX
        try:
            if create:
                self._col = client.get_or_create_collection(
                    self.name,
                    embedding_function=None,
                    metadata={"llamachain_kind": "manifest", "knowledge_base": kb_name},
                )
            else:
                self._col = client.get_collection(self.name, embedding_function=None)
        except Exception as e:  # chromadb raises many kinds
            raise StoreError(f"cannot open the manifest of knowledge base {kb_name!r}: {e}") from e
        self._batch = max(1, min(int(client.get_max_batch_size()), 2000))

    # ---- reading -----------------------------------------------------------------------
    def _get_all(self, kind: str, include: list[str]) -> tuple[list[str], list[Any], list[Any]]:
        ids: list[str] = []
        metas: list[Any] = []
        docs: list[Any] = []
        offset = 0
        while True:
            got = self._col.get(where={"kind": kind}, include=include, limit=_PAGE, offset=offset)
            ids += got["ids"]
            metas += got.get("metadatas") or [None] * len(got["ids"])
            docs += got.get("documents") or [None] * len(got["ids"])
            if len(got["ids"]) < _PAGE:
                return ids, metas, docs
            offset += _PAGE

    def files(self) -> dict[str, FileRecord]:
        _, metas, _ = self._get_all("file", ["metadatas"])
        out: dict[str, FileRecord] = {}
        for m in metas:
            rec = FileRecord(
                path=str(m["path"]),
                doc_hash=str(m["doc_hash"]),
                size=int(m.get("size", 0)),
                mtime_ns=int(m.get("mtime_ns", 0)),
            )
            out[rec.path] = rec
        return out

    def docs(self) -> dict[str, DocRecord]:
        _, metas, documents = self._get_all("doc", ["metadatas", "documents"])
        out: dict[str, DocRecord] = {}
        for m, d in zip(metas, documents, strict=True):
            rec = _doc_from(m, d)
            out[rec.doc_hash] = rec
        return out

    # ---- writing -----------------------------------------------------------------------
    def _upsert(self, ids: list[str], metas: list[dict[str, Any]], docs: list[str]) -> None:
        for i in range(0, len(ids), self._batch):
            sl = slice(i, i + self._batch)
            self._col.upsert(
                ids=ids[sl],
                metadatas=metas[sl],
                documents=docs[sl],
                embeddings=[_PLACEHOLDER] * len(ids[sl]),
            )

    def put_files(self, records: Sequence[FileRecord]) -> None:
        if records:
            self._upsert(
                [r.id for r in records], [r.metadata() for r in records], [""] * len(records)
            )

    def put_docs(self, records: Sequence[DocRecord]) -> None:
        if records:
            # The chunk ids of a content go in the record's document text (they can be many).
            self._upsert(
                [r.id for r in records],
                [r.metadata() for r in records],
                [" ".join(r.chunk_ids) for r in records],
            )

    def delete_files(self, paths: Iterable[str]) -> None:
        ids = ["file:" + p for p in paths]
        for i in range(0, len(ids), self._batch):
            self._col.delete(ids=ids[i : i + self._batch])

    def delete_docs(self, hashes: Iterable[str]) -> None:
        ids = ["doc:" + h for h in hashes]
        for i in range(0, len(ids), self._batch):
            self._col.delete(ids=ids[i : i + self._batch])
