"""The Python evaluator of Chroma ``where`` filters, checked against Chroma itself.

The expected id sets below were read off Chroma 1.x; ``test_matches_agrees_with_chroma`` runs
every filter through a real (embedded, on-disk) Chroma collection too, so a Chroma upgrade that
changes a rule shows up here.
"""

from __future__ import annotations

import pytest

from llamachain import _where
from llamachain.errors import ConfigError

RECORDS = {
    "a": ({"s": "x", "n": 1, "f": 1.5, "b": True, "tags": ["p", "q"]}, "Hello World"),
    "b": ({"s": "y", "n": 2, "b": False}, "foo bar"),
    "c": ({"n": 1.0}, "hello"),
    "d": ({"s": "1", "n": 3, "tags": [1, 2]}, "world-x"),
    "e": ({"b": 1, "n": True}, "HELLO there"),
}

CASES = [
    ({"s": "x"}, "a"),
    ({"s": {"$eq": "x"}}, "a"),
    ({"s": {"$ne": "x"}}, "bcde"),  # negations also match records without the key
    ({"s": {"$nin": ["x"]}}, "bcde"),
    ({"s": {"$in": ["x", "y"]}}, "ab"),
    ({"s": 1}, ""),  # a string never equals a number
    ({"n": 1}, "ac"),  # ints and floats compare by value
    ({"n": 1.0}, "ac"),
    ({"n": {"$ne": 1}}, "bde"),
    ({"n": {"$in": [1, 3]}}, "acd"),
    ({"n": {"$nin": [1.0]}}, "bde"),
    ({"n": {"$eq": True}}, "e"),  # a bool only equals a bool
    ({"n": {"$in": [True]}}, "e"),
    ({"b": True}, "a"),
    ({"b": 1}, "e"),
    ({"b": {"$ne": True}}, "bcde"),
    ({"n": {"$gt": 1}}, "bd"),  # comparisons skip bools
    ({"n": {"$gte": 1.0}}, "abcd"),
    ({"n": {"$lt": 3}}, "abc"),
    ({"n": {"$lte": 1}}, "ac"),
    ({"f": {"$lt": 2}}, "a"),
    ({"f": {"$ne": 1.5}}, "bcde"),
    ({"s": {"$gt": 0}}, ""),  # strings are not numbers
    ({"b": {"$gt": 0}}, "e"),
    ({"tags": {"$contains": "p"}}, "a"),
    ({"tags": {"$not_contains": "p"}}, "bcde"),
    ({"tags": {"$contains": 1}}, "d"),
    ({"tags": {"$contains": 1.0}}, ""),  # list membership is exact about the type
    ({"tags": {"$contains": True}}, ""),
    ({"tags": "p"}, ""),  # a list never equals a scalar
    ({"tags": {"$in": ["p"]}}, ""),
    ({"tags": {"$nin": ["p"]}}, "abcde"),
    ({"tags": {"$ne": "p"}}, "abcde"),
    ({"s": {"$contains": "x"}}, ""),  # $contains on a metadata string is not a substring test
    ({"s": {"$not_contains": "x"}}, "abcde"),
    ({"missing": {"$ne": 0}}, "abcde"),
    ({"missing": 0}, ""),
    ({"$or": [{"s": "x"}, {"n": 3}]}, "ad"),
    ({"$and": [{"s": {"$ne": "x"}}, {"n": {"$lt": 5}}]}, "bcd"),
    ({"$and": [{"n": 1}, {"$or": [{"s": "x"}, {"s": {"$ne": "zz"}}]}]}, "ac"),
    ({"$or": [{"$and": [{"n": {"$gte": 2}}, {"s": {"$in": ["y", "1"]}}]}, {"b": False}]}, "bd"),
    ({"#document": {"$contains": "hello"}}, "c"),  # case-sensitive substring
    ({"#document": {"$not_contains": "hello"}}, "abde"),
    ({"$and": [{"#document": {"$contains": "o"}}, {"n": {"$lte": 2}}]}, "abc"),
]


def _matching(where: dict) -> str:
    norm = _where.normalize(where)
    assert norm is not None
    return "".join(
        i for i, (meta, doc) in sorted(RECORDS.items()) if _where.matches(meta, norm, doc)
    )


@pytest.mark.parametrize(("where", "expected"), CASES, ids=[str(c[0]) for c in CASES])
def test_matches(where, expected):
    assert _matching(where) == expected


