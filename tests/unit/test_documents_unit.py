"""DocumentStore (retrieval-plugin documents) over a real embedded Chroma with FakeEmbeddings."""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import pytest

from llamachain._doc_filter import timestamp
from llamachain.documents import (
    ChunkHit,
    DocumentFilter,
    DocumentInput,
    DocumentMetadata,
    DocumentStore,
)
from llamachain.errors import ConfigError, DocumentLoadError, EmbeddingError, StoreError
from llamachain.ingest.chunking import effective_sizes, split_text
from llamachain.knowledge import KIND, KIND_KEY, KnowledgeBase
from llamachain.qa._plan import to_chunks
from llamachain.settings import Settings
from llamachain.testing import FakeEmbeddings
from llamachain.vectorstores import ChromaVectorStore

LONG = " ".join(
    f"Sentence {i} is about the {('vpn', 'printer', 'badge', 'parking')[i % 4]} policy."
    for i in range(60)
)


class FailingEmbeddings(FakeEmbeddings):
    """FakeEmbeddings that raise while ``fail`` is set."""

    fail = False

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if self.fail:
            raise RuntimeError("the embedder fell over")
        return super().embed_documents(texts)


class FlakyStore(ChromaVectorStore):
    """A real store whose ``fail_upsert_at``-th upsert writes half its records and then fails,
    and whose next ``fail_deletes`` deletes fail."""

    fail_upsert_at: int | None = None
    fail_deletes = 0
    upserts = 0

    def upsert_embedded(self, ids, texts, embeddings, metadatas=None):  # type: ignore[no-untyped-def]
        self.upserts += 1
        if self.upserts == self.fail_upsert_at:
            half = max(1, len(ids) // 2)
            metas = metadatas[:half] if metadatas is not None else None
            super().upsert_embedded(ids[:half], texts[:half], embeddings[:half], metas)
            raise StoreError("the disk filled up while writing")
        super().upsert_embedded(ids, texts, embeddings, metadatas)

    def delete(self, ids=None, *, where=None, **kwargs):  # type: ignore[no-untyped-def]
        if self.fail_deletes:
            self.fail_deletes -= 1
            raise StoreError("the disk went away while deleting")
        return super().delete(ids, where=where, **kwargs)


class FlakyKB(KnowledgeBase):
    @property
    def vectorstore(self) -> ChromaVectorStore:
        if self._store is None:
            self._store = FlakyStore(
                self.name,
                self.embeddings,
                client=self.client,
                settings=self.settings,
                collection_metadata={KIND_KEY: KIND},
            )
        return self._store


def _kb(tmp_path: Path, cls: type[KnowledgeBase] = KnowledgeBase, **kw: Any) -> KnowledgeBase:
    emb = kw.pop("embeddings", None) or FakeEmbeddings(max_chunk_tokens=24)
    settings = Settings(home=tmp_path / "home", chunk_overlap=4)
    return cls("docs", settings=settings, embeddings=emb, **kw)


def _dump(kb: KnowledgeBase) -> dict[str, Any]:
    got = kb.vectorstore.collection.get(include=["documents", "metadatas", "embeddings"])
    return {
        i: (d, m, [round(float(x), 5) for x in e])
        for i, d, m, e in zip(
            got["ids"], got["documents"], got["metadatas"], got["embeddings"], strict=True
        )
    }


def _plugin_chunks(kb: KnowledgeBase) -> dict[str, Any]:
    return {i: r for i, r in _dump(kb).items() if r[1].get("origin") == "document"}


@pytest.fixture
def kb(tmp_path: Path) -> KnowledgeBase:
    return _kb(tmp_path)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    root = tmp_path / "files"
    root.mkdir()
    (root / "zebra.md").write_text("# Zebras\n\nZebras have black and white stripes.\n")
    (root / "notes.txt").write_text("The coffee machine is on the third floor.\n")
    return root


def test_upsert_stores_chunks_that_cite_well_and_carry_the_plugin_fields(kb):
    store = DocumentStore(kb)
    meta = DocumentMetadata(
        source="email",
        source_id="msg-17",
        url="https://mail.example/msg-17",
        created_at="2024-05-01T09:30:00+02:00",
        author="Ann",
    )
    assert store.upsert([DocumentInput("The VPN needs port 443.", id="vpn", metadata=meta)]) == [
        "vpn"
    ]
    ((chunk_id, (text, m, _)),) = _plugin_chunks(kb).items()
    assert text == "The VPN needs port 443."
    assert chunk_id.startswith("vpn:00000-")
    assert m["document_id"] == "vpn" and m["origin"] == "document"
    assert m["source"] == m["file_name"] == m["title"] == "https://mail.example/msg-17"
    assert m["sources"] == [m["source"]] and m["heading"] == "" and m["chunk_index"] == 0
    assert (m["plugin_source"], m["source_id"], m["author"]) == ("email", "msg-17", "Ann")
    assert m["created_at"] == "2024-05-01T09:30:00+02:00"
    assert m["created_at_ts"] == 1714548600  # 07:30 UTC
    assert "doc_hash" not in m and "text_hash" not in m, "file ingestion must not see them"
    # Without url or source_id the citation names the document.
    store.upsert([DocumentInput("Badges open every door.", id="b1")])
    m = next(r[1] for r in _plugin_chunks(kb).values() if r[1]["document_id"] == "b1")
    assert m["source"] == "document:b1" and m["file_name"] == "document b1"


def test_text_is_cleaned_like_a_text_file(kb):
    store = DocumentStore(kb)
    store.upsert([DocumentInput("  Line one\r\nline\x00 two   \r\n\r\n\r\n\r\nPara.  ", id="c")])
    ((text, _, _),) = _plugin_chunks(kb).values()
    assert text == "Line one\nline two\n\nPara."


def test_new_ids_count_and_document_ids(kb):
    store = DocumentStore(kb)
    ids = store.upsert([DocumentInput("one"), DocumentInput("two", id="x"), DocumentInput("3")])
    assert ids[1] == "x" and len(ids[0]) == len(ids[2]) == 32 and ids[0] != ids[2]
    int(ids[0], 16)
    assert store.count() == 3
    assert store.document_ids() == sorted(ids)
    # A repeated id within one call keeps its last text.
    assert store.upsert([DocumentInput("old", id="r"), DocumentInput("new", id="r")]) == ["r", "r"]
    assert store.count() == 4
    assert [h.text for h in store.query("new old", filter=DocumentFilter(document_id="r"))] == [
        "new"
    ]


def test_a_long_document_is_cut_like_file_ingestion(kb):
    store = DocumentStore(kb)
    store.upsert([DocumentInput(LONG, id="long")])
    chunks = sorted(_plugin_chunks(kb).values(), key=lambda r: r[1]["chunk_index"])
    size, overlap = effective_sizes(kb.embeddings, kb.settings.chunk_tokens, 4)  # type: ignore[arg-type]
    expected = [LONG[s:e] for s, e, _ in split_text(LONG, kb.embeddings, size, overlap)]  # type: ignore[arg-type]
    assert len(expected) > 5
    assert [r[0] for r in chunks] == expected
    assert [r[1]["chunk_index"] for r in chunks] == list(range(len(expected)))
    assert all(r[1]["n_tokens"] <= 24 for r in chunks)
    assert store.count() == 1


def test_replacing_removes_the_old_chunks_and_an_unchanged_upsert_writes_nothing(kb):
    emb = kb.embeddings
    store = DocumentStore(kb)
    store.upsert([DocumentInput(LONG, id="d"), DocumentInput("keep me", id="k")])
    store.upsert([DocumentInput("A short replacement about parking.", id="d")])
    texts = sorted(r[0] for r in _plugin_chunks(kb).values())
    assert texts == ["A short replacement about parking.", "keep me"]
    assert store.count() == 2
    before, revision, calls = _dump(kb), kb.vectorstore.revision, emb.calls  # type: ignore[attr-defined]
    store.upsert([DocumentInput("A short replacement about parking.", id="d")])
    assert _dump(kb) == before
    assert kb.vectorstore.revision == revision, "nothing was written"
    assert emb.calls == calls, "stored vectors were reused"  # type: ignore[attr-defined]
    # New metadata with the same text rewrites the metadata only.
    store.upsert(
        [
            DocumentInput(
                "A short replacement about parking.", id="d", metadata=DocumentMetadata(author="Bo")
            )
        ]
    )
    (m,) = [r[1] for r in _plugin_chunks(kb).values() if r[1]["document_id"] == "d"]
    assert m["author"] == "Bo" and store.count() == 2


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.upsert([DocumentInput("")]), "no text"),
        (lambda s: s.upsert([DocumentInput(" \n\t ")]), "no text"),
        (lambda s: s.upsert([DocumentInput("\x00\x07\r\n")]), "no text"),
        (lambda s: s.upsert([DocumentInput(None)]), "must be a string"),  # type: ignore[arg-type]
        (lambda s: s.upsert([DocumentInput("ok", metadata={"a": 1})]), "DocumentMetadata"),  # type: ignore[arg-type]
        (lambda s: s.upsert([DocumentInput("ok", id="")]), "non-empty string"),
        (lambda s: s.upsert([DocumentInput("ok", id=7)]), "non-empty string"),  # type: ignore[arg-type]
        (lambda s: s.upsert([DocumentInput("ok", id="x" * 513)]), "at most 512"),
        (lambda s: s.upsert([DocumentInput("ok"), "text"]), "not a DocumentInput"),
        (lambda s: s.query("q", top_k=0), "from 1 to 100"),
        (lambda s: s.query("q", top_k=101), "from 1 to 100"),
        (lambda s: s.query("q", top_k=True), "from 1 to 100"),
        (lambda s: s.query("  "), "query is empty"),
        (lambda s: s.query("q", filter=DocumentFilter(source="web")), "email, file, chat"),
        (lambda s: s.query("q", filter=DocumentFilter(start_date="last week")), "ISO 8601"),
        (
            lambda s: s.query(
                "q", filter=DocumentFilter(start_date="2024-02-01", end_date="2024-01-01")
            ),
            "after end_date",
        ),
        (lambda s: s.delete(), "pass ids, filter or delete_all"),
        (lambda s: s.delete(filter=DocumentFilter()), "pass ids, filter or delete_all"),
        (lambda s: s.delete(ids="abc"), "not one string"),
    ],
)
def test_bad_input_is_a_config_error_and_changes_nothing(kb, call, message):
    store = DocumentStore(kb)
    store.upsert([DocumentInput("Stays put.", id="keep")])
    before = _dump(kb)
    with pytest.raises(ConfigError, match=message):
        call(store)
    assert _dump(kb) == before


