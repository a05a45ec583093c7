"""Incremental, crash-safe ingestion: files -> load -> chunk -> embed -> Chroma.

One run:

1. **Scan** the given files and directories, hash every file's bytes.  A file whose content a
   complete record already covers is *skipped*; another path with that content only gets a
   file record (identical content is stored once, with every path in ``sources``).
2. **Process** each new content: its record is marked ``pending``, its chunks are embedded and
   upserted under deterministic ids (content hash, position, text hash), chunks of an older
   cut of the same content are deleted, and only then is the record marked ``complete`` and the
   file records pointing at it written.
3. **Remove** file records of paths under the scanned roots that no longer exist.
4. **Reconcile** every content record against the file records: content that no file names
   any more loses its chunks and record; content whose set of paths changed gets its chunks'
   ``source``/``sources`` metadata rewritten.

Every write is an idempotent upsert or delete and each record is written after the data it
vouches for, so killing the process at any point and running again ends in exactly the store an
uninterrupted run produces -- nothing lost, nothing duplicated.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llamachain.errors import DocumentLoadError, KnowledgeBaseError
from llamachain.ingest.manifest import DocRecord, FileRecord, Manifest

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings

    from llamachain.ingest.chunking import Chunk
    from llamachain.vectorstores import ChromaVectorStore

log = logging.getLogger(__name__)

#: Bump when loaders or the chunker change what they produce, so existing content is re-cut.
PIPELINE_VERSION = 1
_HASH_BLOCK = 1 << 20


@dataclass
class IngestSummary:
    """What one ingestion run did."""

    added: int = 0
    updated: int = 0
    skipped: int = 0
    removed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    chunks_added: int = 0
    chunks_removed: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    tokens_embedded: int = 0
    files_seen: int = 0
    seconds: float = 0.0

    @property
    def chunks_per_second(self) -> float:
        return self.chunks_added / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "skipped": self.skipped,
            "removed": self.removed,
            "failed": [{"path": p, "reason": r} for p, r in self.failed],
            "chunks_added": self.chunks_added,
            "chunks_removed": self.chunks_removed,
            "chunks_embedded": self.chunks_embedded,
            "chunks_reused": self.chunks_reused,
            "tokens_embedded": self.tokens_embedded,
            "files_seen": self.files_seen,
            "seconds": round(self.seconds, 3),
            "chunks_per_second": round(self.chunks_per_second, 2),
        }


@dataclass
class Progress:
    """A snapshot handed to a progress callback after every file and every embedding batch."""

    files_done: int
    files_total: int
    chunks: int
    seconds: float

    @property
    def chunks_per_second(self) -> float:
        return self.chunks / self.seconds if self.seconds > 0 else 0.0


ProgressCallback = Callable[[Progress], None]


def hash_file(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


def _text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def chunk_id(doc_hash: str, index: int, text_hash: str) -> str:
    """Deterministic chunk id: the content it comes from, its position, and its text."""
    return f"{doc_hash[:16]}-{index:05d}-{text_hash[:8]}"


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


@dataclass
class _Pending:
    """A content being processed: its chunks and where they come from."""

    doc_hash: str
    paths: list[str]
    file_type: str
    title: str
    chunks: list[Chunk]
    ids: list[str]
    text_hashes: list[str]
    flushed: int = 0


class Ingestor:
    """Runs ingestion into one knowledge base's vector store and manifest."""

    def __init__(
        self,
        store: ChromaVectorStore,
        manifest: Manifest,
        embeddings: Embeddings,
        *,
        chunk_tokens: int | None,
        chunk_overlap: int,
        batch_size: int = 64,
    ) -> None:
        self.store = store
        self.manifest = manifest
        self.embeddings = embeddings
        self.chunk_tokens = chunk_tokens
        self.chunk_overlap = chunk_overlap
        self.batch_size = max(1, batch_size)
        self._store_had_chunks = True
        model_id = getattr(embeddings, "model_id", type(embeddings).__name__)
        self.signature = f"v{PIPELINE_VERSION}|{model_id}|{chunk_tokens or 'max'}|{chunk_overlap}"

    # ---- scanning ----------------------------------------------------------------------
    def _scan(
        self,
        roots: Sequence[Path],
        include: Sequence[str],
        exclude: Sequence[str],
        s: IngestSummary,
    ) -> dict[str, FileRecord]:
        from llamachain.ingest.loaders import iter_files

        found: dict[str, FileRecord] = {}
        for path in iter_files(roots, include, exclude):
            key = str(path)
            try:
                st = path.stat()
                found[key] = FileRecord(key, hash_file(path), st.st_size, st.st_mtime_ns)
            except OSError as e:
                s.failed.append((key, f"cannot read: {e.strerror or e}"))
        s.files_seen = len(found) + len(s.failed)
        return found

    # ---- the run -----------------------------------------------------------------------
    def run(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        progress: ProgressCallback | None = None,
    ) -> IngestSummary:
        t0 = time.perf_counter()
        s = IngestSummary()
        # An empty store has no vectors to reuse: skip the lookups.
        self._store_had_chunks = self.store.count() > 0
        roots = [Path(p).expanduser().resolve() for p in paths]
        missing = [str(r) for r in roots if not r.exists()]
        if missing:
            # Never treat a mistyped path as "everything under it was deleted".
            raise KnowledgeBaseError(
                f"no such file or directory: {', '.join(missing)}; nothing was changed"
            )
        root_keys = [str(r) for r in roots]
        found = self._scan(roots, include, exclude, s)
        failed_paths = {p for p, _ in s.failed}
        known_files = self.manifest.files()
        docs = self.manifest.docs()

        def usable(h: str) -> bool:
            d = docs.get(h)
            return d is not None and d.status == "complete" and d.signature == self.signature

        # Final mapping path -> content, as planned (failures below keep a path's old record).
        planned = {
            p: r
            for p, r in known_files.items()
            if not (_under(p, root_keys) and p not in found and p not in failed_paths)
        }
        planned.update(found)
        need: dict[str, list[str]] = {}
        direct: list[FileRecord] = []
        added: list[str] = []
        updated: list[str] = []
        for key, rec in sorted(found.items()):
            old = known_files.get(key)
            if old is not None and old.doc_hash == rec.doc_hash and usable(rec.doc_hash):
                s.skipped += 1
                continue
            (added if old is None else updated).append(key)
            if usable(rec.doc_hash):
                direct.append(rec)
            else:
                need.setdefault(rec.doc_hash, []).append(key)
        removed = [p for p in known_files if p not in planned]
        s.removed = len(removed)

        def sources_of(h: str) -> list[str]:
            return sorted(p for p, r in planned.items() if r.doc_hash == h)

        # Intent first: every content about to be written is "pending" until its chunks are in.
        self.manifest.put_docs(
            [
                DocRecord(
                    h, "pending", self.signature, sources=(docs[h].sources if h in docs else [])
                )
                for h in need
            ]
        )
        self.manifest.put_files(direct)
        # One revision change for the whole run (it invalidates saved BM25 indexes), marked
        # "writing" while the run goes on, so a killed run never leaves a trusted stale index.
        with self.store.write_batch():
            self._process(need, found, sources_of, s, progress, t0)
            failed_now = {p for p, _ in s.failed}
            s.added = sum(1 for p in added if p not in failed_now)
            s.updated = sum(1 for p in updated if p not in failed_now)
            self.manifest.delete_files(removed)
            self._reconcile(s)
        s.seconds = time.perf_counter() - t0
        log.info("ingestion finished: %s", s.to_dict())
        return s

    # ---- processing new content ----------------------------------------------------------
    def _load(self, h: str, paths: list[str], s: IngestSummary) -> _Pending | None:
        from llamachain.ingest.chunking import chunk_document
        from llamachain.ingest.loaders import load_file

        try:
            doc = load_file(Path(paths[0]))
            chunks = chunk_document(
                doc,
                self.embeddings,  # type: ignore[arg-type]
                chunk_tokens=self.chunk_tokens,
                overlap_tokens=self.chunk_overlap,
            )
        except DocumentLoadError as e:
            s.failed += [(p, e.problem) for p in paths]
            return None
        except Exception as e:  # a loader bug must not stop the run; report it
            log.exception("unexpected error loading %s", paths[0])
            s.failed += [(p, f"{type(e).__name__}: {e}") for p in paths]
            return None
        th = [_text_hash(c.text) for c in chunks]
        ids = [chunk_id(h, c.index, t) for c, t in zip(chunks, th, strict=True)]
        return _Pending(h, paths, doc.file_type, doc.title, chunks, ids, th)

    def _iter_loaded(self, need: dict[str, list[str]], s: IngestSummary) -> Iterator[_Pending]:
        """Loaded and chunked contents in a stable order, prepared by a background thread.

        Reading, parsing and tokenizing the next files overlaps with embedding the current
        batch (both release the GIL for most of their work).
        """
        order = sorted(need, key=lambda h: min(need[h]))
        q: queue.Queue[_Pending | BaseException | None] = queue.Queue(maxsize=16)
        stop = threading.Event()

        def produce() -> None:
            try:
                for h in order:
                    if stop.is_set():
                        return
                    p = self._load(h, sorted(need[h]), s)
                    if p is not None:
                        q.put(p)
                q.put(None)
            except BaseException as e:  # handed to the consumer, re-raised there
                q.put(e)

        worker = threading.Thread(target=produce, name="llamachain-ingest-loader", daemon=True)
        worker.start()
        try:
            while True:
                item = q.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while worker.is_alive():  # unblock a producer waiting on a full queue
                with contextlib.suppress(queue.Empty):
                    q.get(timeout=0.05)
            worker.join()

    def _process(
        self,
        need: dict[str, list[str]],
        found: dict[str, FileRecord],
        sources_of: Callable[[str], list[str]],
        s: IngestSummary,
        progress: ProgressCallback | None,
        t0: float,
    ) -> None:
        if not need:
            return
        pending: list[_Pending] = []
        buffered = 0
        files_done = 0
        total = sum(len(v) for v in need.values())
        cache: dict[str, list[float]] = {}
        failed_before = len(s.failed)

        def flush(final: bool) -> None:
            nonlocal buffered, files_done
            if buffered:
                self._write(pending, sources_of, cache, s)
            buffered = 0
            done = [p for p in pending if p.flushed == len(p.chunks)]
            self._complete(done, found, sources_of)
            files_done += sum(len(p.paths) for p in done)
            pending[:] = [p for p in pending if p.flushed < len(p.chunks)]
            if progress is not None:
                done_or_failed = files_done + len(s.failed) - failed_before
                elapsed = time.perf_counter() - t0
                progress(Progress(done_or_failed, total, s.chunks_added, elapsed))

        for pend in self._iter_loaded(need, s):
            pending.append(pend)
            buffered += len(pend.chunks)
            # Embedding several batches at once lets the embedder sort texts by length over a
            # wider window (less padding); a crash loses at most this much work.
            if buffered >= max(self.batch_size * 8, 256) or not pend.chunks:
                flush(False)
        flush(True)

    def _write(
        self,
        batch: list[_Pending],
        sources_of: Callable[[str], list[str]],
        cache: dict[str, list[float]],
        s: IngestSummary,
    ) -> None:
        ids: list[str] = []
        texts: list[str] = []
        hashes: list[str] = []
        metas: list[dict[str, Any]] = []
        for p in batch:
            srcs = sources_of(p.doc_hash) or p.paths
            for i in range(p.flushed, len(p.chunks)):
                c = p.chunks[i]
                meta: dict[str, Any] = {
                    "doc_hash": p.doc_hash,
                    "chunk_index": c.index,
                    "text_hash": p.text_hashes[i],
                    "source": srcs[0],
                    "sources": srcs,
                    "file_name": os.path.basename(srcs[0]),
                    "file_type": p.file_type,
                    "title": p.title,
                    "heading": c.heading,
                    "n_tokens": c.n_tokens,
                    "start": c.start,
                }
                if c.page is not None:
                    meta["page"] = c.page
                ids.append(p.ids[i])
                texts.append(c.text)
                hashes.append(p.text_hashes[i])
                metas.append(meta)
                s.tokens_embedded += c.n_tokens
            p.flushed = len(p.chunks)
        vectors = self._embed(texts, hashes, cache, s)
        self.store.upsert_embedded(ids, texts, vectors, metas)
        s.chunks_added += len(ids)

    def _embed(
        self, texts: list[str], hashes: list[str], cache: dict[str, list[float]], s: IngestSummary
    ) -> list[list[float]]:
        """Vectors for ``texts``, reusing identical texts already embedded or stored."""
        missing = sorted({h for h in hashes if h not in cache})
        if missing and self._store_had_chunks:
            where: Any = {"text_hash": {"$in": missing}}
            got = self.store.collection.get(where=where, include=["embeddings", "metadatas"])
            metas: Any = got["metadatas"] if got["metadatas"] is not None else []
            vecs: Any = got["embeddings"] if got["embeddings"] is not None else []
            for meta, vec in zip(metas, vecs, strict=False):
                if meta is not None and vec is not None:
                    cache[str(meta["text_hash"])] = [float(x) for x in vec]
        todo: dict[str, str] = {}
        for t, h in zip(texts, hashes, strict=True):
            if h not in cache:
                todo.setdefault(h, t)
        s.chunks_reused += len(texts) - len(todo)
        if todo:
            keys = list(todo)
            vecs = self.embeddings.embed_documents([todo[k] for k in keys])
            s.chunks_embedded += len(keys)
            for k, v in zip(keys, vecs, strict=True):
                cache[k] = list(v)
        return [cache[h] for h in hashes]

    def _complete(
        self,
        done: list[_Pending],
        found: dict[str, FileRecord],
        sources_of: Callable[[str], list[str]],
    ) -> None:
        """Mark fully written contents complete (one round of store calls for all of them)."""
        if not done:
            return
        # Chunks of an older cut of these contents (another chunk size, an interrupted run with
        # other settings) are removed before the records say the contents are complete.
        if self._store_had_chunks:
            keep = {i for p in done for i in p.ids}
            where: Any = {"doc_hash": {"$in": [p.doc_hash for p in done]}}
            old = self.store.collection.get(where=where, include=[])["ids"]
            stale = [i for i in old if i not in keep]
            if stale:
                self.store.delete(ids=stale)
        records = [
            DocRecord(
                p.doc_hash,
                "complete",
                self.signature,
                n_chunks=len(p.chunks),
                chunk_ids=p.ids,
                sources=sources_of(p.doc_hash) or p.paths,
                file_type=p.file_type,
                title=p.title,
            )
            for p in done
        ]
        self.manifest.put_docs(records)
        self.manifest.put_files([found[path] for p in done for path in p.paths])

    # ---- reconciling sources and orphans ---------------------------------------------------
    def _reconcile(self, s: IngestSummary) -> None:
        files = self.manifest.files()
        docs = self.manifest.docs()
        by_doc: dict[str, list[str]] = {}
        for path, rec in files.items():
            by_doc.setdefault(rec.doc_hash, []).append(path)
        orphans = sorted(h for h in docs if h not in by_doc)
        # Chunks first, then the records that vouch for them (a crash in between is redone).
        for i in range(0, len(orphans), 500):
            where: Any = {"doc_hash": {"$in": orphans[i : i + 500]}}
            old = self.store.collection.get(where=where, include=[])["ids"]
            if old:
                self.store.delete(ids=old)
                s.chunks_removed += len(old)
        self.manifest.delete_docs(orphans)
        for h, d in sorted(docs.items()):
            srcs = sorted(by_doc.get(h, []))
            if srcs and d.status == "complete" and srcs != d.sources:
                self._retag(d, srcs)
                d.sources = srcs
                self.manifest.put_docs([d])

    def _retag(self, d: DocRecord, srcs: list[str]) -> None:
        got = self.store.collection.get(where={"doc_hash": d.doc_hash}, include=["metadatas"])
        if not got["ids"]:
            return
        metas: list[Any] = []
        for old in got["metadatas"] or []:
            m: dict[str, Any] = dict(old or {})
            m["source"] = srcs[0]
            m["sources"] = srcs
            m["file_name"] = os.path.basename(srcs[0])
            metas.append(m)
        self.store.update_metadatas(got["ids"], metas)
