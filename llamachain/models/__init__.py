"""Layer 1: find, inspect and validate model files."""

from llamachain.models.gguf_info import ModelInfo, check_header, read_model_info
from llamachain.models.registry import (
    DEFAULT_MODEL,
    KNOWN_MODELS,
    known_models,
    resolve_model_path,
)

__all__ = [
    "DEFAULT_MODEL",
    "KNOWN_MODELS",
    "ModelInfo",
    "check_header",
    "known_models",
    "read_model_info",
    "resolve_model_path",
]