def test_metadata_is_validated_when_made():
    with pytest.raises(ConfigError, match="choose one of: email, file, chat"):
        DocumentMetadata(source="web")
    with pytest.raises(ConfigError, match="not an ISO 8601"):
        DocumentMetadata(created_at="May 1st")
    assert DocumentMetadata(created_at="2024-05-01").to_dict() == {"created_at": "2024-05-01"}
    assert DocumentMetadata(created_at="2024-05-01T10:00:00Z", author="a").to_dict() == {
        "created_at": "2024-05-01T10:00:00Z",
        "author": "a",
    }
    assert DocumentFilter().is_empty() and not DocumentFilter(author="a").is_empty()
    # A bare end date is the end of that day; a datetime without a zone is UTC.
    assert timestamp("2024-05-01", "d", end_of_day=True) == timestamp("2024-05-01T23:59:59", "d")


def _three(store: DocumentStore) -> None:
    store.upsert(
        [
            DocumentInput(
                "Mail about the vpn port.",
                id="m1",
                metadata=DocumentMetadata(source="email", author="ann", created_at="2024-01-10"),
            ),
            DocumentInput(
                "Chat about the vpn password.",
                id="c1",
                metadata=DocumentMetadata(
                    source="chat", author="bo", created_at="2024-02-20T18:00:00Z"
                ),
            ),
            DocumentInput("Undated vpn note.", id="u1", metadata=DocumentMetadata(source_id="n-1")),
        ]
    )


