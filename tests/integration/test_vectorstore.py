"""ChromaVectorStore on a local Chroma directory: persistence, upserts, deletes, scores, filters,
MMR and the recorded embedding model."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding

from llamachain import _where
from llamachain._chroma import make_client
from llamachain.errors import (
    ConfigError,
    EmbeddingMismatchError,
    KnowledgeBaseError,
)
from llamachain.settings import Settings
from llamachain.testing import FakeEmbeddings
from llamachain.vectorstores import DIMENSION_KEY, MODEL_KEY, ChromaVectorStore

ANIMALS = [
    ("cats purr and sleep all day", {"kind": "pet", "legs": 4, "source": "a.md"}),
    ("dogs bark at the mail carrier", {"kind": "pet", "legs": 4, "source": "a.md"}),
    ("parrots talk and sleep on a perch", {"kind": "pet", "legs": 2, "source": "b.md"}),
    ("sharks swim in the deep ocean", {"kind": "wild", "legs": 0, "source": "c.pdf"}),
    ("eagles fly over the mountains", {"kind": "wild", "legs": 2, "source": "c.pdf"}),
]


@pytest.fixture
def store(tmp_path):
    s = ChromaVectorStore("animals", FakeEmbeddings(), path=tmp_path / "kb")
    s.add_texts([t for t, _ in ANIMALS], [m for _, m in ANIMALS], ids=[f"a{i}" for i in range(5)])
    return s


def _run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_data_persists_across_processes(tmp_path):
    path = tmp_path / "kb"
    _run(
        f"""
        from pathlib import Path
        from llamachain.testing import FakeEmbeddings
        from llamachain.vectorstores import ChromaVectorStore
        s = ChromaVectorStore("persisted", FakeEmbeddings(), path=Path({str(path)!r}))
        s.add_texts(["alpha beta", "gamma delta"], [{{"n": 1}}, {{"n": 2}}], ids=["x", "y"])
        """
    )
    s = ChromaVectorStore("persisted", FakeEmbeddings(), path=path, create=False)
    assert s.count() == 2
    assert s.similarity_search("gamma", k=1)[0] == Document(
        page_content="gamma delta", metadata={"n": 2}, id="y"
    )
    # ...and the other way round: what this process writes, a new process reads.
    s.delete(["x"])
    got = _run(
        f"""
        import json
        from pathlib import Path
        from llamachain.testing import FakeEmbeddings
        from llamachain.vectorstores import ChromaVectorStore
        s = ChromaVectorStore("persisted", FakeEmbeddings(), path=Path({str(path)!r}))
        print(json.dumps(s.get()["ids"]))
        """
    )
    assert json.loads(got) == ["y"]


def test_same_directory_twice_in_one_process(tmp_path):
    a = ChromaVectorStore("shared", FakeEmbeddings(), path=tmp_path / "kb")
    b = ChromaVectorStore("shared", FakeEmbeddings(), path=tmp_path / "kb" / ".." / "kb")
    a.add_texts(["one"], ids=["1"])
    assert b.count() == 1
    c = ChromaVectorStore("shared", FakeEmbeddings(), client=make_client(path=tmp_path / "kb"))
    assert c.get_by_ids(["1"])[0].page_content == "one"


def test_default_location_is_settings_kb_dir(tmp_path):
    settings = Settings(home=tmp_path / "home")
    s = ChromaVectorStore("in-home", FakeEmbeddings(), settings=settings)
    s.add_texts(["hello"])
    assert s.location == str((tmp_path / "home" / "kb").resolve())
    assert (tmp_path / "home" / "kb" / "chroma.sqlite3").exists()


def test_upsert_by_id_replaces(store):
    store.add_texts(["cats hunt mice at night"], [{"kind": "pet", "legs": 4}], ids=["a0"])
    assert store.count() == 5
    [doc] = store.get_by_ids(["a0"])
    assert doc.page_content == "cats hunt mice at night"
    assert doc.metadata == {"kind": "pet", "legs": 4}
    assert store.similarity_search("hunt mice", k=1)[0].id == "a0"


def test_generated_ids_and_document_ids(store):
    ids = store.add_documents(
        [Document(page_content="owls hoot", id="owl"), Document(page_content="bats fly")]
    )
    assert ids[0] == "owl"
    assert len(ids[1]) == 32 and int(ids[1], 16) >= 0  # uuid4 hex
    assert {d.id for d in store.get_by_ids(ids)} == set(ids)


def test_delete_by_ids_and_by_where(store):
    revision = store.revision
    store.delete(["a0", "nope"])
    assert store.revision > revision
    assert store.count() == 4
    store.delete(where={"kind": "wild"})
    assert sorted(store.get()["ids"]) == ["a1", "a2"]
    store.delete(["a1", "a2"], where={"legs": 2})  # both must hold
    assert store.get()["ids"] == ["a1"]
    with pytest.raises(ConfigError, match="delete_collection"):
        store.delete()


def test_get_by_ids_follows_the_requested_order(store):
    docs = store.get_by_ids(["a3", "missing", "a0", "a3", "a2"])
    assert [d.id for d in docs] == ["a3", "a0", "a2"]
    assert docs[0].page_content == ANIMALS[3][0]
    assert docs[0].metadata == ANIMALS[3][1]
    assert store.get_by_ids([]) == []


def test_get_passes_through(store):
    got = store.get(where={"source": "c.pdf"}, include=["metadatas"])
    assert sorted(got["ids"]) == ["a3", "a4"]
    assert all(m["source"] == "c.pdf" for m in got["metadatas"])
    assert len(store.get(limit=2, offset=1)["ids"]) == 2


def test_scores_are_similarities_higher_is_closer(store):
    pairs = store.similarity_search_with_score("cats purr and sleep all day", k=5)
    assert pairs[0][0].id == "a0"
    assert pairs[0][1] == pytest.approx(1.0, abs=1e-5)  # the same text
    scores = [s for _, s in pairs]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 - 1e-6 <= s <= 1.0 + 1e-6 for s in scores)
    # The sleeping parrot shares words with the query; the shark does not.
    by_id = {d.id: s for d, s in pairs}
    assert by_id["a2"] > by_id["a3"]


def test_relevance_scores_are_in_unit_interval(store):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # LangChain warns when a score leaves [0, 1]
        pairs = store.similarity_search_with_relevance_scores("sleep", k=5)
    assert len(pairs) == 5
    assert all(0.0 <= s <= 1.0 for _, s in pairs)
    similar = dict((d.id, s) for d, s in store.similarity_search_with_score("sleep", k=5))
    for doc, rel in pairs:
        assert rel == pytest.approx((1 + similar[doc.id]) / 2)
    kept = store.similarity_search_with_relevance_scores("sleep", k=5, score_threshold=0.6)
    assert kept and all(s >= 0.6 for _, s in kept)


def test_search_by_vector(store):
    vec = FakeEmbeddings().embed_query("eagles fly")
    assert store.similarity_search_by_vector(vec, k=1)[0].id == "a4"


def test_filters(store):
    def ids(**kw):
        return sorted(d.id for d in store.similarity_search("animal", k=10, **kw))

    assert ids(filter={"kind": "wild"}) == ["a3", "a4"]
    assert ids(filter={"legs": {"$gte": 2}, "kind": "pet"}) == ["a0", "a1", "a2"]
    assert ids(filter={"$or": [{"legs": 0}, {"source": "b.md"}]}) == ["a2", "a3"]
    assert ids(filter={"source": {"$in": ["a.md", "c.pdf"]}}) == ["a0", "a1", "a3", "a4"]
    assert ids(filter={"source": {"$ne": "a.md"}}) == ["a2", "a3", "a4"]
    assert ids(where_document={"$contains": "sleep"}) == ["a0", "a2"]
    assert ids(filter={"kind": "none"}) == []


def test_bad_filter_and_bad_arguments(store):
    with pytest.raises(ConfigError, match="invalid filter"):
        store.similarity_search("x", filter={"legs": {"$gt": "2"}})
    with pytest.raises(ConfigError, match="unknown arguments"):
        store.similarity_search("x", where={"kind": "pet"})
    with pytest.raises(ConfigError, match="dict"):
        store.add_texts(["x"], [{"nested": {"a": 1}}])
    with pytest.raises(ConfigError, match=r"invalid where_document.*'\$like'"):
        store.similarity_search("x", where_document={"$like": "x"})


def test_mmr_returns_diverse_results(tmp_path):
    s = ChromaVectorStore("mmr", FakeEmbeddings(), path=tmp_path)
    s.add_texts(
        [
            "red apples and green apples",
            "red apples and green apples!",
            "red apples and green apples.",
            "apples grow in red orchards",
        ],
        ids=["dup1", "dup2", "dup3", "other"],
    )
    plain = [d.id for d in s.similarity_search("red apples green", k=2)]
    assert set(plain) <= {"dup1", "dup2", "dup3"}
    mmr = [d.id for d in s.max_marginal_relevance_search("red apples green", k=2, fetch_k=4)]
    assert mmr[0] in {"dup1", "dup2", "dup3"}
    assert mmr[1] == "other"
    # lambda_mult=1 is plain relevance.
    same = s.max_marginal_relevance_search("red apples green", k=2, fetch_k=4, lambda_mult=1.0)
    assert {d.id for d in same} <= {"dup1", "dup2", "dup3"}


def test_k_beyond_size_and_zero(store):
    assert len(store.similarity_search("x", k=50)) == 5
    assert store.similarity_search("x", k=0) == []


def test_upsert_embedded_batches_beyond_the_client_limit(tmp_path):
    s = ChromaVectorStore("bulk", FakeEmbeddings(dimension=8), path=tmp_path)
    n = s.client.get_max_batch_size() + 7
    emb = FakeEmbeddings(dimension=8)
    texts = [f"record number {i}" for i in range(n)]
    vectors = emb.embed_documents(texts)
    s.upsert_embedded([f"r{i}" for i in range(n)], texts, vectors, [{"i": i} for i in range(n)])
    assert s.count() == n
    assert emb.calls == n  # the store embedded nothing itself
    [doc] = s.get_by_ids([f"r{n - 1}"])
    assert doc.metadata == {"i": n - 1}


def test_upsert_embedded_keeps_the_last_of_repeated_ids(tmp_path):
    s = ChromaVectorStore("repeat", FakeEmbeddings(dimension=4), path=tmp_path)
    v = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]
    s.upsert_embedded(["x", "x"], ["first", "second"], v, None)
    assert [d.page_content for d in s.get_by_ids(["x"])] == ["second"]


def test_embedding_model_is_recorded(store):
    assert store.collection.metadata[MODEL_KEY] == "fake-embeddings-64"
    assert store.collection.metadata[DIMENSION_KEY] == 64
    assert store.collection.configuration_json["hnsw"]["space"] == "cosine"


def test_collection_metadata_is_kept(tmp_path):
    s = ChromaVectorStore(
        "with-meta", FakeEmbeddings(), path=tmp_path, collection_metadata={"owner": "me"}
    )
    assert s.collection.metadata["owner"] == "me"
    assert s.collection.metadata[MODEL_KEY] == "fake-embeddings-64"


class _RenamedFake(FakeEmbeddings):
    @property
    def model_id(self) -> str:
        return "another-model"


def test_another_embedding_model_is_refused(store, tmp_path):
    with pytest.raises(EmbeddingMismatchError) as info:
        ChromaVectorStore("animals", _RenamedFake(), path=tmp_path / "kb")
    message = str(info.value)
    assert "animals was built with fake-embeddings-64 (64-d)" in message
    assert "you are using another-model (64-d)" in message
    assert "re-ingest" in message
    with pytest.raises(EmbeddingMismatchError, match=r"\(32-d\)"):
        ChromaVectorStore("animals", FakeEmbeddings(dimension=32), path=tmp_path / "kb")


def test_dimension_mismatch_of_an_unidentified_embedder(tmp_path):
    s = ChromaVectorStore("plain", DeterministicFakeEmbedding(size=6), path=tmp_path)
    s.add_texts(["one", "two"])
    assert s.collection.metadata[MODEL_KEY] == "DeterministicFakeEmbedding"
    assert s.collection.metadata[DIMENSION_KEY] == 6
    other = ChromaVectorStore("plain", DeterministicFakeEmbedding(size=8), path=tmp_path)
    with pytest.raises(EmbeddingMismatchError, match=r"\(6-d\).*\(8-d\)"):
        other.similarity_search("one")
    with pytest.raises(EmbeddingMismatchError):
        other.add_texts(["three"])
    assert s.count() == 2


def test_unrecorded_collection_checks_stored_vectors(tmp_path):
    client = make_client(path=tmp_path)
    col = client.create_collection("foreign", embedding_function=None)
    col.add(ids=["f"], embeddings=[[0.1] * 5], documents=["from elsewhere"])
    with pytest.raises(EmbeddingMismatchError, match=r"5-d.*64-d"):
        ChromaVectorStore("foreign", FakeEmbeddings(), client=client)
    # A matching embedder adopts the collection and records itself.
    s = ChromaVectorStore("foreign", FakeEmbeddings(dimension=5), client=client)
    assert s.collection.metadata[DIMENSION_KEY] == 5


def test_l2_collection_scores_still_mean_similarity(tmp_path):
    client = make_client(path=tmp_path)
    client.create_collection("euclid", embedding_function=None)  # Chroma's default space: l2
    s = ChromaVectorStore("euclid", FakeEmbeddings(), client=client)
    s.add_texts(["cats purr", "sharks swim"], ids=["c", "s"])
    pairs = s.similarity_search_with_score("cats purr", k=2)
    assert pairs[0][0].id == "c"
    assert pairs[0][1] == pytest.approx(1.0, abs=1e-5)
    assert pairs[1][1] < pairs[0][1]


def test_missing_collection_without_create(tmp_path):
    ChromaVectorStore("exists", FakeEmbeddings(), path=tmp_path)
    with pytest.raises(KnowledgeBaseError, match=r"'nope'.*there are: exists"):
        ChromaVectorStore("nope", FakeEmbeddings(), path=tmp_path, create=False)


def test_invalid_collection_name(tmp_path):
    with pytest.raises(ConfigError, match="invalid collection name"):
        ChromaVectorStore("a", FakeEmbeddings(), path=tmp_path)


def test_no_embedding_can_still_read_and_write_vectors(store, tmp_path):
    raw = ChromaVectorStore("animals", None, path=tmp_path / "kb")
    assert raw.count() == 5
    assert raw.get_by_ids(["a1"])[0].page_content == ANIMALS[1][0]
    with pytest.raises(ConfigError, match="embedding="):
        raw.similarity_search("cats")


def test_from_texts_and_from_documents(tmp_path):
    s = ChromaVectorStore.from_texts(
        ["one fish", "two fish"], FakeEmbeddings(), ids=["1", "2"], path=tmp_path
    )
    assert s.collection_name == "langchain"
    assert s.count() == 2
    d = ChromaVectorStore.from_documents(
        [Document(page_content="red fish", metadata={"c": "red"}, id="r")],
        FakeEmbeddings(),
        collection_name="docs",
        path=tmp_path,
    )
    assert d.get_by_ids(["r"])[0].metadata == {"c": "red"}


def test_delete_collection(store, tmp_path):
    store.delete_collection()
    with pytest.raises(KnowledgeBaseError):
        ChromaVectorStore("animals", FakeEmbeddings(), path=tmp_path / "kb", create=False)


async def test_async_methods(store):
    ids = await store.aadd_texts(["moles dig tunnels"], ids=["m"])
    assert ids == ["m"]
    docs = await store.asimilarity_search("dig tunnels", k=1)
    assert docs[0].id == "m"
    assert [d.id for d in await store.aget_by_ids(["m", "a0"])] == ["m", "a0"]
    await store.adelete(["m"])
    assert store.count() == 5


def test_filtered_search_agrees_with_chromas_own_filtering(tmp_path):
    """Filters are applied to a wide unfiltered search first, and by Chroma when too few pass:
    either way the results are Chroma's filtered results."""
    emb = FakeEmbeddings()
    s = ChromaVectorStore("filtered", emb, path=tmp_path)
    texts = [f"note {i} about topic {i % 7} and colour {i % 5}" for i in range(300)]
    metas = [{"topic": i % 7, "colour": i % 5, "rare": i in (17, 251)} for i in range(300)]
    s.add_texts(texts, metas, ids=[f"n{i:03d}" for i in range(300)])
    query = "note about topic 3 and colour 2"
    vector = emb.embed_query(query)
    for where, k in [
        ({"topic": 3}, 5),  # common: answered from the wide search
        ({"colour": {"$in": [1, 2]}}, 10),
        ({"rare": True}, 5),  # only two match: Chroma filters
        ({"$and": [{"topic": 3}, {"colour": 2}]}, 4),
        ({"#document": {"$contains": "topic 6"}}, 3),
    ]:
        expected = s.collection.query(
            query_embeddings=[vector], n_results=k, where=where, include=["distances"]
        )
        got = s.similarity_search_with_score(query, k=k, filter=where)
        want = list(zip(expected["ids"][0], expected["distances"][0]))
        assert [1 - sc for _, sc in got] == pytest.approx([x for _, x in want]), where
        # Equally distant records may come in another order; strictly closer ones may not.
        last = want[-1][1]
        assert [d.id for d, sc in got if 1 - sc < last - 1e-6] == [
            i for i, x in want if x < last - 1e-6
        ]
        for doc, _ in got:
            assert doc.metadata == metas[int(doc.id[1:])]
            assert _where.matches(doc.metadata, _where.normalize(where), doc.page_content)
    assert sorted(d.id for d in s.similarity_search(query, k=5, filter={"rare": True})) == [
        "n017",
        "n251",
    ]


def test_a_new_collection_does_not_inherit_list_metadata_of_a_deleted_one(tmp_path):
    """chromadb 1.5.9 keeps list-valued metadata rows of a dropped collection and hands them to
    the records of the next one; delete_collection() empties the collection first."""
    from llamachain.testing import FakeEmbeddings

    emb = FakeEmbeddings()
    old = ChromaVectorStore("first", emb, path=tmp_path)
    old.add_texts(["a", "b"], metadatas=[{"tags": ["x", "y"]}, {"tags": ["z"]}])
    old.delete_collection()
    new = ChromaVectorStore("second", emb, path=tmp_path)
    ids = new.add_texts(["foo", "bar"], metadatas=[{"n": 1}, {"n": 2}])
    assert [d.metadata for d in new.get_by_ids(ids)] == [{"n": 1}, {"n": 2}]