def test_matches_agrees_with_chroma(tmp_path):
    """Every case above gives the same ids through a real Chroma collection."""
    import chromadb
    from chromadb.config import Settings

    client = chromadb.PersistentClient(
        path=str(tmp_path), settings=Settings(anonymized_telemetry=False)
    )
    col = client.create_collection("where-probe", embedding_function=None)
    ids = sorted(RECORDS)
    col.add(
        ids=ids,
        embeddings=[[1.0, float(n)] for n in range(len(ids))],
        metadatas=[RECORDS[i][0] for i in ids],
        documents=[RECORDS[i][1] for i in ids],
    )
    for where, _ in CASES:
        got = "".join(sorted(col.get(where=_where.normalize(where), include=[])["ids"]))
        assert got == _matching(where), where


def test_plain_dict_with_several_keys_means_and():
    assert _where.normalize({"s": "x", "n": 1}) == {"$and": [{"s": "x"}, {"n": 1}]}
    assert _matching({"s": {"$ne": "x"}, "n": {"$gte": 2}}) == "bd"


def test_single_item_logical_lists_are_unwrapped():
    assert _where.normalize({"$and": [{"s": "x"}]}) == {"s": "x"}
    assert _where.normalize({"$or": [{"$and": [{"s": "x"}, {"n": 1}]}]}) == {
        "$and": [{"s": "x"}, {"n": 1}]
    }


def test_tuples_become_lists():
    assert _where.normalize({"n": {"$in": (1, 2)}}) == {"n": {"$in": [1, 2]}}


def test_none_means_no_filter():
    assert _where.normalize(None) is None
    assert not _where.uses_document(None)


@pytest.mark.parametrize(
    ("where", "problem"),
    [
        ({}, "non-empty dict"),
        ([{"s": "x"}], "non-empty dict"),
        ({"$and": []}, "non-empty list"),
        ({"$or": {"s": "x"}}, "non-empty list"),
        ({"$not": {"s": "x"}}, "unknown operator $not"),
        ({"s": {"$regex": "x"}}, "unknown operator '$regex'"),
        ({"s": {"$eq": "x", "$ne": "y"}}, "exactly one operator"),
        ({"n": {"$gt": "3"}}, "compares numbers"),
        ({"n": {"$gt": True}}, "compares numbers"),
        ({"n": {"$in": []}}, "non-empty list"),
        ({"n": {"$in": 3}}, "non-empty list"),
        ({"n": {"$in": [1, "1"]}}, "one type"),
        ({"n": {"$in": [1, 2.5]}}, "one type"),
        ({"s": ["x"]}, "string, number or bool"),
        ({"s": None}, "string, number or bool"),
        ({"s": {"$eq": {"x": 1}}}, "string, number or bool"),
        ({"#document": "hello"}, "#document takes"),
        ({"#document": {"$eq": "hello"}}, "#document takes"),
        ({"#document": {"$contains": ""}}, "#document takes"),
    ],
)
def test_invalid_filters_name_the_filter(where, problem):
    with pytest.raises(ConfigError) as info:
        _where.normalize(where)
    message = str(info.value)
    assert problem in message
    assert message.startswith("invalid filter ")
    assert "$and" in message  # shows what a filter looks like


def test_uses_document():
    assert _where.uses_document({"#document": {"$contains": "x"}})
    assert _where.uses_document({"$or": [{"s": "x"}, {"#document": {"$contains": "x"}}]})
    assert not _where.uses_document({"$and": [{"s": "x"}, {"n": 1}]})


def test_document_condition_needs_the_text():
    with pytest.raises(ValueError, match="document="):
        _where.matches({}, {"#document": {"$contains": "x"}})


def test_canonical_is_a_stable_cache_key():
    a = {"$and": [{"s": "x"}, {"n": {"$in": [1, 2]}}]}
    b = {"$and": [{"s": "x"}, {"n": {"$in": [1, 2]}}]}
    assert _where.canonical(a) == _where.canonical(b)
    assert _where.canonical({"s": "x"}) != _where.canonical({"s": "y"})
    assert _where.canonical({"n": 1}) != _where.canonical({"n": "1"})


def test_missing_metadata_is_empty():
    assert _where.matches(None, {"s": {"$ne": "x"}})
    assert not _where.matches(None, {"s": "x"})