def test_delete_by_ids_by_filter_and_all_leaves_ingested_files(kb, files):
    kb.ingest([files])
    file_chunks = {i: r for i, r in _dump(kb).items() if i not in _plugin_chunks(kb)}
    manifest = (kb.manifest.files(), kb.manifest.docs())
    store = DocumentStore(kb)
    _three(store)
    store.upsert([DocumentInput(LONG, id="long", metadata=DocumentMetadata(author="ann"))])
    assert store.delete(ids=["nope"]) == 0
    assert store.delete(ids=["m1", "nope", "m1"]) == 1
    assert store.document_ids() == ["c1", "long", "u1"]
    assert store.delete(filter=DocumentFilter(author="ann")) == 1  # a many-chunk document
    assert store.delete(filter=DocumentFilter(author="nobody")) == 0
    assert store.delete(ids=["u1"], filter=DocumentFilter(source="chat")) == 2
    _three(store)
    # A file's path is not a plugin document id: ingested content is the ingestion's.
    assert store.delete(ids=[str(files / "zebra.md")]) == 0
    assert store.delete(delete_all=True) == 3
    assert store.count() == 0 and store.delete(delete_all=True) == 0
    assert _dump(kb) == file_chunks
    assert (kb.manifest.files(), kb.manifest.docs()) == manifest


