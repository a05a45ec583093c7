"""PEFT adapter directories: their config, their weights, and Hugging Face -> GGUF names and
row orders (used by :func:`llamachain.models.lora.convert_peft_lora`)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llamachain.errors import ConfigError, ModelFileError

if TYPE_CHECKING:
    import numpy as np

    from llamachain.models.lora import BaseModelShapes


def read_config(src: Path) -> dict[str, Any]:
    cfg_path = src / "adapter_config.json"
    if not src.is_dir():
        raise ModelFileError(src, "is not a directory; pass the PEFT adapter's directory")
    if not cfg_path.is_file():
        raise ModelFileError(src, "has no adapter_config.json; pass a PEFT LoRA adapter directory")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelFileError(cfg_path, f"cannot be read as JSON ({e})") from e
    if not isinstance(cfg, dict):
        raise ModelFileError(cfg_path, "is not a JSON object")
    peft_type = str(cfg.get("peft_type") or "LORA").upper()
    if peft_type != "LORA":
        raise ConfigError(f"{cfg_path}: peft_type is {peft_type}; only LORA adapters convert")
    unsupported = [
        ("use_dora", "DoRA's magnitude vectors"),
        ("modules_to_save", "full copies of modules"),
    ]
    for key, what in unsupported:
        if cfg.get(key):
            raise ConfigError(
                f"{cfg_path}: {key}={cfg[key]!r} — the adapter carries {what}, which a GGUF LoRA "
                "adapter cannot hold; merge it into the model with PEFT instead"
            )
    if str(cfg.get("bias") or "none") != "none":
        raise ConfigError(
            f"{cfg_path}: bias={cfg['bias']!r} — trained biases cannot go into a GGUF LoRA "
            "adapter; merge the adapter into the model with PEFT instead"
        )
    return cfg


def read_weights(src: Path) -> dict[str, np.ndarray]:
    st_path, bin_path = src / "adapter_model.safetensors", src / "adapter_model.bin"
    if st_path.is_file():
        try:
            from safetensors.numpy import load_file

            return dict(load_file(str(st_path)))
        except TypeError:  # bfloat16 has no numpy type: go through torch
            from safetensors.torch import load_file as load_torch

            return {k: v.float().numpy() for k, v in load_torch(str(st_path)).items()}
        except Exception as e:
            raise ModelFileError(st_path, f"cannot be read as safetensors ({e})") from e
    if bin_path.is_file():
        import torch

        try:
            state = torch.load(str(bin_path), map_location="cpu", weights_only=True)
        except Exception as e:
            raise ModelFileError(bin_path, f"cannot be read as a PyTorch state dict ({e})") from e
        return {k: v.float().numpy() for k, v in state.items()}
    raise ModelFileError(src, "has neither adapter_model.safetensors nor adapter_model.bin")


def resolve_base(cfg: dict[str, Any], base: str | os.PathLike[str] | None, home: Any) -> str:
    from llamachain.models.registry import resolve_model_path

    if base is not None:
        return str(resolve_model_path(str(base), home))
    named = cfg.get("base_model_name_or_path")
    if named and str(named).endswith(".gguf") and Path(str(named)).expanduser().is_file():
        return str(Path(str(named)).expanduser())
    raise ConfigError(
        f"adapter_config.json names the base model {named!r}, which is not a local GGUF file; "
        "pass --base MODEL.gguf (the GGUF conversion of the model the adapter was trained on): "
        "its head counts and weight shapes are needed to convert and check the adapter"
    )


def pattern_value(patterns: Any, module: str, default: float) -> float:
    # PEFT's rank_pattern / alpha_pattern: keys match a module name, or its ending.
    for key, value in (patterns or {}).items():
        if re.fullmatch(f"(.*\\.)?{key}", module):
            return float(value)
    return default


def to_gguf_name(module: str, base: BaseModelShapes) -> str | None:
    from llamachain.models._hf_names import hf_to_gguf_name

    hf = f"{module}.weight"
    if base.architecture == "llama":
        return hf_to_gguf_name(hf, base.block_count)
    import gguf

    arch = gguf.MODEL_ARCH.BLOOM
    name_map = gguf.get_tensor_name_map(arch, base.block_count)
    result = name_map.get_name(hf, try_suffixes=(".weight",))
    return str(result) if result else None


def reorder_rows(gguf_name: str, b: np.ndarray, base: BaseModelShapes) -> np.ndarray:
    """Put B's rows (the adapted weight's output rows) in the order the GGUF weight has."""
    from llamachain.models._hf_names import hf_to_gguf_rows, qk_heads

    heads = base.head_count
    if base.architecture == "llama":
        n = qk_heads(gguf_name, heads or 0, base.head_count_kv or 0)
        if n is None:
            return b
        if not n:
            raise ConfigError(f"{base.path} has no head counts; cannot reorder {gguf_name}")
        return hf_to_gguf_rows(b, n)
    if gguf_name.endswith("attn_qkv.weight"):  # BLOOM: (head, q/k/v, dim) rows -> (q/k/v, head)
        if not heads or b.shape[0] % (3 * heads):
            raise ConfigError(f"{gguf_name}: {b.shape[0]} rows do not split into {heads} heads")
        per = b.shape[0] // 3 // heads
        return b.reshape(heads, 3, per, -1).swapaxes(0, 1).reshape(b.shape)
    return b
