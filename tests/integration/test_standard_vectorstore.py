"""LangChain's standard vector-store suite, on a local Chroma directory and on a Chroma server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from langchain_tests.integration_tests.vectorstores import VectorStoreIntegrationTests

from llamachain._chroma import make_client
from llamachain.vectorstores import ChromaVectorStore

pytest_plugins = ["chroma_server"]


class TestChromaVectorStoreLocal(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, tmp_path) -> Iterator[ChromaVectorStore]:  # type: ignore[override]
        store = ChromaVectorStore("standard", self.get_embeddings(), path=tmp_path / "kb")
        try:
            yield store
        finally:
            store.delete_collection()


class TestChromaVectorStoreServer(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, chroma_server) -> Iterator[ChromaVectorStore]:  # type: ignore[override]
        client = make_client(host=chroma_server.host, port=chroma_server.port)
        store = ChromaVectorStore(
            f"standard-{uuid.uuid4().hex[:8]}", self.get_embeddings(), client=client
        )
        try:
            yield store
        finally:
            store.delete_collection()
