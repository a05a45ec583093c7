"""Client/server mode: the same store and retriever against a real ``chroma run`` process."""

from __future__ import annotations

import uuid

import pytest

from llamachain._chroma import make_client
from llamachain.errors import EmbeddingMismatchError, StoreError
from llamachain.retrievers import HybridRetriever
from llamachain.settings import Settings
from llamachain.testing import FakeEmbeddings
from llamachain.vectorstores import ChromaVectorStore

# The fixture module (tests/integration/chroma_server.py); its helpers are imported inside the
# tests, after pytest has loaded it as a plugin.
pytest_plugins = ["chroma_server"]

DOCS = [
    ("Invoice 2291 was paid by bank transfer.", {"source": "billing.md", "year": 2023}),
    ("The backup job failed with error BKP-17.", {"source": "ops.md", "year": 2024}),
    ("Quarterly revenue grew by nine percent.", {"source": "billing.md", "year": 2024}),
    ("Rotate the TLS certificates every ninety days.", {"source": "ops.md", "year": 2022}),
]


def _settings(server, **kw) -> Settings:
    return Settings(chroma_host=server.host, chroma_port=server.port, **kw)


def _fill(store: ChromaVectorStore) -> None:
    store.add_texts([t for t, _ in DOCS], [m for _, m in DOCS], ids=[f"s{i}" for i in range(4)])


@pytest.fixture
def name() -> str:
    return f"srv-{uuid.uuid4().hex[:10]}"


def test_settings_select_the_server(chroma_server, name, monkeypatch):
    monkeypatch.setenv("LLAMACHAIN_CHROMA_HOST", chroma_server.host)
    monkeypatch.setenv("LLAMACHAIN_CHROMA_PORT", str(chroma_server.port))
    store = ChromaVectorStore(name, FakeEmbeddings(), settings=Settings())
    assert store.location == chroma_server.url
    _fill(store)
    # Nothing was written locally.
    assert not (Settings().kb_dir / "chroma.sqlite3").exists()
    # A second, independent client sees the data through the server.
    other = ChromaVectorStore(name, FakeEmbeddings(), client=make_client(_settings(chroma_server)))
    assert other.count() == 4


def test_query_filter_delete(chroma_server, name):
    store = ChromaVectorStore(name, FakeEmbeddings(), settings=_settings(chroma_server))
    _fill(store)
    pairs = store.similarity_search_with_score(DOCS[1][0], k=4)
    assert pairs[0][0].id == "s1"
    assert pairs[0][1] == pytest.approx(1.0, abs=1e-5)
    assert [s for _, s in pairs] == sorted((s for _, s in pairs), reverse=True)
    got = store.similarity_search("revenue", k=4, filter={"source": "billing.md", "year": 2024})
    assert [d.id for d in got] == ["s2"]
    assert [d.id for d in store.get_by_ids(["s3", "s0"])] == ["s3", "s0"]
    store.delete(["s0"])
    store.delete(where={"year": {"$lt": 2023}})
    assert sorted(store.get()["ids"]) == ["s1", "s2"]


def test_hybrid_retriever_over_the_server(chroma_server, name):
    store = ChromaVectorStore(name, FakeEmbeddings(), settings=_settings(chroma_server))
    _fill(store)
    r = HybridRetriever(vectorstore=store, k=2, recheck_seconds=0)
    top = r.invoke("what is BKP-17?")[0]
    assert top.id == "s1"
    assert top.metadata["bm25_score"] > 0
    assert [d.id for d in r.invoke("invoice", filter={"year": 2023})] == ["s0"]
    # Another client adds a document: the retriever's BM25 index notices.
    other = ChromaVectorStore(name, FakeEmbeddings(), client=make_client(_settings(chroma_server)))
    other.add_texts(["Printer jam code PJ-88 on floor two."], ids=["s9"])
    assert r.invoke("PJ-88", mode="bm25")[0].id == "s9"


def test_revision_token_on_the_server_keeps_the_other_metadata(chroma_server, name):
    store = ChromaVectorStore(
        name,
        FakeEmbeddings(),
        settings=_settings(chroma_server),
        collection_metadata={"owner": "ops"},
    )
    assert store.revision_token() is None
    _fill(store)
    token = store.revision_token()
    assert token is not None
    other = ChromaVectorStore(name, FakeEmbeddings(), client=make_client(_settings(chroma_server)))
    assert other.revision_token() == token
    assert other.touch() != token
    meta = make_client(_settings(chroma_server)).get_collection(name).metadata
    assert meta["owner"] == "ops"
    assert meta["llamachain_embedding_model"] == "fake-embeddings-64"
    assert meta["llamachain_revision"] == other.revision_token() == store.revision_token()


