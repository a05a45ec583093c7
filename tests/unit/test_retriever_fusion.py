"""Reciprocal rank fusion and the hybrid retriever, on FakeEmbeddings and an on-disk Chroma.

Chroma's embedded client opens no network socket (the unit-test conftest forbids them), so
these run with a real store.
"""

from __future__ import annotations

import asyncio

import pytest

from llamachain.errors import ConfigError
from llamachain.retrievers import HybridRetriever, rrf_fuse
from llamachain.testing import FakeEmbeddings
from llamachain.vectorstores import ChromaVectorStore

TEXTS = [
    ("The cat sat on the mat near the window.", {"source": "pets.md", "file_type": "md"}),
    ("Dogs chase cats around the garden all day.", {"source": "pets.md", "file_type": "md"}),
    ("Disk failure reported with error code E4471 on node seven.", {"source": "ops.txt"}),
    ("Quantum physics lecture notes about entanglement.", {"source": "physics.pdf", "page": 3}),
    ("Entanglement experiments with photons and cats.", {"source": "physics.pdf", "page": 4}),
    ("Recipes: a warm soup for a cold window-side evening.", {"source": "food.docx"}),
    ("Network outage: the router rebooted twice overnight.", {"source": "ops.txt"}),
    ("Garden plants need water, sun and a little patience.", {"source": "garden.md"}),
]
for _, _m in TEXTS:
    _m.setdefault("file_type", _m["source"].rsplit(".", 1)[1])


# ---- the fusion formula -------------------------------------------------------------------
def test_rrf_scores_are_sums_of_reciprocal_ranks():
    fused = dict(rrf_fuse([["a", "b", "c"], ["c", "a"]], rrf_k=10))
    assert fused["a"] == pytest.approx(1 / 11 + 1 / 12)
    assert fused["b"] == pytest.approx(1 / 12)
    assert fused["c"] == pytest.approx(1 / 13 + 1 / 11)


def test_rrf_orders_by_score_then_id():
    fused = rrf_fuse([["x", "b"], ["a", "y"]], rrf_k=60)
    # x and a are both first once; b and y both second once: ties go alphabetically.
    assert [i for i, _ in fused] == ["a", "x", "b", "y"]
    scores = [s for _, s in fused]
    assert scores == sorted(scores, reverse=True)


def test_rrf_rewards_agreement():
    # Found by both methods at rank 3 beats found by one method at rank 1.
    fused = dict(rrf_fuse([["p", "q", "both"], ["r", "s", "both"]], rrf_k=60))
    assert fused["both"] > fused["p"] == fused["r"]


def test_rrf_of_nothing_is_nothing():
    assert rrf_fuse([[], []]) == []


def test_rrf_with_one_ranking_keeps_its_order():
    ranking = ["d", "a", "c", "b"]
    assert [i for i, _ in rrf_fuse([ranking])] == ranking


# ---- the retriever ------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path):
    s = ChromaVectorStore("fusion-test", FakeEmbeddings(), path=tmp_path / "kb")
    s.add_texts([t for t, _ in TEXTS], [m for _, m in TEXTS], ids=[f"d{i}" for i in range(8)])
    return s


def test_fused_score_is_rrf_of_the_two_rankings(store):
    r = HybridRetriever(vectorstore=store, k=8, fetch_k=5, rrf_k=60)
    query = "cats in the garden window"
    dense = [d.id for d in r.invoke(query, mode="dense")]
    bm25 = [d.id for d in r.invoke(query, mode="bm25")]
    expected = rrf_fuse([dense, bm25], 60)
    got = r.invoke(query)
    assert [(d.id, d.metadata["score"]) for d in got] == [
        (i, pytest.approx(s)) for i, s in expected[:8]
    ]
    assert [d.metadata["rank"] for d in got] == list(range(1, len(got) + 1))


def test_per_method_scores_are_reported(store):
    r = HybridRetriever(vectorstore=store, k=8, fetch_k=8)
    query = "cats window"
    dense = {d.id: s for d, s in store.similarity_search_with_score(query, k=8)}
    for doc in r.invoke(query):
        assert doc.metadata["dense_score"] == pytest.approx(dense[doc.id])
        words = {w.strip(".,:").lower() for w in doc.page_content.split()}
        if "bm25_score" in doc.metadata:
            assert doc.metadata["bm25_score"] > 0
            assert words & {"cat", "cats", "window", "window-side"}
        else:
            assert not words & {"cat", "cats", "window"}


