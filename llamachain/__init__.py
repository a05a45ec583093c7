"""llamachain: local GGUF models on a CPU, as LangChain LLMs and chat models, with your documents.

Heavy dependencies (llama_cpp, langchain_core) load only when a name that needs them is used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "ChatLlama": "llamachain.chat_models",
    "ChromaVectorStore": "llamachain.vectorstores",
    "ConfigError": "llamachain.errors",
    "ContextOverflowError": "llamachain.errors",
    "DocumentInput": "llamachain.documents",
    "DocumentLoadError": "llamachain.errors",
    "DocumentStore": "llamachain.documents",
    "EmbeddingError": "llamachain.errors",
    "EmbeddingMismatchError": "llamachain.errors",
    "GroundedQA": "llamachain.qa",
    "HybridRetriever": "llamachain.retrievers",
    "IngestSummary": "llamachain.ingest.pipeline",
    "KnowledgeBase": "llamachain.knowledge",
    "KnowledgeBaseError": "llamachain.errors",
    "LlamaChainError": "llamachain.errors",
    "LlamaEmbeddings": "llamachain.embeddings",
    "LlamaEngine": "llamachain.engine",
    "LlamaLLM": "llamachain.llms",
    "LocalEmbeddings": "llamachain.embeddings",
    "ModelFileError": "llamachain.errors",
    "QAResult": "llamachain.qa",
    "SamplingParams": "llamachain.engine",
    "Settings": "llamachain.settings",
    "StoreError": "llamachain.errors",
    "model_cache": "llamachain.engine",
    "read_model_info": "llamachain.models",
}

__all__ = [
    "ChatLlama",
    "ChromaVectorStore",
    "ConfigError",
    "ContextOverflowError",
    "DocumentInput",
    "DocumentLoadError",
    "DocumentStore",
    "EmbeddingError",
    "EmbeddingMismatchError",
    "GroundedQA",
    "HybridRetriever",
    "IngestSummary",
    "KnowledgeBase",
    "KnowledgeBaseError",
    "LlamaChainError",
    "LlamaEmbeddings",
    "LlamaEngine",
    "LlamaLLM",
    "LocalEmbeddings",
    "ModelFileError",
    "QAResult",
    "SamplingParams",
    "Settings",
    "StoreError",
    "model_cache",
    "read_model_info",
]

if TYPE_CHECKING:
    from llamachain.chat_models import ChatLlama
    from llamachain.documents import DocumentInput, DocumentStore
    from llamachain.embeddings import LlamaEmbeddings, LocalEmbeddings
    from llamachain.engine import LlamaEngine, SamplingParams, model_cache
    from llamachain.errors import (
        ConfigError,
        ContextOverflowError,
        DocumentLoadError,
        EmbeddingError,
        EmbeddingMismatchError,
        KnowledgeBaseError,
        LlamaChainError,
        ModelFileError,
        StoreError,
    )
    from llamachain.ingest.pipeline import IngestSummary
    from llamachain.knowledge import KnowledgeBase
    from llamachain.llms import LlamaLLM
    from llamachain.models import read_model_info
    from llamachain.qa import GroundedQA, QAResult
    from llamachain.retrievers import HybridRetriever
    from llamachain.settings import Settings
    from llamachain.vectorstores import ChromaVectorStore


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llamachain' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
