"""The collection's revision token: replaced by every write, kept with the other metadata, one
marker and one touch per write batch (a real local Chroma directory)."""

from __future__ import annotations

import pytest

from llamachain._chroma import REVISION_KEY, make_client
from llamachain.testing import FakeEmbeddings
from llamachain.vectorstores import DIMENSION_KEY, MODEL_KEY, ChromaVectorStore


@pytest.fixture
def store(tmp_path):
    return ChromaVectorStore(
        "revisions", FakeEmbeddings(), path=tmp_path, collection_metadata={"owner": "me"}
    )


def _stored(store: ChromaVectorStore) -> dict:
    """The metadata as Chroma has it now (not the copy on the collection object)."""
    return dict(store.client.get_collection(store.collection_name).metadata or {})


def test_touch_keeps_the_other_metadata_and_the_configuration(store):
    before = _stored(store)
    assert before[MODEL_KEY] == "fake-embeddings-64" and before["owner"] == "me"
    token = store.touch()
    after = _stored(store)
    assert after == {**before, REVISION_KEY: token}
    assert store.revision_token() == token
    assert store.client.get_collection("revisions").configuration_json["hnsw"]["space"] == "cosine"
    assert store.touch() != token


def test_every_write_replaces_the_token(store):
    seen = {store.revision_token()}
    store.add_texts(["alpha", "beta"], ids=["a", "b"])
    seen.add(store.revision_token())
    store.update_metadatas(["a"], [{"k": 1}])
    seen.add(store.revision_token())
    store.delete(["b"])
    seen.add(store.revision_token())
    store.upsert_embedded(["c"], ["gamma"], FakeEmbeddings().embed_documents(["gamma"]))
    seen.add(store.revision_token())
    assert None in seen and len(seen - {None}) == 4  # no token before the first write
    assert _stored(store)["owner"] == "me"
    # Calls that write nothing leave it alone.
    token = store.revision_token()
    store.add_texts([])
    store.delete([])
    store.update_metadatas([], [])
    assert store.revision_token() == token


def test_a_write_batch_touches_once_at_the_end(store):
    store.add_texts(["alpha"], ids=["a"])
    first = store.revision_token()
    revision = store.revision
    with store.write_batch():
        assert store.revision_token() == first  # nothing written yet
        store.add_texts(["beta"], ids=["b"])
        assert store.revision_token() is None  # a writing marker
        assert _stored(store)[REVISION_KEY].startswith("writing-")
        with store.write_batch():  # nested: the outer block touches
            store.delete(["a"])
        assert store.revision_token() is None
    last = store.revision_token()
    assert last not in (None, first)
    assert store.revision > revision
    with store.write_batch():  # nothing written: nothing touched
        pass
    assert store.revision_token() == last


def test_a_failed_batch_still_touches(store):
    store.add_texts(["alpha"], ids=["a"])
    first = store.revision_token()
    with pytest.raises(RuntimeError), store.write_batch():
        store.add_texts(["beta"], ids=["b"])
        raise RuntimeError("the ingestion broke")
    assert store.revision_token() not in (None, first)


def test_touch_inside_a_batch_then_more_writes(store):
    with store.write_batch():
        store.add_texts(["alpha"], ids=["a"])
        token = store.touch()
        assert store.revision_token() == token
        store.add_texts(["beta"], ids=["b"])  # marks again...
        assert store.revision_token() is None
    assert store.revision_token() not in (None, token)  # ...and touches at the end


def test_another_store_object_sees_the_token_and_its_metadata_survives(store, tmp_path):
    other = ChromaVectorStore("revisions", FakeEmbeddings(), path=tmp_path)
    # Metadata added after `store` fetched its collection is kept by its touch.
    other.collection.modify(metadata={**_stored(other), "added_later": 1})
    token = store.touch()
    assert other.revision_token() == token
    assert _stored(other)["added_later"] == 1
    other.add_texts(["gamma"], ids=["g"])
    assert store.revision_token() == other.revision_token() != token


def test_legacy_collection_with_hnsw_space_in_its_metadata(tmp_path):
    client = make_client(path=tmp_path)
    client.create_collection(
        "legacy-l2",
        metadata={"hnsw:space": "l2", "hnsw:M": 32, "note": "old"},
        embedding_function=None,
    )
    store = ChromaVectorStore("legacy-l2", FakeEmbeddings(), client=client)
    store.add_texts(["cats purr", "sharks swim"], ids=["c", "s"])
    token = store.revision_token()
    assert token is not None
    meta = _stored(store)
    assert meta["note"] == "old" and meta["hnsw:M"] == 32 and meta[DIMENSION_KEY] == 64
    assert client.get_collection("legacy-l2").configuration_json["hnsw"]["space"] == "l2"
    pairs = store.similarity_search_with_score("cats purr", k=2)
    assert pairs[0][0].id == "c" and pairs[0][1] == pytest.approx(1.0, abs=1e-5)
