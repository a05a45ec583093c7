"""Chroma plumbing: clients (a local directory or a server), errors, collection helpers.

:func:`make_client` picks a local directory (embedded Chroma) or a Chroma server from the
settings.  Telemetry is off and nothing but the given server is ever contacted.  Errors raised
by Chroma or by the HTTP transport become :class:`~llamachain.errors.StoreError` through
:func:`chroma_errors`, with a message that says where the store is and what to do.
:class:`EmbedderGuard` keeps a collection to the embedding model that built it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llamachain import _where
from llamachain._protocols import IdentifiedEmbeddings
from llamachain.errors import (
    ConfigError,
    EmbeddingMismatchError,
    KnowledgeBaseError,
    LlamaChainError,
    StoreError,
)
from llamachain.settings import Settings

if TYPE_CHECKING:
    from chromadb.api import ClientAPI

logger = logging.getLogger(__name__)

#: Seconds to wait for a TCP connection to a Chroma server before calling it unreachable.
CONNECT_TIMEOUT = 5.0


def make_client(
    settings: Settings | None = None,
    *,
    path: Path | None = None,
    host: str | None = None,
    port: int | None = None,
) -> ClientAPI:
    """A Chroma client for ``settings``.

    ``host`` (or ``settings.chroma_host``) selects a Chroma server reached over HTTP(S), with
    ``settings.chroma_ssl`` and ``settings.chroma_token`` (sent as a bearer token).  Otherwise
    the store is the local directory ``path`` (default: ``settings.kb_dir``).  An explicit
    ``path`` wins over ``settings.chroma_host``; passing both ``path`` and ``host`` is an error.

    Opening the same directory several times in one process is fine: the clients share one
    Chroma instance.
    """
    settings = settings or Settings()
    if host is not None and path is not None:
        raise ConfigError(
            "pass either path (a local Chroma directory) or host (a server), not both"
        )
    if host is None and path is None:
        host = settings.chroma_host
    if host:
        return _http_client(settings, host, port or settings.chroma_port)
    return _local_client(Path(path) if path is not None else settings.kb_dir)


def _chroma_settings() -> Any:
    from chromadb.config import Settings as ChromaSettings

    return ChromaSettings(anonymized_telemetry=False, allow_reset=False)


def server_url(host: str, port: int, ssl: bool = False) -> str:
    return f"{'https' if ssl else 'http'}://{host}:{port}"


def _unreachable(url: str, problem: object) -> StoreError:
    port = url.rsplit(":", 1)[-1]
    return StoreError(
        f"cannot reach the Chroma server at {url}: {problem}; start it with "
        f"`chroma run --path DIR --port {port}` or unset LLAMACHAIN_CHROMA_HOST to use a "
        "local directory"
    )


def _http_client(settings: Settings, host: str, port: int) -> ClientAPI:
    import chromadb

    url = server_url(host, port, settings.chroma_ssl)
    # Fail fast and clearly: Chroma's HTTP client waits without a timeout.
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as e:
        raise _unreachable(url, e) from e
    headers = (
        {"Authorization": f"Bearer {settings.chroma_token}"} if settings.chroma_token else None
    )
    try:
        client = chromadb.HttpClient(
            host=host,
            port=port,
            ssl=settings.chroma_ssl,
            headers=headers,
            settings=_chroma_settings(),
        )
        client.heartbeat()
    except Exception as e:
        raise translate(e, f"connecting to {url}", url) from e
    logger.debug("connected to the Chroma server at %s", url)
    return client


def _local_client(path: Path) -> ClientAPI:
    import chromadb

    # One Chroma instance per directory string: resolve it so that "kb" and "./kb" share it.
    directory = path.expanduser().resolve()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"cannot create the Chroma directory {directory}: {e}") from e
    settings = _chroma_settings()
    try:
        return chromadb.PersistentClient(path=str(directory), settings=settings)
    except ValueError as e:
        if "already exists" not in str(e):
            raise translate(e, "opening the store", str(directory)) from e
        # Someone in this process opened the directory with other Chroma settings; share it.
        existing = _existing_settings(str(directory))
        if existing is None:
            raise StoreError(
                f"the Chroma directory {directory} is already open in this process with other "
                "settings; open it through llamachain only, or reuse that client "
                "(ChromaVectorStore(client=...))"
            ) from e
        return chromadb.PersistentClient(path=str(directory), settings=existing)
    except Exception as e:
        raise translate(e, "opening the store", str(directory)) from e


def _existing_settings(identifier: str) -> Any:
    try:
        from chromadb.api.shared_system_client import SharedSystemClient

        system = SharedSystemClient._identifier_to_system.get(identifier)
    except Exception:  # pragma: no cover - private API moved
        return None
    return None if system is None else system.settings


def location(client: Any) -> str:
    """Where ``client`` keeps its data: a server URL or a directory."""
    try:
        s = client.get_settings()
    except Exception:  # pragma: no cover - foreign client object
        return "the Chroma store"
    if s.chroma_server_host:
        return server_url(
            s.chroma_server_host, s.chroma_server_http_port, bool(s.chroma_server_ssl_enabled)
        )
    return str(s.persist_directory)


def translate(error: BaseException, action: str, where: str) -> LlamaChainError:
    """A llamachain error for an exception raised by Chroma while doing ``action``."""
    if isinstance(error, LlamaChainError):
        return error
    try:
        import httpx

        transport: tuple[type[BaseException], ...] = (httpx.TransportError,)
    except ImportError:  # pragma: no cover - httpx comes with chromadb
        transport = ()
    if isinstance(error, transport) or "Could not connect to a Chroma server" in str(error):
        return _unreachable(where, error)
    text = str(error) or type(error).__name__
    if "dimension" in text.lower() and "expect" in text.lower():
        return EmbeddingMismatchError(
            f"the store at {where} holds vectors of another size ({text}); use the embedding "
            "model it was built with, or re-ingest into a new knowledge base"
        )
    return StoreError(f"Chroma failed while {action} ({where}): {text}")


@contextlib.contextmanager
def chroma_errors(action: str, where: str) -> Iterator[None]:
    """Turn any exception raised inside the block into a :class:`StoreError` (or subclass)."""
    try:
        yield
    except LlamaChainError:
        raise
    except Exception as e:
        raise translate(e, action, where) from e


# ---- collections ----------------------------------------------------------------------------
MODEL_KEY = "llamachain_embedding_model"
DIMENSION_KEY = "llamachain_embedding_dimension"
#: The collection's revision token (see :mod:`llamachain._revision`).
REVISION_KEY = "llamachain_revision"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,510}[A-Za-z0-9]$")


def open_collection(
    client: Any, name: str, *, create: bool, metadata: dict[str, Any] | None = None
) -> Any:
    """The collection ``name`` (cosine space, no Chroma embedding function).

    Created with ``metadata`` when missing and ``create`` is true; otherwise a missing
    collection is a :class:`KnowledgeBaseError` listing the existing ones.
    """
    if not _NAME.match(name):
        raise ConfigError(
            f"invalid collection name {name!r}: use 3-512 letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )
    where = location(client)
    if not create:
        with chroma_errors("listing collections", where):
            names = sorted(c.name for c in client.list_collections())
        if name not in names:
            raise KnowledgeBaseError(
                f"no collection named {name!r} in {where} (there are: "
                f"{', '.join(names) or 'none'}); create it first or pass create=True"
            )
        with chroma_errors("opening a collection", where):
            return client.get_collection(name, embedding_function=None)
    with chroma_errors("opening a collection", where):
        # Never Chroma's default embedding function: it would download a model.
        return client.get_or_create_collection(
            name,
            configuration={"hnsw": {"space": "cosine"}},
            metadata=metadata or None,
            embedding_function=None,
        )


def read_metadata(client: Any, collection: Any, where: str) -> dict[str, Any]:
    """The collection's metadata as stored now (``collection.metadata`` is a copy taken when
    the collection object was fetched: another process may have changed it since)."""
    with chroma_errors("reading the collection metadata", where):
        fresh = client.get_collection(collection.name, embedding_function=None)
    return dict(fresh.metadata or {})


def set_metadata(client: Any, collection: Any, values: Mapping[str, Any], where: str) -> None:
    """Set ``values`` in the collection's metadata, keeping its other keys.

    Chroma's ``modify(metadata=...)`` replaces the whole dict, so the stored one is read first
    and merged.  ``hnsw:space`` (a legacy way to choose the distance) is left out: ``modify``
    refuses it, and the distance stays in the collection's configuration anyway.
    """
    meta = read_metadata(client, collection, where)
    meta.update(values)
    meta.pop("hnsw:space", None)
    with chroma_errors("updating the collection metadata", where):
        collection.modify(metadata=meta)


def drop_collection(client: Any, name: str) -> None:
    """Delete a collection, emptying it first.

    chromadb 1.5.9 leaves the list-valued metadata of a deleted collection's records behind,
    and a collection created later inherits them on its own records (seen locally and on a
    server).  Deleting the records first removes those rows properly.
    """
    try:
        col = client.get_collection(name, embedding_function=None)
    except Exception:
        return
    while True:
        ids = col.get(include=[], limit=5000)["ids"]
        if not ids:
            break
        col.delete(ids=ids)
    client.delete_collection(name)


def collection_space(collection: Any) -> str:
    """The distance a collection's index uses: ``cosine``, ``l2`` or ``ip``."""
    # The raw JSON: the parsed ``configuration`` warns about the absent embedding function.
    config = getattr(collection, "configuration_json", None) or {}
    for index in ("hnsw", "spann"):
        space = (config.get(index) or {}).get("space")
        if space:
            return str(space)
    return str((collection.metadata or {}).get("hnsw:space", "l2"))


