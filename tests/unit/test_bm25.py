"""The BM25 index: its analysis and scores (against bm25s's own indexing), and its copy on disk
(reused by a new store object, invalidated by writes, rebuilt when damaged), on a real local
Chroma directory."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from llamachain import _bm25, _bm25_cache
from llamachain._chroma import REVISION_KEY, make_client
from llamachain.retrievers import HybridRetriever
from llamachain.testing import FakeEmbeddings
from llamachain.vectorstores import ChromaVectorStore

CORPUS = [
    "The cat sat on the mat near the window.",
    "Dogs chase cats around the garden; the well-known dog-walker laughed.",
    "Disk failure reported with error code E4471 on node seven (see /var/log/disk.log).",
    "",
    "the of and a to",  # stop words only
    "Résumé: naïve café owners' cafés, CAFÉ!",
    "Entanglement experiments with photons\tand cats\n\nand more cats.",
    "x y z 1 2 3",  # one-character words only
    "snake_case_names and CamelCase words, e.g. i.e. U.S.A. 3.14159",
    "Network outage: the router rebooted twice overnight -- routers, routing, routed.",
]
QUERIES = [
    "cats",
    "the well-known cat",
    "E4471 disk",
    "café résumé",
    "routing routers",
    "snake_case_names",
    "zzz unknown",
]


def _reference_terms(text: str) -> list[str]:
    """What bm25s's tokenizer (regex words, en_plus stop words, Snowball stems) makes of it."""
    import Stemmer
    from bm25s.stopwords import STOPWORDS_EN_PLUS

    stem = Stemmer.Stemmer("english").stemWord
    words = re.findall(r"(?u)\b\w\w+\b", text.lower())
    return [stem(w) for w in words if w not in set(STOPWORDS_EN_PLUS)]


# ---- analysis and scores --------------------------------------------------------------------
def test_terms_are_regex_words_without_stop_words_stemmed():
    analyzer = _bm25.Analyzer()
    for text in [*CORPUS, *QUERIES]:
        assert analyzer.terms(text) == _reference_terms(text)
    assert analyzer.terms("The well-known dog-walker, e.g.") == ["well", "known", "dog", "walker"]


@pytest.mark.parametrize("page", [1, 3, 100])
def test_scores_equal_bm25s_own_index(page):
    import bm25s

    ids = [f"d{i}" for i in range(len(CORPUS))]
    builder = _bm25.Builder(_bm25.Analyzer())
    for start in range(0, len(CORPUS), page):
        builder.add(ids[start : start + page], CORPUS[start : start + page])
    model = builder.finish()
    assert builder.ids == ids

    reference = bm25s.BM25(k1=_bm25.K1, b=_bm25.B, method="lucene")
    reference.index([_reference_terms(t) for t in CORPUS], show_progress=False)
    assert set(model.vocab_dict) == set(reference.vocab_dict) - {""}
    for query in QUERIES:
        terms = [t for t in _reference_terms(query) if t in model.vocab_dict]
        if not terms:
            continue
        ours = model.get_scores_from_ids([model.vocab_dict[t] for t in terms])
        theirs = reference.get_scores_from_ids([reference.vocab_dict[t] for t in terms])
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
        assert ours.max() > 0


def test_document_frequencies_count_documents_not_occurrences():
    texts = ["alpha alpha beta", "beta gamma", "gamma gamma gamma"]
    builder = _bm25.Builder(_bm25.Analyzer())
    builder.add(["a", "b", "c"], texts)
    index = _bm25.BM25Index(
        builder.ids, builder.finish(), _bm25.Analyzer(), token=None, origin="built", seconds=0
    )
    assert index.document_frequencies(["alpha", "beta", "gamma", "delta"]) == {
        "alpha": 1,
        "beta": 2,
        "gamma": 2,
        "delta": 0,
    }


def test_nothing_to_index():
    builder = _bm25.Builder(_bm25.Analyzer())
    builder.add(["a", "b"], ["", "the of and"])
    assert builder.finish() is None


# ---- on disk --------------------------------------------------------------------------------
TEXTS = [
    ("The cat sat on the mat near the window.", {"source": "pets.md", "page": 1}),
    ("Dogs chase cats around the garden all day.", {"source": "pets.md", "page": 2}),
    ("Disk failure reported with error code E4471 on node seven.", {"source": "ops.txt"}),
    ("Entanglement experiments with photons and cats.", {"source": "physics.pdf", "page": 4}),
]


@pytest.fixture
def kb(tmp_path):
    path = tmp_path / "kb"
    s = ChromaVectorStore("disk-test", FakeEmbeddings(), path=path)
    s.add_texts([t for t, _ in TEXTS], [m for _, m in TEXTS], ids=[f"d{i}" for i in range(4)])
    return path


