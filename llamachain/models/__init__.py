"""Layer 1: find, inspect, validate and quantize model files."""

from llamachain.models.gguf_info import ModelInfo, check_header, read_model_info
from llamachain.models.quantize import QuantizeResult, quantize, quantized_variant
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
    "QuantizeResult",
    "check_header",
    "known_models",
    "quantize",
    "quantized_variant",
    "read_model_info",
    "resolve_model_path",
]
