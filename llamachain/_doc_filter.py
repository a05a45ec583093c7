"""Helpers of :mod:`llamachain.documents`: dates, chunk metadata, ``where`` filters, a lock.

Plugin documents are stored as chunks in the knowledge base's collection.  Their metadata has
the keys the QA chain and the retriever read (``source`` -- the url, else the source id, else
``document:<id>`` --, ``sources``, ``file_name`` and ``title`` -- the uploaded file's name, the
url, the source id or ``document <id>`` --, ``heading``, ``page``, ``chunk_index``,
``n_tokens``, ``start``), ``file_type: "document"`` (the loaded type of an uploaded file is in
``document_file_type``), the marker ``origin: "document"``, and the plugin fields, namespaced
so they never clash with the file
ingestion's: ``document_id``, ``plugin_source`` (email / file / chat), ``source_id``, ``url``,
``author``, ``created_at`` (the ISO string given) and ``created_at_ts`` (its Unix time in
whole seconds, UTC; a date or datetime without a time zone is taken as UTC), which date-range
filters compare.  They carry no ``doc_hash`` or ``text_hash``, the keys by which file
ingestion finds, reuses and removes its own chunks.  A chunk's id is
``<document id>:<position, 5 digits>-<hash of its text>``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from llamachain.errors import ConfigError

if TYPE_CHECKING:
    from llamachain.documents import DocumentFilter
    from llamachain.ingest.chunking import Chunk
    from llamachain.vectorstores import ChromaVectorStore

log = logging.getLogger(__name__)

ORIGIN_KEY = "origin"
ORIGIN = "document"
SOURCES = ("email", "file", "chat")
MAX_ID_LENGTH = 512
#: Metadata keys of a plugin chunk that hold :class:`~llamachain.documents.DocumentMetadata`.
PLUGIN_KEYS = {
    "plugin_source": "source",
    "source_id": "source_id",
    "url": "url",
    "created_at": "created_at",
    "author": "author",
}


def check_source(value: object, what: str = "source") -> None:
    if value is not None and value not in SOURCES:
        raise ConfigError(f"unknown {what} {value!r}; choose one of: {', '.join(SOURCES)}")


def check_text_field(value: object, what: str) -> None:
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{what} must be a string, got {type(value).__name__}")


def parse_time(value: object, what: str) -> tuple[dt.datetime, bool]:
    """``(aware datetime, is a date without a time)`` for an ISO 8601 date or datetime."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{what} must be an ISO 8601 date or datetime string, got {value!r}")
    text = value.strip()
    date_only = False
    try:
        try:
            when = dt.datetime.combine(dt.date.fromisoformat(text), dt.time())
            date_only = True
        except ValueError:
            when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"{what} {value!r} is not an ISO 8601 date or datetime; write it like "
            "2024-05-01 or 2024-05-01T12:30:00Z"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when, date_only


def timestamp(value: object, what: str, *, end_of_day: bool = False) -> int:
    """Unix time in whole seconds; with ``end_of_day`` a bare date means its last second."""
    when, date_only = parse_time(value, what)
    if end_of_day and date_only:
        when += dt.timedelta(days=1, seconds=-1)
    return math.floor(when.timestamp())


def chunk_metadata(
    document_id: str,
    plugin: dict[str, Any],
    *,
    title: str,
    file_type: str,
) -> dict[str, Any]:
    """The metadata every chunk of one plugin document shares (chunk fields added later)."""
    source = plugin.get("url") or plugin.get("source_id") or f"document:{document_id}"
    meta: dict[str, Any] = {
        ORIGIN_KEY: ORIGIN,
        "document_id": document_id,
        "source": source,
        "sources": [source],
        "file_name": title,
        "title": title,
        "file_type": ORIGIN,
        "document_file_type": file_type,
    }
    for key, field in PLUGIN_KEYS.items():
        if plugin.get(field) is not None:
            meta[key] = plugin[field]
    if plugin.get("created_at") is not None:
        meta["created_at_ts"] = timestamp(plugin["created_at"], "created_at")
    return meta


def readable_title(document_id: str, plugin: dict[str, Any], filename: str | None) -> str:
    """What a citation shows for a document: its file name, URL, source id, or its id."""
    for value in (filename, plugin.get("url"), plugin.get("source_id")):
        if value:
            return str(value)
    return f"document {document_id}"


def plugin_fields(meta: dict[str, Any]) -> dict[str, Any]:
    """The :class:`~llamachain.documents.DocumentMetadata` fields of a stored chunk; values
    that would not pass validation (written by another tool) are left out."""
    out: dict[str, Any] = {}
    if meta.get(ORIGIN_KEY) != ORIGIN:
        return {"source": "file"}
    for key, field in PLUGIN_KEYS.items():
        value = meta.get(key)
        if not isinstance(value, str):
            continue
        if field == "source" and value not in SOURCES:
            continue
        if field == "created_at":
            try:
                parse_time(value, "created_at")
            except ConfigError:
                continue
        out[field] = value
    return out


def is_plugin(meta: dict[str, Any] | None) -> bool:
    return bool(meta) and meta.get(ORIGIN_KEY) == ORIGIN  # type: ignore[union-attr]