def _open(path, **kw) -> HybridRetriever:
    """A retriever over a new store object (what a new process would have)."""
    store = ChromaVectorStore("disk-test", FakeEmbeddings(), path=path)
    return HybridRetriever(vectorstore=store, k=4, mode="bm25", recheck_seconds=0, **kw)


def _cache(path):
    return path / _bm25_cache.CACHE_NAME / "disk-test"


def test_a_new_store_object_loads_the_saved_index(kb, caplog):
    caplog.set_level("INFO", logger="llamachain.retrievers")
    first = _open(kb)
    info = first.bm25_info()
    assert info["origin"] == "built"
    token = first.vectorstore.revision_token()
    assert info["revision_token"] == token and token
    assert info["path"] == str(_cache(kb) / token)
    assert sorted(p.name for p in _cache(kb).iterdir()) == [token]
    assert json.loads((_cache(kb) / token / "index.json").read_text())["documents"] == 4

    second = _open(kb)
    assert second.bm25_info()["origin"] == "loaded"
    assert [d.id for d in second.invoke("cats")] == [d.id for d in first.invoke("cats")]
    assert [d.id for d in second.invoke("E4471")] == ["d2"]
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("built the BM25 index of disk-test") for m in messages) == 1
    assert sum(m.startswith("loaded the BM25 index of disk-test") for m in messages) == 1


def test_filters_work_on_a_loaded_index(kb):
    _open(kb).bm25_info()
    r = _open(kb)
    assert r.bm25_info()["origin"] == "loaded"
    assert {d.id for d in r.invoke("cats", filter={"source": "pets.md"})} == {"d0", "d1"}
    assert [d.id for d in r.invoke("cats", filter={"page": {"$gte": 3}})] == ["d3"]
    got = r.invoke("cats", filter={"#document": {"$contains": "photons"}})
    assert [d.id for d in got] == ["d3"]
    assert [d.id for d in r.invoke("cats", where_document={"$contains": "garden"})] == ["d1"]
    assert r.invoke("cats", filter={"source": "ops.txt"}) == []


def test_a_write_elsewhere_invalidates_the_saved_index(kb):
    r = _open(kb)
    old = r.bm25_info()["revision_token"]
    assert r.invoke("zebra") == []
    writer = ChromaVectorStore("disk-test", FakeEmbeddings(), path=kb)
    writer.add_texts(["A zebra crossed the road."], [{"source": "zoo.md"}], ids=["z1"])
    assert writer.revision_token() not in (None, old)
    # The open retriever notices (recheck_seconds=0) and rebuilds; so does a new one.
    assert [d.id for d in r.invoke("zebra")] == ["z1"]
    assert r.bm25_info()["origin"] == "built"
    fresh = _open(kb)
    assert fresh.bm25_info()["origin"] == "loaded"
    assert [d.id for d in fresh.invoke("zebra")] == ["z1"]
    # Only the current revision is kept.
    assert [p.name for p in _cache(kb).iterdir()] == [writer.revision_token()]


def test_metadata_edits_are_seen_by_a_loaded_index(kb):
    _open(kb).bm25_info()
    ChromaVectorStore("disk-test", FakeEmbeddings(), path=kb).update_metadatas(
        ["d0"], [{"source": "moved.md"}]
    )
    r = _open(kb)
    assert [d.id for d in r.invoke("mat", filter={"source": "moved.md"})] == ["d0"]


@pytest.mark.parametrize(
    "damage",
    [
        "truncate-scores",
        "garbage-info",
        "missing-ids",
        "wrong-count",
        "other-analyzer",
        "debris",
    ],
)
def test_a_damaged_cache_is_rebuilt(kb, damage, caplog):
    first = _open(kb)
    directory = _cache(kb) / first.bm25_info()["revision_token"]
    if damage == "truncate-scores":
        data = directory / "data.csc.index.npy"
        data.write_bytes(data.read_bytes()[:100])
    elif damage == "garbage-info":
        (directory / "index.json").write_text("{not json")
    elif damage == "missing-ids":
        (directory / "ids.json").unlink()
    elif damage == "wrong-count":
        info = json.loads((directory / "index.json").read_text())
        (directory / "ids.json").write_text(json.dumps(["d0"]))
        info["documents"] = 1
        (directory / "index.json").write_text(json.dumps(info))
    elif damage == "other-analyzer":
        info = json.loads((directory / "index.json").read_text())
        info["analyzer"]["stemmer"] = None
        (directory / "index.json").write_text(json.dumps(info))
    else:  # a directory without index.json, e.g. from a copy interrupted by hand
        shutil.rmtree(directory)
        directory.mkdir()
        (directory / "ids.json").write_text("[")
    caplog.set_level("INFO", logger="llamachain")
    r = _open(kb)
    assert r.bm25_info()["origin"] == "built"
    assert [d.id for d in r.invoke("E4471")] == ["d2"]
    if damage != "debris":
        assert any("ignoring the BM25 index" in rec.getMessage() for rec in caplog.records)
    # ...and the rebuilt copy is good again.
    assert _open(kb).bm25_info()["origin"] == "loaded"