def similarity_from_distance(space: str) -> Callable[[float], float]:
    """Cosine similarity from Chroma's distance, for unit-length vectors."""
    if space == "l2":  # squared euclidean distance of unit vectors = 2 - 2 cos
        return lambda d: 1.0 - d / 2.0
    return lambda d: 1.0 - d  # cosine distance, or inner-product distance of unit vectors


def nearest(
    collection: Any,
    query: Any,
    k: int,
    filter: dict[str, Any] | None,
    where_document: dict[str, Any] | None,
    include: list[str],
    where: str,
) -> dict[str, Any]:
    """Chroma's nearest-neighbour query of ``query`` (a 1-row float32 array).

    With a ``filter`` (and no ``where_document``) the nearest ``max(4k, 100)`` records are
    fetched unfiltered and filtered here first: Chroma's own filtered search scans the
    matching ids and takes ~0.1-1 s at 100k records.  Only when fewer than ``k`` of them pass
    does Chroma filter.  The ``k`` best matching records are the same either way.
    """
    clause = _where.normalize(filter)
    doc_clause = _where.normalize_document(where_document)

    def run(n: int, w: Any, wd: Any, inc: list[str]) -> dict[str, Any]:
        with chroma_errors("searching", where):
            got = collection.query(
                query_embeddings=query,
                n_results=n,
                where=w,
                where_document=wd,
                include=list(dict.fromkeys(inc)),
            )
        return dict(got)

    if clause is not None and doc_clause is None:
        pool = max(4 * k, 100)
        wide = run(pool, None, None, [*include, "metadatas", "documents"])
        metas, docs = wide["metadatas"][0], wide["documents"][0]
        keep = [i for i in range(len(metas)) if _where.matches(metas[i], clause, docs[i] or "")]
        keep = keep[:k]
        if len(keep) == k or len(metas) < pool:
            return {key: [[wide[key][0][i] for i in keep]] for key in ("ids", *include)}
    return run(k, clause, doc_clause, include)


