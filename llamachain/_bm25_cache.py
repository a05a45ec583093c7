"""The hybrid retriever's BM25 index on disk, keyed by the collection's revision token.

The index of a collection lives in ``<cache dir>/<revision token>/`` (see :func:`cache_dir`):
bm25s's files, ``ids.json`` (the record id of each row) and ``index.json`` (what it was built
from, written last).  It is written to a temporary directory and renamed into place; other
revisions are then deleted.  A process whose collection still carries that token (and as many
records) loads it, memory-mapped, instead of rebuilding (:func:`open_index`); anything
unreadable or inconsistent is deleted and rebuilt.  Without a token (see
:mod:`llamachain._revision`) nothing is read from or written to disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llamachain._bm25 import FORMAT, K1, Analyzer, B, BM25Index, build

if TYPE_CHECKING:
    from llamachain.vectorstores import ChromaVectorStore

logger = logging.getLogger(__name__)

CACHE_NAME = "llamachain-bm25"
_INFO = "index.json"
_IDS = "ids.json"
_TMP = ".tmp-"
_TMP_MAX_AGE = 3600.0  # seconds before someone else's unfinished temporary directory is junk
_SAFE_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def cache_dir(store: ChromaVectorStore) -> Path | None:
    """Where the BM25 index of ``store``'s collection is kept, or ``None`` (in memory only).

    ``<Chroma directory>/llamachain-bm25/<collection>`` for a local store;
    ``<home>/cache/bm25/<server key>/<collection>`` for a Chroma server, the key naming the
    server URL, tenant and database.
    """
    try:
        s = store.client.get_settings()
    except Exception:  # pragma: no cover - foreign client object
        return None
    name = store.collection_name
    if s.chroma_server_host:
        from llamachain.settings import Settings

        col = store.collection
        where = f"{store.location}|{getattr(col, 'tenant', '')}|{getattr(col, 'database', '')}"
        key = hashlib.sha256(where.encode()).hexdigest()[:16]
        return (store.settings or Settings()).home / "cache" / "bm25" / key / name
    if s.is_persistent and s.persist_directory:
        return Path(s.persist_directory) / CACHE_NAME / name
    return None


def forget_cache(store: ChromaVectorStore) -> None:
    """Delete the BM25 index of ``store``'s collection from disk (if any)."""
    root = cache_dir(store)
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)


def _expected(store: ChromaVectorStore, token: str, analyzer: Analyzer) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "collection_id": str(store.collection.id),
        "revision": token,
        "analyzer": analyzer.config,
        "bm25": {"method": "lucene", "k1": K1, "b": B},
    }


def _load(directory: Path, expected: dict[str, Any], analyzer: Analyzer) -> BM25Index:
    """The index saved in ``directory``; ``ValueError`` if it is not the one expected."""
    started = time.perf_counter()
    info = json.loads((directory / _INFO).read_text(encoding="utf-8"))
    for key, value in expected.items():
        if info.get(key) != value:
            raise ValueError(f"{key} is {info.get(key)!r}, expected {value!r}")
    ids = json.loads((directory / _IDS).read_text(encoding="utf-8"))
    if not isinstance(ids, list) or len(ids) != info["documents"]:
        raise ValueError("ids.json does not list the documents")
    model = None
    if info["terms"]:
        import bm25s

        model = bm25s.BM25.load(str(directory), mmap=True, show_progress=False)
        s = model.scores
        if (
            len(model.vocab_dict) != info["terms"]
            or s["num_docs"] != len(ids)
            or len(s["indptr"]) != info["terms"] + 1
            or int(s["indptr"][-1]) != len(s["indices"])
            or len(s["indices"]) != len(s["data"])
        ):
            raise ValueError("the score arrays do not match the vocabulary")
    return BM25Index(
        ids,
        model,
        analyzer,
        token=expected["revision"],
        origin="loaded",
        seconds=time.perf_counter() - started,
        path=directory,
    )


def _save(index: BM25Index, root: Path, expected: dict[str, Any]) -> Path | None:
    """Write ``index`` to ``root/<token>`` (atomically) and delete other revisions."""
    final = root / str(expected["revision"])
    tmp: Path | None = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f"{_TMP}{uuid.uuid4().hex}"
        tmp.mkdir()  # with the umask's permissions, like Chroma's own files
        if index.model is not None:
            index.model.save(str(tmp), show_progress=False)
        (tmp / _IDS).write_text(json.dumps(index.ids), encoding="utf-8")
        info = {**expected, "documents": index.count, "terms": len(index.vocab)}
        (tmp / _INFO).write_text(json.dumps(info), encoding="utf-8")
        try:
            os.rename(tmp, final)
        except OSError:
            if (final / _INFO).is_file():  # another process saved the same revision first
                return final
            shutil.rmtree(final, ignore_errors=True)  # debris: replace it
            os.rename(tmp, final)
        tmp = None
    except OSError as e:
        logger.warning("could not keep the BM25 index in %s (%s); it stays in memory", root, e)
        return None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    _prune(root, keep=final.name)
    return final


def _prune(root: Path, keep: str) -> None:
    """Delete other revisions, and temporary directories abandoned by dead writers."""
    try:
        entries = list(os.scandir(root))
    except OSError:
        return
    now = time.time()
    for entry in entries:
        if entry.name == keep:
            continue
        try:
            if entry.name.startswith(_TMP) and now - entry.stat().st_mtime < _TMP_MAX_AGE:
                continue  # perhaps another process is writing it right now
        except OSError:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)


def open_index(
    store: ChromaVectorStore, *, persist: bool = True, analyzer: Analyzer | None = None
) -> BM25Index:
    """The BM25 index of ``store``'s collection: loaded from disk when a copy made at the
    collection's current revision token is there, else built (and kept, if ``persist``)."""
    analyzer = analyzer or Analyzer()
    token = store.revision_token()
    root = cache_dir(store) if persist and token and _SAFE_TOKEN.match(token) else None
    if root is not None and token is not None:
        expected = _expected(store, token, analyzer)
        directory = root / token
        if (directory / _INFO).is_file():
            try:
                index = _load(directory, expected, analyzer)
                if store.count() != index.count:
                    raise ValueError(f"the collection has {store.count()} records")
                return index
            except Exception as e:
                logger.warning("ignoring the BM25 index in %s (%s); rebuilding it", directory, e)
                shutil.rmtree(directory, ignore_errors=True)
    index = build(store, analyzer, token)
    if root is not None and token is not None and store.revision_token() == token:
        started = time.perf_counter()
        index.path = _save(index, root, _expected(store, token, analyzer))
        index.phases["save"] = time.perf_counter() - started
    return index
