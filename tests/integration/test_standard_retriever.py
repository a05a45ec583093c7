"""LangChain's standard retriever suite for HybridRetriever (each mode)."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_tests.integration_tests.retrievers import RetrieversIntegrationTests

from llamachain.retrievers import HybridRetriever
from llamachain.testing import FakeEmbeddings
from llamachain.vectorstores import ChromaVectorStore

TEXTS = [
    "Chroma stores vectors and metadata for retrieval.",
    "BM25 ranks documents by the words they share with the query.",
    "Reciprocal rank fusion merges ranked lists from several retrievers.",
    "Dense retrieval compares embeddings by cosine similarity.",
    "llama.cpp runs GGUF models on a CPU.",
]


class _Base(RetrieversIntegrationTests):
    mode = "hybrid"

    @pytest.fixture(autouse=True)
    def _store(self, tmp_path) -> None:
        self.store = ChromaVectorStore("standard-retriever", FakeEmbeddings(), path=tmp_path)
        self.store.add_texts(TEXTS, [{"n": i} for i in range(len(TEXTS))])

    @property
    def retriever_constructor(self) -> type[HybridRetriever]:
        return HybridRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"vectorstore": self.store, "mode": self.mode}

    @property
    def retriever_query_example(self) -> str:
        return "how are retrieved documents ranked and fused?"


class TestHybridRetriever(_Base):
    mode = "hybrid"


class TestDenseRetriever(_Base):
    mode = "dense"


class TestBM25Retriever(_Base):
    # BM25 returns only documents sharing a word with the query: this one shares words with all.
    mode = "bm25"

    @property
    def retriever_query_example(self) -> str:
        return "documents retrieval vectors rank fusion models query"