def test_modes_report_only_their_method(store):
    r = HybridRetriever(vectorstore=store, k=3)
    dense = r.invoke("entanglement photons", mode="dense")
    bm25 = r.invoke("entanglement photons", mode="bm25")
    assert dense and all("bm25_score" not in d.metadata for d in dense)
    assert bm25 and all("dense_score" not in d.metadata for d in bm25)
    assert bm25[0].id == "d4"  # both words
    with pytest.raises(ConfigError, match="hybrid, dense, bm25"):
        r.invoke("x", mode="sparse")


def test_bm25_finds_the_exact_keyword(store):
    r = HybridRetriever(vectorstore=store, k=1, mode="bm25")
    [doc] = r.invoke("what does E4471 mean?")
    assert doc.id == "d2"
    assert doc.page_content.startswith("Disk failure")
    assert doc.metadata["source"] == "ops.txt"


def test_results_are_deterministic_and_ordered(store):
    r = HybridRetriever(vectorstore=store, k=6)
    first = r.invoke("cats and garden water")
    assert [d.id for d in first] == [d.id for d in r.invoke("cats and garden water")]
    scores = [d.metadata["score"] for d in first]
    assert scores == sorted(scores, reverse=True)
    for a, b in zip(first, first[1:]):
        if a.metadata["score"] == b.metadata["score"]:
            assert a.id < b.id


def test_query_without_known_words_is_dense_only(store):
    r = HybridRetriever(vectorstore=store, k=4)
    hybrid = r.invoke("the of and zzzunknownword")
    assert [d.id for d in hybrid] == [
        d.id for d in r.invoke("the of and zzzunknownword", mode="dense")
    ]
    assert all("bm25_score" not in d.metadata for d in hybrid)


def test_filter_applies_to_both_methods(store):
    r = HybridRetriever(vectorstore=store, k=8, filter={"source": "pets.md"})
    got = r.invoke("cats")
    assert {d.id for d in got} == {"d0", "d1"}
    assert all(d.metadata["source"] == "pets.md" for d in got)
    # A per-call filter narrows further (both apply).
    assert [d.id for d in r.invoke("cats", filter={"file_type": {"$in": ["md"]}})] != []
    assert r.invoke("cats", filter={"file_type": "pdf"}) == []


def test_filter_on_bm25_candidates(store):
    r = HybridRetriever(vectorstore=store, k=3, mode="bm25")
    got = r.invoke("cats", filter={"$or": [{"page": {"$gte": 4}}, {"file_type": "docx"}]})
    assert [d.id for d in got] == ["d4"]
    got = r.invoke("cats", filter={"source": {"$ne": "pets.md"}}, k=5)
    assert [d.id for d in got] == ["d4"]
    # Repeating a filter reuses what was learnt about each document.
    assert [d.id for d in r.invoke("cats", filter={"source": {"$ne": "pets.md"}})] == ["d4"]


def test_where_document_and_document_filters(store):
    r = HybridRetriever(vectorstore=store, k=5)
    got = r.invoke("cats window", where_document={"$contains": "window"})
    assert {d.id for d in got} == {"d0", "d5"}  # case-sensitive substring of the text
    got = r.invoke("cats", filter={"#document": {"$contains": "photons"}}, mode="bm25")
    assert [d.id for d in got] == ["d4"]


def test_k_and_fetch_k_per_call(store):
    r = HybridRetriever(vectorstore=store, k=2, fetch_k=3)
    assert len(r.invoke("cats garden")) == 2
    assert len(r.invoke("cats garden", k=5)) == 5  # fetch_k grows to at least k
    assert len(r.invoke("cats garden", k=5, fetch_k=8)) == 5


def test_unknown_argument_is_an_error(store):
    r = HybridRetriever(vectorstore=store)
    with pytest.raises(ConfigError, match="top_k"):
        r.invoke("cats", top_k=3)


def test_bad_filter_is_a_config_error(store):
    with pytest.raises(ConfigError, match="invalid filter"):
        HybridRetriever(vectorstore=store, filter={"page": {"$gt": "3"}})
    r = HybridRetriever(vectorstore=store)
    with pytest.raises(ConfigError, match="invalid filter"):
        r.invoke("cats", filter={"page": {"$between": [1, 2]}})