def clean_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A copy of ``metadata`` that Chroma accepts (``None`` when empty); ConfigError if not."""
    if not metadata:
        return None
    for key, value in metadata.items():
        ok = value is None or isinstance(value, (str, int, float, bool))
        if isinstance(value, list):
            ok = bool(value) and all(isinstance(v, (str, int, float, bool)) for v in value)
        if not ok:
            raise ConfigError(
                f"metadata value for {key!r} is a {type(value).__name__}; Chroma stores "
                "strings, numbers, bools and non-empty lists of those: convert it first"
            )
    return dict(metadata)


def as_vectors(embeddings: Any) -> Any:
    """``embeddings`` as a 2-d float32 array (one row per record); ConfigError if not."""
    import numpy as np

    try:
        vectors = np.asarray(embeddings, dtype=np.float32)
    except ValueError as e:
        raise ConfigError(f"vectors must all have the same length: {e}") from e
    if vectors.ndim != 2:
        raise ConfigError(f"expected one vector per id, got an array of shape {vectors.shape}")
    return vectors


def upsert_records(
    collection: Any,
    ids: Sequence[str],
    texts: Sequence[str],
    vectors: Any,
    metas: Sequence[Mapping[str, Any] | None],
    step: int,
    where: str,
) -> None:
    """Upsert in batches of at most ``step`` records; a repeated id keeps its last record."""
    last = {i: pos for pos, i in enumerate(ids)}
    positions = sorted(last.values()) if len(last) != len(ids) else list(range(len(ids)))
    for start in range(0, len(positions), step):
        part = positions[start : start + step]
        part_ids = [str(ids[p]) for p in part]
        with chroma_errors("writing records", where):
            collection.upsert(
                ids=part_ids,
                embeddings=vectors[part],
                documents=[texts[p] for p in part],
                metadatas=replacing_metadatas(collection, part_ids, [metas[p] for p in part]),
            )


def replacing_metadatas(
    collection: Any, ids: list[str], metas: Sequence[Mapping[str, Any] | None]
) -> list[Any]:
    """``metas`` with the keys that only the stored records have set to ``None``.

    Chroma merges the metadata of an upsert or update into the stored one (a ``None`` value
    deletes a key); with this, a write replaces it, as LangChain expects.
    """
    old = collection.get(ids=ids, include=["metadatas"])
    stored = {i: m for i, m in zip(old["ids"], old["metadatas"] or [], strict=True) if m}
    if not stored:
        return list(metas)
    out: list[Any] = []
    for i, meta in zip(ids, metas, strict=True):
        gone = [k for k in stored.get(i, {}) if k not in (meta or {})]
        out.append({**(meta or {}), **dict.fromkeys(gone)} if gone else meta)
    return out


def embedder_record(embedding: Any) -> dict[str, Any]:
    """What a new collection records about the embedder that fills it."""
    if embedding is None:
        return {}
    if isinstance(embedding, IdentifiedEmbeddings):
        return {MODEL_KEY: embedding.model_id, DIMENSION_KEY: int(embedding.dimension)}
    return {MODEL_KEY: type(embedding).__name__}


class EmbedderGuard:
    """Keeps a collection to one embedding model.

    An embedder that says what it is (:class:`~llamachain._protocols.IdentifiedEmbeddings`) is
    compared with the recorded model and vector size when the collection is opened.  Any other
    embedder -- or precomputed vectors -- is checked by vector size on the first write or
    query.  Whatever is not yet recorded is recorded.
    """

    def __init__(self, client: Any, collection: Any, name: str, embedding: Any, where: str) -> None:
        self.client = client
        self.collection = collection
        self.name = name
        self.embedding = embedding
        self.where = where
        self.checked = False

    def recorded(self) -> tuple[str | None, int | None]:
        meta = self.collection.metadata or {}
        model, dim = meta.get(MODEL_KEY), meta.get(DIMENSION_KEY)
        return (str(model) if model else None, int(dim) if dim else None)

    def mismatch(
        self, model: str | None, dim: int | None, got_model: str, got_dim: int
    ) -> EmbeddingMismatchError:
        built = f"{model or 'an unrecorded model'} ({dim if dim else '?'}-d)"
        return EmbeddingMismatchError(
            f"knowledge base {self.name} was built with {built}; you are using {got_model} "
            f"({got_dim}-d): use the same embedding model, or re-ingest into a new knowledge base"
        )

    def check_at_open(self) -> None:
        emb = self.embedding
        if emb is None:
            return
        model, dim = self.recorded()
        if not isinstance(emb, IdentifiedEmbeddings):
            if model and model != type(emb).__name__:
                logger.debug(
                    "collection %s was written by %s; %s cannot say what it is, so only the "
                    "vector size is checked",
                    self.name,
                    model,
                    type(emb).__name__,
                )
            return
        got_model, got_dim = emb.model_id, int(emb.dimension)
        if (model and model != got_model) or (dim and dim != got_dim):
            raise self.mismatch(model, dim, got_model, got_dim)
        if dim is None:
            stored = self.stored_dimension()
            if stored is not None and stored != got_dim:
                raise self.mismatch(model, stored, got_model, got_dim)
        if model is None or dim is None:
            self.record({MODEL_KEY: got_model, DIMENSION_KEY: got_dim})
        self.checked = True

    def check_vector(self, size: int) -> None:
        """Compare a vector's size with the collection's (once: it is cheap only once)."""
        if self.checked:
            return
        model, dim = self.recorded()
        if dim is None:
            dim = self.stored_dimension()
        emb = self.embedding
        name = (getattr(emb, "model_id", None) or type(emb).__name__) if emb else "precomputed"
        if dim is not None and dim != size:
            raise self.mismatch(model, dim, str(name), size)
        if dim is None:
            self.record(
                {MODEL_KEY: str(name), DIMENSION_KEY: size} if emb else {DIMENSION_KEY: size}
            )
        self.checked = True

    def stored_dimension(self) -> int | None:
        with chroma_errors("reading a vector", self.where):
            got = self.collection.get(limit=1, include=["embeddings"])
        vectors = got.get("embeddings")
        if vectors is None or len(vectors) == 0:
            return None
        return len(vectors[0])

    def record(self, values: dict[str, Any]) -> None:
        meta = read_metadata(self.client, self.collection, self.where)
        wanted = {k: v for k, v in values.items() if meta.get(k) is None}
        if wanted:
            set_metadata(self.client, self.collection, wanted, self.where)