def test_bm25_index_of_a_server_collection_is_kept_under_home(chroma_server, name):
    def retriever() -> HybridRetriever:
        # A new client each time: what a new process would have.
        store = ChromaVectorStore(
            name, FakeEmbeddings(), client=make_client(_settings(chroma_server))
        )
        return HybridRetriever(vectorstore=store, k=2, mode="bm25", recheck_seconds=0)

    _fill(ChromaVectorStore(name, FakeEmbeddings(), settings=_settings(chroma_server)))
    first = retriever()
    assert first.bm25_info()["origin"] == "built"
    path = first.bm25_info()["path"]
    assert path is not None and path.startswith(str(Settings().home / "cache" / "bm25"))
    second = retriever()
    assert second.bm25_info()["origin"] == "loaded"
    assert [d.id for d in second.invoke("invoice", filter={"year": 2023})] == ["s0"]
    # Another client writes: the open retriever and a new one both see it.
    other = ChromaVectorStore(name, FakeEmbeddings(), client=make_client(_settings(chroma_server)))
    other.add_texts(["Printer jam code PJ-88 on floor two."], ids=["s9"])
    assert [d.id for d in second.invoke("PJ-88")] == ["s9"]
    third = retriever()
    assert third.bm25_info()["origin"] == "loaded"  # saved by `second` after its rebuild
    assert [d.id for d in third.invoke("PJ-88")] == ["s9"]


def test_embedder_mismatch_on_the_server(chroma_server, name):
    _fill(ChromaVectorStore(name, FakeEmbeddings(), settings=_settings(chroma_server)))
    with pytest.raises(EmbeddingMismatchError, match=name):
        ChromaVectorStore(name, FakeEmbeddings(dimension=16), settings=_settings(chroma_server))


def test_token_is_sent_as_a_header(chroma_server, name):
    # This server does not check tokens; the client must still connect and work.
    store = ChromaVectorStore(
        name, FakeEmbeddings(), settings=_settings(chroma_server, chroma_token="s3cret")
    )
    _fill(store)
    assert store.count() == 4


def test_data_survives_a_server_restart(tmp_path):
    from chroma_server import start_chroma_server

    data = tmp_path / "data"
    server = start_chroma_server(data)
    try:
        store = ChromaVectorStore(
            "durable", FakeEmbeddings(), client=make_client(_settings(server))
        )
        _fill(store)
    finally:
        server.stop()
    server = start_chroma_server(data)
    try:
        store = ChromaVectorStore(
            "durable", FakeEmbeddings(), settings=_settings(server), create=False
        )
        assert store.count() == 4
        assert store.similarity_search("certificates", k=1)[0].id == "s3"
    finally:
        server.stop()


def test_unreachable_server_is_a_clear_store_error():
    from chroma_server import free_port

    port = free_port()
    settings = Settings(chroma_host="127.0.0.1", chroma_port=port)
    with pytest.raises(StoreError) as info:
        make_client(settings)
    message = str(info.value)
    assert f"cannot reach the Chroma server at http://127.0.0.1:{port}" in message
    assert f"chroma run --path DIR --port {port}" in message
    assert "LLAMACHAIN_CHROMA_HOST" in message
    with pytest.raises(StoreError, match="cannot reach"):
        ChromaVectorStore("anything", FakeEmbeddings(), settings=settings)


def test_server_going_away_is_a_store_error(tmp_path):
    from chroma_server import start_chroma_server

    server = start_chroma_server(tmp_path / "data")
    try:
        store = ChromaVectorStore("fragile", FakeEmbeddings(), settings=_settings(server))
        _fill(store)
        r = HybridRetriever(vectorstore=store)
        assert r.invoke("invoice")
    finally:
        server.stop()
    for call in (
        store.count,
        lambda: store.similarity_search("invoice"),
        lambda: store.add_texts(["late write"]),
        lambda: r.invoke("invoice"),
    ):
        with pytest.raises(StoreError, match=f"cannot reach the Chroma server at {server.url}"):
            call()