def test_query_filters_by_plugin_fields_and_dates(kb, files):
    kb.ingest([files])
    store = DocumentStore(kb)
    _three(store)

    def found(**f: Any) -> set[str]:
        return {h.document_id for h in store.query("vpn", top_k=10, filter=DocumentFilter(**f))}

    assert found(source="email") == {"m1"}
    assert found(author="bo") == {"c1"}
    assert found(source_id="n-1") == {"u1"}
    assert found(document_id="c1") == {"c1"}
    assert found(start_date="2024-01-10") == {"m1", "c1"}
    assert found(start_date="2024-01-11") == {"c1"}
    assert found(end_date="2024-02-20") == {"m1", "c1"}, "a bare end date includes that day"
    assert found(end_date="2024-02-20T17:59:59Z") == {"m1"}
    assert found(start_date="2024-02-01T00:00:00+00:00", end_date="2024-03-01") == {"c1"}
    assert found(start_date="2025-01-01") == set()
    # Ingested files show up as source "file", document_id = their path.
    zebra = str(files / "zebra.md")
    assert zebra in found(source="file") and "m1" not in found(source="file")
    assert found(document_id=zebra) == {zebra}
    assert zebra not in found(author="ann")


def test_query_without_filter_sees_everything_with_scores_and_vectors(kb, files):
    kb.ingest([files])
    store = DocumentStore(kb)
    _three(store)
    hits = store.query("zebras stripes", top_k=100, include_embeddings=True)
    assert len(hits) == len(_dump(kb)) == 5
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    top = hits[0]
    assert top.document_id == str(files / "zebra.md")
    assert top.metadata == DocumentMetadata(source="file")
    assert top.embedding is not None
    assert top.embedding == pytest.approx(kb.embeddings.embed_documents([top.text])[0], abs=1e-6)
    d = next(h for h in hits if h.document_id == "c1").to_dict()
    assert set(d) == {"id", "text", "metadata", "embedding", "score"}
    assert d["metadata"] == {
        "source": "chat",
        "author": "bo",
        "created_at": "2024-02-20T18:00:00Z",
        "document_id": "c1",
    }
    assert store.query("zebras", top_k=1)[0].embedding is None
    assert isinstance(store.query("vpn password", top_k=1)[0], ChunkHit)


def test_the_knowledge_base_retriever_and_qa_citations_see_documents(kb):
    store = DocumentStore(kb)
    meta = DocumentMetadata(url="https://wiki.example/vpn")
    store.upsert([DocumentInput("The VPN gateway listens on port 443.", id="vpn", metadata=meta)])
    docs = kb.retriever(k=1).invoke("vpn gateway port")
    (chunk,) = to_chunks(docs)
    assert chunk.source == chunk.file_name == "https://wiki.example/vpn"
    assert chunk.text == "The VPN gateway listens on port 443." and chunk.score > 0


