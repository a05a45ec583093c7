"""config.json -> LLaMA hyperparameters, the tensor shapes they imply, and the GGUF metadata.

Both the transformers 4 keys (``rope_theta``, ``rope_scaling``) and the transformers 5 ones
(``rope_parameters``) are read.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llamachain.errors import ModelFileError

logger = logging.getLogger(__name__)

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM")
_ROPE_TYPES = ("default", "linear", "yarn", "llama3")
_BLK = re.compile(r"^blk\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class LlamaParams:
    """The hyperparameters of a LLaMA checkpoint, as read from its ``config.json``."""

    architecture: str
    vocab_size: int
    dim: int
    n_ff: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    context_length: int
    rms_eps: float
    rope_theta: float
    rope_scaling: dict[str, Any] | None
    tied: bool
    config: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


def _int(config: dict[str, Any], key: str, path: Path, default: int | None = None) -> int:
    value = config.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ModelFileError(path, f"needs a positive integer {key!r} (found {value!r})")
    return value


def _rope(config: dict[str, Any], path: Path) -> tuple[float, dict[str, Any] | None]:
    """(rope_theta, rope scaling) from transformers 4 (rope_theta/rope_scaling) or 5 keys."""
    params = config.get("rope_parameters") or {}
    theta = float(config.get("rope_theta") or params.get("rope_theta") or 10000.0)
    scaling = config.get("rope_scaling") or params or None
    if not scaling:
        return theta, None
    kind = scaling.get("rope_type") or scaling.get("type") or "default"
    if kind not in _ROPE_TYPES:
        raise ModelFileError(
            path, f"uses rope scaling {kind!r}; supported: {', '.join(_ROPE_TYPES)}"
        )
    return theta, None if kind == "default" else {**scaling, "rope_type": kind}


def read_config(directory: Path) -> LlamaParams:
    """Validate ``config.json`` and return the LLaMA hyperparameters it declares."""
    path = directory / "config.json"
    if not path.is_file():
        raise ModelFileError(
            directory,
            "has no config.json; this is not a Hugging Face checkpoint directory (copy the "
            "model's config.json next to its weights)",
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(path, f"is not readable JSON ({e})") from e
    if not isinstance(config, dict):
        raise ModelFileError(path, "is not a JSON object; restore the model's config.json")
    archs = config.get("architectures") or []
    arch = next((a for a in archs if a in SUPPORTED_ARCHITECTURES), None)
    if arch is None:
        found = ", ".join(map(str, archs)) or f"model_type {config.get('model_type')!r}"
        raise ModelFileError(
            path,
            f"describes {found}; supported architectures: {', '.join(SUPPORTED_ARCHITECTURES)}",
        )
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key):
            raise ModelFileError(path, f"sets {key}; bias tensors are not supported")
    dim, n_head = _int(config, "hidden_size", path), _int(config, "num_attention_heads", path)
    head_dim = config.get("head_dim") or dim // n_head
    theta, scaling = _rope(config, path)
    if arch == "MistralForCausalLM" and config.get("sliding_window"):
        logger.warning(
            "%s: sliding_window=%s is not kept; llama.cpp attends to the whole context",
            path,
            config["sliding_window"],
        )
    return LlamaParams(
        architecture=arch,
        vocab_size=_int(config, "vocab_size", path),
        dim=dim,
        n_ff=_int(config, "intermediate_size", path),
        n_layer=_int(config, "num_hidden_layers", path),
        n_head=n_head,
        n_head_kv=_int(config, "num_key_value_heads", path, n_head),
        head_dim=int(head_dim),
        context_length=_int(config, "max_position_embeddings", path, 2048),
        rms_eps=float(config.get("rms_norm_eps") or 1e-5),
        rope_theta=theta,
        rope_scaling=scaling,
        tied=bool(config.get("tie_word_embeddings", False)),
        config=config,
    )


def expected_shape(gguf_name: str, p: LlamaParams) -> tuple[int, ...] | None:
    """The (rows, cols) a tensor must have in Hugging Face orientation, None if unknown."""
    q, kv = p.n_head * p.head_dim, p.n_head_kv * p.head_dim
    top = {
        "token_embd.weight": (p.vocab_size, p.dim),
        "output.weight": (p.vocab_size, p.dim),
        "output_norm.weight": (p.dim,),
    }
    if gguf_name in top:
        return top[gguf_name]
    m = _BLK.match(gguf_name)
    if not m or int(m.group(1)) >= p.n_layer:
        return None
    per_block = {
        "attn_norm.weight": (p.dim,),
        "ffn_norm.weight": (p.dim,),
        "attn_q.weight": (q, p.dim),
        "attn_k.weight": (kv, p.dim),
        "attn_v.weight": (kv, p.dim),
        "attn_output.weight": (p.dim, q),
        "ffn_gate.weight": (p.n_ff, p.dim),
        "ffn_up.weight": (p.n_ff, p.dim),
        "ffn_down.weight": (p.dim, p.n_ff),
    }
    return per_block.get(m.group(2))


def llama3_rope_factors(scaling: dict[str, Any], head_dim: int, theta: float) -> np.ndarray:
    """Llama 3.1 frequency divisors: 1 for short wavelengths, ``factor`` for long ones,
    interpolated between (llama.cpp divides each rotary frequency by its factor)."""
    factor = float(scaling["factor"])
    low, high = (
        float(scaling.get("low_freq_factor", 1.0)),
        float(scaling.get("high_freq_factor", 4.0)),
    )
    old = float(scaling["original_max_position_embeddings"])
    freqs = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelen = 2 * np.pi / freqs
    smooth = (old / wavelen - low) / (high - low)
    mid = 1.0 / ((1 - smooth) / factor + smooth)
    out = np.where(wavelen < old / high, 1.0, np.where(wavelen > old / low, factor, mid))
    return out.astype(np.float32)


def write_metadata(writer: Any, p: LlamaParams, outtype: str, name: str) -> None:
    import gguf

    file_types = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }
    writer.add_type("model")
    writer.add_name(name)
    writer.add_context_length(p.context_length)
    writer.add_embedding_length(p.dim)
    writer.add_block_count(p.n_layer)
    writer.add_feed_forward_length(p.n_ff)
    writer.add_head_count(p.n_head)
    writer.add_head_count_kv(p.n_head_kv)
    if p.head_dim != p.dim // p.n_head:
        writer.add_key_length(p.head_dim)
        writer.add_value_length(p.head_dim)
    writer.add_rope_dimension_count(p.head_dim)
    writer.add_rope_freq_base(p.rope_theta)
    writer.add_layer_norm_rms_eps(p.rms_eps)
    writer.add_vocab_size(p.vocab_size)
    writer.add_file_type(file_types[outtype])
    if outtype == "q8_0":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    scaling = p.rope_scaling
    if scaling and scaling["rope_type"] in ("linear", "yarn"):
        kind = (
            gguf.RopeScalingType.LINEAR
            if scaling["rope_type"] == "linear"
            else gguf.RopeScalingType.YARN
        )
        writer.add_rope_scaling_type(kind)
        writer.add_rope_scaling_factor(float(scaling["factor"]))
        if scaling["rope_type"] == "yarn" and scaling.get("original_max_position_embeddings"):
            writer.add_rope_scaling_orig_ctx_len(int(scaling["original_max_position_embeddings"]))
