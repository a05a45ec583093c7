"""LangChain's standard embeddings suite on the real models.

``LocalEmbeddings`` runs the bundled all-MiniLM-L6-v2; ``LlamaEmbeddings`` the bundled
SmolLM2-135M GGUF (a chat model, so the suite checks mechanics, not retrieval quality).
Instances share their loaded model through llamachain's caches, so each loads once.
"""

from __future__ import annotations

from langchain_tests.integration_tests import EmbeddingsIntegrationTests

from llamachain.embeddings import LlamaEmbeddings, LocalEmbeddings


class TestLocalEmbeddingsStandard(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[LocalEmbeddings]:
        return LocalEmbeddings


class TestLocalEmbeddingsOnnxStandard(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[LocalEmbeddings]:
        return LocalEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"backend": "onnx"}


class TestLlamaEmbeddingsStandard(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[LlamaEmbeddings]:
        return LlamaEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"n_ctx": 64}
