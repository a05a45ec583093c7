"""DocumentStore with the real bundled embedder (all-MiniLM-L6-v2) over a real local Chroma."""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import pytest
from kb_helpers import make_corpus
from pydantic import PrivateAttr

from llamachain.documents import DocumentFilter, DocumentInput, DocumentMetadata, DocumentStore
from llamachain.embeddings import LocalEmbeddings
from llamachain.errors import EmbeddingError, StoreError
from llamachain.knowledge import KIND, KIND_KEY, KnowledgeBase
from llamachain.qa._plan import to_chunks
from llamachain.settings import Settings
from llamachain.vectorstores import ChromaVectorStore

DOCS = [
    (
        "vpn",
        "To reach the office network from home, start the VPN client and sign in with your "
        "badge number. The gateway only accepts connections on port 443.",
        DocumentMetadata(source="email", author="it-desk", created_at="2024-03-04T08:15:00Z"),
    ),
    (
        "lunch",
        "The canteen serves lunch from noon until two. On Fridays there is a vegetarian curry.",
        DocumentMetadata(source="chat", author="facilities", created_at="2024-06-10"),
    ),
    (
        "bike",
        "Bicycles may be parked in the basement garage. Bring your own lock; the racks are "
        "emptied every December.",
        DocumentMetadata(source="file", source_id="handbook-7", url="https://wiki.example/bikes"),
    ),
]


class _Embeddings(LocalEmbeddings):
    """The real embedder, made to fail while ``_fail`` is set (a fake failure, real vectors)."""

    _fail: bool = PrivateAttr(default=False)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if self._fail:
            raise RuntimeError("out of memory while embedding")
        return super().embed_documents(texts)


class _FlakyStore(ChromaVectorStore):
    """A real store whose next write fails after writing half of its records."""

    fail_next = False

    def upsert_embedded(self, ids, texts, embeddings, metadatas=None):  # type: ignore[no-untyped-def]
        if self.fail_next:
            self.fail_next = False
            half = max(1, len(ids) // 2)
            super().upsert_embedded(ids[:half], texts[:half], embeddings[:half], metadatas[:half])
            raise StoreError("the Chroma directory became read-only")
        super().upsert_embedded(ids, texts, embeddings, metadatas)


class _FlakyKB(KnowledgeBase):
    @property
    def vectorstore(self) -> ChromaVectorStore:
        if self._store is None:
            self._store = _FlakyStore(
                self.name,
                self.embeddings,
                client=self.client,
                settings=self.settings,
                collection_metadata={KIND_KEY: KIND},
            )
        return self._store


@pytest.fixture(scope="module")
def embeddings() -> _Embeddings:
    return _Embeddings(settings=Settings())


def _kb(home: Path, embeddings: LocalEmbeddings, cls: type[KnowledgeBase] = KnowledgeBase) -> Any:
    return cls("plugin", settings=Settings(home=home), embeddings=embeddings)


def _rows(kb: KnowledgeBase, plugin: bool) -> dict[str, Any]:
    got = kb.vectorstore.collection.get(include=["documents", "metadatas", "embeddings"])
    return {
        i: (d, m, [round(float(x), 5) for x in e])
        for i, d, m, e in zip(
            got["ids"], got["documents"], got["metadatas"], got["embeddings"], strict=True
        )
        if (m.get("origin") == "document") == plugin
    }


@pytest.fixture
def store(tmp_path: Path, embeddings: LocalEmbeddings) -> DocumentStore:
    s = DocumentStore(_kb(tmp_path / "home", embeddings))
    s.upsert([DocumentInput(text, id=i, metadata=m) for i, text, m in DOCS])
    return s


def test_a_query_in_other_words_finds_the_document_with_its_metadata(store):
    (hit,) = store.query("How do I connect remotely to the company network?", top_k=1)
    assert hit.document_id == "vpn"
    assert hit.metadata == DOCS[0][2]
    assert hit.score > 0 and hit.text.startswith("To reach the office network")
    top = store.query("where can I leave my bicycle", top_k=3, include_embeddings=True)
    assert top[0].document_id == "bike"
    assert top[0].to_dict()["metadata"] == {
        "source": "file",
        "source_id": "handbook-7",
        "url": "https://wiki.example/bikes",
        "document_id": "bike",
    }
    vector = top[0].embedding
    assert vector is not None and len(vector) == 384
    assert sum(x * x for x in vector) == pytest.approx(1.0, abs=1e-3)
    # The knowledge base's own retriever (what `llamachain ask` and GroundedQA use) sees them.
    (chunk,) = to_chunks(store.kb.retriever(k=1).invoke("bicycle parking"))
    assert chunk.source == chunk.file_name == "https://wiki.example/bikes"


def test_a_long_document_is_cut_exactly_like_the_same_text_ingested_as_a_file(tmp_path, embeddings):
    text = "\n\n".join(
        " ".join(f"Paragraph {p} sentence {s} explains the backup rotation." for s in range(12))
        for p in range(10)
    )
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "backup.txt").write_text(text)
    kb = _kb(tmp_path / "home", embeddings)
    kb.ingest([folder])
    DocumentStore(kb).upsert([DocumentInput(text, id="backup")])
    plugin = sorted(_rows(kb, True).values(), key=lambda r: r[1]["chunk_index"])
    files = sorted(_rows(kb, False).values(), key=lambda r: r[1]["chunk_index"])
    assert len(plugin) > 3
    assert [r[0] for r in plugin] == [r[0] for r in files]
    assert [r[1]["n_tokens"] for r in plugin] == [r[1]["n_tokens"] for r in files]
    assert max(r[1]["n_tokens"] for r in plugin) <= embeddings.max_chunk_tokens
    for a, b in zip(plugin, files, strict=True):
        assert a[2] == pytest.approx(b[2], abs=1e-4), "same embedder, same vectors"


