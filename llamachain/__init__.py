"""llamachain: local GGUF models on a CPU, as LangChain LLMs and chat models.

Heavy dependencies (llama_cpp, langchain_core) load only when a name that needs them is used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "ChatLlama": "llamachain.chat_models",
    "ConfigError": "llamachain.errors",
    "ContextOverflowError": "llamachain.errors",
    "LlamaChainError": "llamachain.errors",
    "LlamaEngine": "llamachain.engine",
    "LlamaLLM": "llamachain.llms",
    "ModelFileError": "llamachain.errors",
    "SamplingParams": "llamachain.engine",
    "Settings": "llamachain.settings",
    "model_cache": "llamachain.engine",
    "read_model_info": "llamachain.models",
}

__all__ = [
    "ChatLlama",
    "ConfigError",
    "ContextOverflowError",
    "LlamaChainError",
    "LlamaEngine",
    "LlamaLLM",
    "ModelFileError",
    "SamplingParams",
    "Settings",
    "model_cache",
    "read_model_info",
]

if TYPE_CHECKING:
    from llamachain.chat_models import ChatLlama
    from llamachain.engine import LlamaEngine, SamplingParams, model_cache
    from llamachain.errors import (
        ConfigError,
        ContextOverflowError,
        LlamaChainError,
        ModelFileError,
    )
    from llamachain.llms import LlamaLLM
    from llamachain.models import read_model_info
    from llamachain.settings import Settings


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llamachain' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