def test_failed_embedding_leaves_the_store_unchanged(tmp_path):
    emb = FailingEmbeddings(max_chunk_tokens=24)
    kb = _kb(tmp_path, embeddings=emb)
    store = DocumentStore(kb)
    store.upsert([DocumentInput("First version.", id="a")])
    before = _dump(kb)
    emb.fail = True
    with pytest.raises(EmbeddingError, match="the embedder fell over"):
        store.upsert([DocumentInput("Second version.", id="a"), DocumentInput("New.", id="b")])
    assert _dump(kb) == before and store.count() == 1


def test_a_write_failing_midway_is_undone(tmp_path):
    kb = _kb(tmp_path, cls=FlakyKB)
    store = DocumentStore(kb)
    store.upsert([DocumentInput(LONG, id="a"), DocumentInput("Short b.", id="b")])
    before = _dump(kb)
    flaky = kb.vectorstore
    assert isinstance(flaky, FlakyStore)
    flaky.fail_upsert_at = flaky.upserts + 2  # the second document's write fails halfway
    docs = [
        DocumentInput("A new text for a.", id="a"),
        DocumentInput(LONG.replace("policy", "rule"), id="b"),
        DocumentInput("Brand new c.", id="c"),
    ]
    with pytest.raises(StoreError, match="disk filled up"):
        store.upsert(docs)
    assert _dump(kb) == before
    assert store.count() == 2 and store.document_ids() == ["a", "b"]
    # Deleting the replaced chunks fails: everything is put back too.
    flaky.fail_upsert_at = None
    flaky.fail_deletes = 1
    with pytest.raises(StoreError, match="went away"):
        store.upsert(docs)
    assert _dump(kb) == before
    assert store.upsert(docs) == ["a", "b", "c"] and store.count() == 3


def test_file_ingestion_and_documents_leave_each_other_alone(kb, files):
    store = DocumentStore(kb)
    # A document with exactly a file's text: neither side may take the other's chunks.
    store.upsert(
        [
            DocumentInput("Zebras have black and white stripes.", id="dup"),
            *[DocumentInput(f"Document {i} about printers.", id=f"p{i}") for i in range(3)],
        ]
    )
    plugin = _plugin_chunks(kb)
    s = kb.ingest([files])
    assert s.added == 2 and not s.failed
    assert _plugin_chunks(kb) == plugin
    assert all("dup" not in p for p in kb.manifest.files()) and len(kb.manifest.docs()) == 2
    (files / "zebra.md").write_text("# Zebras\n\nZebras are striped horses.\n")
    (files / "notes.txt").unlink()
    s = kb.ingest([files])
    assert (s.updated, s.removed) == (1, 1) and s.chunks_removed >= 1
    assert _plugin_chunks(kb) == plugin
    file_chunks = {i: r for i, r in _dump(kb).items() if i not in plugin}
    store.upsert([DocumentInput("Zebras are striped horses.", id="dup")])
    assert store.delete(ids=["p0"]) == 1
    assert {i: r for i, r in _dump(kb).items() if r[1].get("origin") != "document"} == file_chunks
    s = kb.ingest([files])
    assert s.skipped == 1 and s.chunks_removed == s.chunks_added == 0
    assert store.count() == 3


def test_upsert_file_keeps_headings_and_names_the_file(kb, tmp_path):
    store = DocumentStore(kb)
    path = tmp_path / "upload-3f2a.md"
    path.write_text("# Guide\n\n## Install\n\nRun the installer.\n\n## Remove\n\nDelete it.\n")
    meta = DocumentMetadata(source="file", author="ann")
    doc_id = store.upsert_file(path, metadata=meta, filename="guide.md", document_id="g")
    assert doc_id == "g" and store.count() == 1
    chunks = sorted(_plugin_chunks(kb).values(), key=lambda r: r[1]["chunk_index"])
    assert [(r[0], r[1]["heading"]) for r in chunks] == [
        ("Run the installer.", "Guide > Install"),
        ("Delete it.", "Guide > Remove"),
    ]
    assert {r[1]["file_name"] for r in chunks} == {"guide.md"}
    assert {r[1]["document_file_type"] for r in chunks} == {"md"}
    (hit,) = store.query("installer", top_k=1, filter=DocumentFilter(source="file"))
    assert hit.document_id == "g" and hit.metadata == meta
    assert len(store.upsert_file(path)) == 32, "a new id without document_id"