def test_empty_store(tmp_path):
    empty = ChromaVectorStore("empty-kb", FakeEmbeddings(), path=tmp_path)
    for mode in ("hybrid", "dense", "bm25"):
        assert HybridRetriever(vectorstore=empty, mode=mode).invoke("anything") == []


def test_index_follows_writes_through_the_store(store):
    r = HybridRetriever(vectorstore=store, k=1, mode="bm25")
    assert r.invoke("zebra") == []
    store.add_texts(["A zebra crossed the road."], [{"source": "zoo.md"}], ids=["z1"])
    assert [d.id for d in r.invoke("zebra")] == ["z1"]
    # Same number of documents, different content: the revision says it changed.
    store.delete(["z1"])
    store.add_texts(["A giraffe crossed the road."], [{"source": "zoo.md"}], ids=["z2"])
    assert r.invoke("zebra") == []
    assert [d.id for d in r.invoke("giraffe")] == ["z2"]


def test_index_notices_other_writers(store, tmp_path):
    r = HybridRetriever(vectorstore=store, k=1, mode="bm25", recheck_seconds=0)
    assert r.invoke("zebra") == []
    other = ChromaVectorStore("fusion-test", FakeEmbeddings(), path=tmp_path / "kb")
    other.add_texts(["A zebra crossed the road."], ids=["z1"])
    assert [d.id for d in r.invoke("zebra")] == ["z1"]


def test_other_writers_are_checked_every_recheck_seconds(store, tmp_path):
    r = HybridRetriever(vectorstore=store, k=1, mode="bm25", recheck_seconds=3600)
    assert r.invoke("zebra") == []
    other = ChromaVectorStore("fusion-test", FakeEmbeddings(), path=tmp_path / "kb")
    other.add_texts(["A zebra crossed the road."], ids=["z1"])
    assert r.invoke("zebra") == []  # not asked again yet
    r.recheck_seconds = 0
    assert [d.id for d in r.invoke("zebra")] == ["z1"]


def test_same_count_changes_by_other_writers_are_noticed(store, tmp_path):
    r = HybridRetriever(vectorstore=store, k=1, mode="bm25", recheck_seconds=0)
    assert r.invoke("zebra") == []
    other = ChromaVectorStore("fusion-test", FakeEmbeddings(), path=tmp_path / "kb")
    other.delete(["d7"])
    other.add_texts(["A zebra crossed the road."], ids=["z1"])
    assert store.count() == len(TEXTS)  # the same number of records: the token tells
    assert [d.id for d in r.invoke("zebra")] == ["z1"]


def test_refresh_rebuilds(store):
    r = HybridRetriever(vectorstore=store, k=1, mode="bm25")
    r.invoke("cats")
    # A change behind the store's back (no new revision token) is not seen...
    text = "A zebra sat on the mat."
    store.collection.update(
        ids=["d0"], documents=[text], embeddings=FakeEmbeddings().embed_documents([text])
    )
    assert r.invoke("zebra") == []
    r.refresh()  # ...until asked
    assert [d.id for d in r.invoke("zebra")] == ["d0"]


async def test_ainvoke_passes_arguments(store):
    r = HybridRetriever(vectorstore=store, k=4)
    got = await r.ainvoke("cats", k=2, filter={"source": "pets.md"})
    assert [d.id for d in got] == [
        d.id for d in r.invoke("cats", k=2, filter={"source": "pets.md"})
    ]
    assert len(got) == 2
    both = await asyncio.gather(r.ainvoke("cats"), r.ainvoke("garden"))
    assert all(len(x) == 4 for x in both)


def test_retrievers_over_one_store_share_the_index(store, caplog):
    caplog.set_level("INFO", logger="llamachain.retrievers")
    for _ in range(3):  # e.g. one retriever per question
        HybridRetriever(vectorstore=store, k=2).invoke("cats")
    builds = [r for r in caplog.records if "built the BM25 index" in r.getMessage()]
    assert len(builds) == 1
    store.add_texts(["A zebra crossed the road."], ids=["z1"])
    HybridRetriever(vectorstore=store, k=2).invoke("zebra")
    builds = [r for r in caplog.records if "built the BM25 index" in r.getMessage()]
    assert len(builds) == 2