def test_replace_delete_and_date_ranges(store):
    store.upsert([DocumentInput("The canteen is closed for renovation in August.", id="lunch")])
    hits = store.query("what is served for lunch on fridays", top_k=5)
    lunch = [h for h in hits if h.document_id == "lunch"]
    assert [h.text for h in lunch] == ["The canteen is closed for renovation in August."]
    assert lunch[0].metadata == DocumentMetadata(), "the new version's metadata"
    assert store.count() == 3

    def dated(**f: str) -> set[str]:
        hits = store.query("office", top_k=10, filter=DocumentFilter(**f))
        return {h.document_id for h in hits}

    store.upsert([DocumentInput(DOCS[1][1], id="lunch", metadata=DOCS[1][2])])
    assert dated(start_date="2024-01-01") == {"vpn", "lunch"}
    assert dated(start_date="2024-03-04T08:15:01Z") == {"lunch"}
    assert dated(end_date="2024-03-04") == {"vpn"}
    assert dated(start_date="2024-06-10", end_date="2024-06-10") == {"lunch"}
    assert dated(author="it-desk", end_date="2024-12-31") == {"vpn"}

    assert store.delete(ids=["vpn", "unknown"]) == 1
    assert store.delete(filter=DocumentFilter(source="chat")) == 1
    assert store.document_ids() == ["bike"]
    assert store.delete(delete_all=True) == 1
    assert store.count() == 0 and store.kb.vectorstore.count() == 0


def test_a_failed_upsert_leaves_the_store_unchanged(tmp_path, embeddings):
    kb = _kb(tmp_path / "home", embeddings, cls=_FlakyKB)
    store = DocumentStore(kb)
    store.upsert([DocumentInput(text, id=i, metadata=m) for i, text, m in DOCS])
    before = _rows(kb, True)
    replacement = " ".join(f"Line {i} of the new VPN instructions." for i in range(80))
    batch = [DocumentInput("New bike rules.", id="bike"), DocumentInput(replacement, id="vpn")]
    embeddings._fail = True
    try:
        with pytest.raises(EmbeddingError, match="out of memory"):
            store.upsert(batch)
    finally:
        embeddings._fail = False
    assert _rows(kb, True) == before
    kb.vectorstore.fail_next = True
    with pytest.raises(StoreError, match="read-only"):
        store.upsert(batch)
    assert _rows(kb, True) == before
    assert store.query("connect to the office network", top_k=1)[0].text == DOCS[0][1]
    assert store.upsert(batch) == ["bike", "vpn"] and store.count() == 3


def test_file_ingestion_and_plugin_documents_leave_each_other_intact(store, tmp_path):
    kb = store.kb
    corpus = make_corpus(tmp_path / "corpus", n_files=6)
    plugin = _rows(kb, True)
    s = kb.ingest([corpus])
    assert s.added == 6 and not s.failed
    assert _rows(kb, True) == plugin
    for p in sorted(corpus.rglob("*.txt"))[:1]:
        p.unlink()
    s = kb.ingest([corpus])
    assert s.removed == 1 and s.chunks_removed > 0
    assert _rows(kb, True) == plugin
    files = _rows(kb, False)
    store.upsert([DocumentInput("Visitors sign in at the front desk.", id="visitors")])
    store.delete(ids=["bike"])
    store.delete(filter=DocumentFilter(source="file"))
    assert _rows(kb, False) == files
    s = kb.ingest([corpus])
    assert s.skipped == 5 and s.chunks_added == s.chunks_removed == 0
    assert store.document_ids() == ["lunch", "visitors", "vpn"]
    # Without a filter a query sees both kinds of content.
    kinds = {h.metadata.source for h in store.query("chunk overlap retrieval", top_k=10)}
    assert "file" in kinds
    stats = kb.stats()
    assert stats["files"] == 5 and stats["pending"] == 0


def test_sixteen_concurrent_clients_keep_an_exact_count(tmp_path, embeddings):
    store = DocumentStore(_kb(tmp_path / "home", embeddings))
    alive: list[set[str]] = [set() for _ in range(16)]
    errors: list[BaseException] = []
    start = threading.Barrier(16)

    def client(n: int) -> None:
        rng = random.Random(100 + n)
        try:
            start.wait()
            for step in range(6):
                op = rng.random()
                doc_id = f"c{n}-{rng.randrange(3)}"
                if op < 0.5:
                    text = f"Client {n} wrote note {step} about the {rng.choice(DOCS)[0]} policy."
                    store.upsert([DocumentInput(text, id=doc_id)])
                    alive[n].add(doc_id)
                elif op < 0.7:
                    store.delete(ids=[doc_id])
                    alive[n].discard(doc_id)
                else:
                    hits = store.query("policy note", top_k=3)
                    assert all(h.text and h.score > 0 for h in hits)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    expected = set().union(*alive)
    assert expected
    assert store.count() == len(expected)
    assert store.document_ids() == sorted(expected)
    assert store.kb.vectorstore.count() == len(expected), "one chunk each, nothing left over"