def test_upsert_file_refuses_unsupported_and_empty_files(kb, tmp_path):
    store = DocumentStore(kb)
    bad = tmp_path / "tmp-1234.exe"
    bad.write_bytes(b"MZ\x00\x01")
    with pytest.raises(DocumentLoadError, match=r"^setup\.exe: unsupported file type"):
        store.upsert_file(bad, filename="setup.exe")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(DocumentLoadError, match="no text"):
        store.upsert_file(empty)
    with pytest.raises(DocumentLoadError, match=r"missing\.txt"):
        store.upsert_file(tmp_path / "missing.txt")
    assert kb.vectorstore.count() == 0


def test_concurrent_upserts_queries_and_deletes_keep_an_exact_count(kb):
    store = DocumentStore(kb)
    alive: list[set[str]] = [set() for _ in range(8)]
    shared_versions = [f"Shared text version {v} about the badge office." for v in range(8)]
    errors: list[BaseException] = []

    def client(n: int) -> None:
        rng = random.Random(n)
        try:
            for step in range(25):
                op = rng.random()
                doc_id = f"t{n}-{rng.randrange(4)}"
                if op < 0.4:
                    store.upsert([DocumentInput(f"Client {n} step {step} text.", id=doc_id)])
                    alive[n].add(doc_id)
                elif op < 0.6:
                    store.delete(ids=[doc_id])
                    alive[n].discard(doc_id)
                elif op < 0.75:
                    store.upsert([DocumentInput(shared_versions[n], id="shared")])
                else:
                    store.query(f"client {n} text", top_k=5)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    expected = set().union(*alive)
    shared = [r[0] for r in _plugin_chunks(kb).values() if r[1]["document_id"] == "shared"]
    if shared:
        expected.add("shared")
        assert len(shared) == 1 and shared[0] in shared_versions, "one version, no duplicates"
    assert store.count() == len(expected)
    assert store.document_ids() == sorted(expected)
    # Every stored chunk belongs to a live document: nothing left over by a replace.
    assert {r[1]["document_id"] for r in _plugin_chunks(kb).values()} == expected


@pytest.mark.parametrize("mode", ["hybrid", "dense", "bm25"])
def test_query_uses_the_settings_mode_and_an_empty_store_finds_nothing(tmp_path, mode):
    settings = Settings(home=tmp_path / "home", retrieval_mode=mode)
    kb = KnowledgeBase("docs", settings=settings, embeddings=FakeEmbeddings())
    store = DocumentStore(kb)
    assert store.query("anything") == [] and store.count() == 0
    assert store.delete(delete_all=True) == 0
    store.upsert([DocumentInput("alpha beta gamma", id="a"), DocumentInput("delta", id="d")])
    hits = store.query("alpha", top_k=2)
    assert hits[0].document_id == "a"
    # One method ranks alone (1/61 for the first); hybrid adds both methods' shares.
    assert hits[0].score == pytest.approx(2 / 61 if mode == "hybrid" else 1 / 61)


def test_a_filter_gives_the_where_that_query_searches() -> None:
    from llamachain.documents import DocumentFilter

    where = DocumentFilter(author="ops", start_date="2024-01-01").where()
    assert where == {
        "$and": [
            {"origin": "document"},
            {"author": "ops"},
            {"created_at_ts": {"$gte": timestamp("2024-01-01", "start_date")}},
        ]
    }
    with pytest.raises(ConfigError, match="empty"):
        DocumentFilter().where()
    with pytest.raises(ConfigError):
        DocumentFilter(start_date="not a date").where()