def test_an_abandoned_temporary_directory_is_harmless(kb):
    _cache(kb).mkdir(parents=True)
    partial = _cache(kb) / ".tmp-deadbeef"
    partial.mkdir()
    (partial / "data.csc.index.npy").write_bytes(b"half")
    r = _open(kb)
    assert r.bm25_info()["origin"] == "built"
    assert partial.exists()  # recent: perhaps someone is still writing it
    assert _open(kb).bm25_info()["origin"] == "loaded"


def test_cache_can_be_turned_off(kb):
    r = _open(kb, cache_bm25=False)
    assert r.bm25_info()["path"] is None
    assert not _cache(kb).exists()
    assert _open(kb, cache_bm25=False).bm25_info()["origin"] == "built"


def test_collection_without_token_is_indexed_in_memory(tmp_path):
    client = make_client(path=tmp_path)
    col = client.create_collection(
        "foreign-kb", configuration={"hnsw": {"space": "cosine"}}, embedding_function=None
    )
    emb = FakeEmbeddings()
    col.add(ids=["f1"], embeddings=emb.embed_documents(["alpha"]), documents=["alpha beta"])
    store = ChromaVectorStore("foreign-kb", emb, client=client)
    assert store.revision_token() is None
    r = HybridRetriever(vectorstore=store, mode="bm25", recheck_seconds=0)
    assert r.bm25_info()["path"] is None
    assert not (tmp_path / _bm25_cache.CACHE_NAME).exists()
    # Another writer that does not touch: noticed by the number of records.
    col.add(ids=["f2"], embeddings=emb.embed_documents(["gamma"]), documents=["gamma delta"])
    assert [d.id for d in r.invoke("gamma")] == ["f2"]


def test_nothing_is_kept_while_a_batch_is_being_written(kb):
    writer = ChromaVectorStore("disk-test", FakeEmbeddings(), path=kb)
    with writer.write_batch():
        writer.add_texts(["A zebra crossed the road."], ids=["z1"])
        reader = _open(kb)
        assert [d.id for d in reader.invoke("zebra")] == ["z1"]
        assert reader.bm25_info()["path"] is None and reader.bm25_info()["revision_token"] is None
        writer.add_texts(["A zebra and a giraffe."], ids=["z2"])
    # The batch is done: the reader notices the new token and keeps the new index.
    assert [d.id for d in reader.invoke("giraffe")] == ["z2"]
    assert reader.bm25_info()["path"] is not None


def test_refresh_and_delete_collection_remove_the_saved_index(kb):
    r = _open(kb)
    r.bm25_info()
    r.refresh()
    assert not _cache(kb).exists()
    assert r.bm25_info()["origin"] == "built"
    assert _cache(kb).exists()
    r.vectorstore.delete_collection()
    assert not _cache(kb).exists()


def test_a_token_that_is_not_a_file_name_is_not_used_as_one(kb):
    store = ChromaVectorStore("disk-test", FakeEmbeddings(), path=kb)
    store.collection.modify(metadata={**store.collection.metadata, REVISION_KEY: "../../escape"})
    r = HybridRetriever(vectorstore=store, mode="bm25")
    assert r.bm25_info()["path"] is None
    assert [d.id for d in r.invoke("E4471")] == ["d2"]
    assert not (kb.parent / "escape").exists()


def test_remembered_terms_equal_fresh_analysis_and_the_memory_is_bounded(monkeypatch):
    texts = [
        "Well-known hosts: a/b.py, the RUNNING runner runs; running!",
        "Cookies signed with itsdangerous — signing, signed, signs",
        "running the runner again, well-known again",
    ]
    tokens = [t for text in texts for t in text.lower().split()]
    seasoned = _bm25.Analyzer()
    first = seasoned.terms_of_tokens(tokens)
    again = seasoned.terms_of_tokens(tokens[::-1])
    assert again == first[::-1]
    assert [seasoned.terms(t) for t in texts] == [_bm25.Analyzer().terms(t) for t in texts]
    assert first == _bm25.Analyzer().terms_of_tokens(tokens)
    monkeypatch.setattr(_bm25, "_MEMO_MAX", 4)
    small = _bm25.Analyzer()
    assert small.terms_of_tokens(tokens) == first
    assert len(small._memo) <= len(set(tokens))
    small.terms_of_tokens(["fresh", "words", "here"])
    assert len(small._memo) <= 4
