"""Layer 2: the LangChain-free llama.cpp engine."""

from llamachain.engine.cache import LoadedModel, LoadParams, ModelCache, model_cache
from llamachain.engine.engine import ContextTruncatedWarning, LlamaEngine
from llamachain.engine.generation import (
    Chunk,
    Completion,
    SamplingParams,
    StopMatcher,
    TokenLogprob,
    Usage,
)
from llamachain.engine.templates import ChatFormat, format_names, get_format, register_format

__all__ = [
    "ChatFormat",
    "Chunk",
    "Completion",
    "ContextTruncatedWarning",
    "LlamaEngine",
    "LoadParams",
    "LoadedModel",
    "ModelCache",
    "SamplingParams",
    "StopMatcher",
    "TokenLogprob",
    "Usage",
    "format_names",
    "get_format",
    "model_cache",
    "register_format",
]
