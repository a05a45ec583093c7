import subprocess
import sys

import llamachain


def test_all_is_sorted_and_pinned():
    assert llamachain.__all__ == sorted(llamachain.__all__)
    assert llamachain.__all__ == [
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


def test_every_export_resolves():
    for name in llamachain.__all__:
        assert getattr(llamachain, name) is not None


def test_import_is_lazy():
    heavy = ("llama_cpp", "langchain_core", "chromadb", "torch")
    code = f"import llamachain, sys; print(*[m in sys.modules for m in {heavy!r}])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False", "False"]


def test_construction_needs_no_model_file(tmp_path):
    missing = tmp_path / "nope.gguf"
    chat = llamachain.ChatLlama(model=str(missing))
    llm = llamachain.LlamaLLM(model_path=str(missing))
    assert chat.model == llm.model == str(missing)
    engine = llamachain.LlamaEngine(missing)
    assert not engine.is_loaded