def _all(clauses: list[dict[str, Any]]) -> dict[str, Any]:
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def plugin_where(f: DocumentFilter | None) -> dict[str, Any]:
    """A Chroma ``where`` selecting the plugin chunks whose document matches ``f``."""
    clauses: list[dict[str, Any]] = [{ORIGIN_KEY: ORIGIN}]
    if f is None:
        return clauses[0]
    if f.document_id is not None:
        clauses.append({"document_id": f.document_id})
    if f.source is not None:
        clauses.append({"plugin_source": f.source})
    if f.source_id is not None:
        clauses.append({"source_id": f.source_id})
    if f.author is not None:
        clauses.append({"author": f.author})
    if f.start_date is not None:
        clauses.append({"created_at_ts": {"$gte": timestamp(f.start_date, "start_date")}})
    if f.end_date is not None:
        end = timestamp(f.end_date, "end_date", end_of_day=True)
        clauses.append({"created_at_ts": {"$lte": end}})
    return _all(clauses)


def file_where(f: DocumentFilter) -> dict[str, Any] | None:
    """A ``where`` selecting file-ingested chunks that match ``f`` as query results show them
    (``document_id`` = their source path, ``source`` = "file", no other field), or ``None``
    when ``f`` asks for a field they do not have."""
    if f.source not in (None, "file"):
        return None
    if any(v is not None for v in (f.source_id, f.author, f.start_date, f.end_date)):
        return None
    clauses: list[dict[str, Any]] = [{ORIGIN_KEY: {"$ne": ORIGIN}}]
    if f.document_id is not None:
        clauses.append({"source": f.document_id})
    return _all(clauses)


def query_where(f: DocumentFilter) -> dict[str, Any]:
    """What a query with filter ``f`` searches: plugin chunks and file chunks matching it."""
    plugin, files = plugin_where(f), file_where(f)
    return plugin if files is None else {"$or": [plugin, files]}


def check_filter(f: DocumentFilter) -> None:
    check_source(f.source, "filter source")
    for name in ("document_id", "source_id", "author", "start_date", "end_date"):
        check_text_field(getattr(f, name), f"filter {name}")
    plugin_where(f)  # parses the dates
    if f.start_date is not None and f.end_date is not None:
        start = timestamp(f.start_date, "start_date")
        end = timestamp(f.end_date, "end_date", end_of_day=True)
        if start > end:
            raise ConfigError(
                f"start_date {f.start_date!r} is after end_date {f.end_date!r}: "
                "no document can match"
            )


class RWLock:
    """Many readers or one writer; a waiting writer goes before readers that come later."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writer and not self._waiting)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            self._cond.wait_for(lambda: not self._writer and not self._readers)
            self._waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def check_id(value: object, position: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"document {position}: the id must be a non-empty string, got {value!r}")
    if len(value) > MAX_ID_LENGTH:
        raise ConfigError(
            f"document {position}: the id is {len(value)} characters long; "
            f"use at most {MAX_ID_LENGTH}"
        )
    return value


def cut(
    doc_id: str, chunks: Sequence[Chunk], shared: dict[str, Any]
) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """``(chunk ids, texts, metadatas)`` of a document's chunks (cut by the file ingestion's
    :func:`~llamachain.ingest.chunking.chunk_document`).  A chunk id names the document, the
    chunk's position and its text, so the same text upserted again gets the same ids."""
    ids: list[str] = []
    texts: list[str] = []
    metas: list[dict[str, Any]] = []
    for c in chunks:
        m = {**shared, "chunk_index": c.index, "heading": c.heading, "n_tokens": c.n_tokens}
        m["start"] = c.start
        if c.page is not None:
            m["page"] = c.page
        digest = hashlib.blake2b(c.text.encode("utf-8"), digest_size=4).hexdigest()
        ids.append(f"{doc_id}:{c.index:05d}-{digest}")
        texts.append(c.text)
        metas.append(m)
    return ids, texts, metas


# ---- reading and restoring stored chunks ------------------------------------------------------
IN_BATCH = 500


def ids_where(doc_ids: list[str]) -> dict[str, Any]:
    return {"$and": [{ORIGIN_KEY: ORIGIN}, {"document_id": {"$in": doc_ids}}]}


def existing(store: ChromaVectorStore, doc_ids: list[str], include: list[str]) -> dict[str, Any]:
    """The stored chunks of these plugin documents (Chroma ``get`` lists, merged)."""
    out: dict[str, list[Any]] = {"ids": [], **{k: [] for k in include}}
    for start in range(0, len(doc_ids), IN_BATCH):
        got = store.get(where=ids_where(doc_ids[start : start + IN_BATCH]), include=include)
        out["ids"] += list(got["ids"])
        for k in include:
            out[k] += list(got[k]) if got.get(k) is not None else []
    return out


def restore(store: ChromaVectorStore, new_ids: set[str], old: dict[str, Any], kb: str) -> None:
    """Undo a failed write: remove the chunks it added, put the ``old`` ones back (with their
    texts, metadata and vectors)."""
    before = set(old["ids"])
    added = sorted(i for i in new_ids if i not in before)
    try:
        with store.write_batch():
            if added:
                store.delete(ids=added)
            if old["ids"]:
                store.upsert_embedded(
                    old["ids"], old["documents"], old["embeddings"], old["metadatas"]
                )
    except Exception:
        log.exception(
            "could not undo a failed upsert into %s: %d chunks may be left over", kb, len(added)
        )
    else:
        log.warning("a failed upsert into %s was undone", kb)


def vectors_of(store: ChromaVectorStore, ids: list[str]) -> dict[str, list[float]]:
    """The stored vectors of those of ``ids`` that exist."""
    out: dict[str, list[float]] = {}
    for start in range(0, len(ids), IN_BATCH):
        got = store.get(ids=ids[start : start + IN_BATCH], include=["embeddings"])
        vecs: Any = got.get("embeddings")
        if vecs is not None:
            out.update(zip(got["ids"], ([float(x) for x in v] for v in vecs), strict=True))
    return out
