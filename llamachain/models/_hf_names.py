"""Hugging Face <-> GGUF tensor names and the LLaMA query/key row order, shared by the
checkpoint converter, the checkpoint exporter and the PEFT LoRA converter.

Hugging Face LLaMA checkpoints store the rows of ``q_proj`` / ``k_proj`` in "rotate half"
order (the first half of every head's rows are the real parts of the rotary pairs, the second
half the imaginary parts); llama.cpp's rope expects each pair on adjacent rows.  Converting a
checkpoint therefore reorders those rows per head (:func:`hf_to_gguf_rows`), and exporting one
undoes it (:func:`gguf_to_hf_rows`).  The two are exact inverses.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import numpy as np

# Tensors a Hugging Face checkpoint may hold that GGUF has no place for (recomputed at load).
_IGNORED = re.compile(r"(^|\.)rotary_emb\.inv_freq$|(^|\.)masked_bias$|(^|\.)attn\.bias$")
_BLOCK = re.compile(r"\.layers\.(\d+)\.")


@lru_cache(maxsize=8)
def _name_map(n_blocks: int) -> Any:
    import gguf

    return gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_blocks)


def is_ignored(hf_name: str) -> bool:
    """True for buffers (such as rotary ``inv_freq``) that a GGUF file does not store."""
    return bool(_IGNORED.search(hf_name))


def hf_to_gguf_name(hf_name: str, n_blocks: int) -> str | None:
    """``model.layers.3.self_attn.q_proj.weight`` -> ``blk.3.attn_q.weight`` (None if unknown)."""
    return _name_map(n_blocks).get_name(hf_name, try_suffixes=(".weight", ".bias"))


@lru_cache(maxsize=8)
def _reverse_map(n_blocks: int) -> dict[str, str]:
    # The canonical Hugging Face LLaMA names, written out once and checked against gguf's map
    # so an exported checkpoint uses exactly the names transformers' LlamaForCausalLM expects.
    names = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]
    per_block = [
        "input_layernorm",
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "post_attention_layernorm",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    ]
    for i in range(n_blocks):
        names.extend(f"model.layers.{i}.{part}.weight" for part in per_block)
    out: dict[str, str] = {}
    for name in names:
        target = hf_to_gguf_name(name, n_blocks)
        if target is None:  # pragma: no cover - only if gguf's map changes
            raise RuntimeError(f"gguf has no GGUF name for {name}")
        out[target] = name
    return out


def gguf_to_hf_name(gguf_name: str, n_blocks: int) -> str | None:
    """``blk.3.attn_q.weight`` -> ``model.layers.3.self_attn.q_proj.weight`` (None if unknown)."""
    return _reverse_map(n_blocks).get(gguf_name)


def block_count_of(hf_names: list[str]) -> int:
    """How many decoder layers a list of Hugging Face tensor names covers."""
    blocks = [int(m.group(1)) for m in map(_BLOCK.search, hf_names) if m]
    return max(blocks) + 1 if blocks else 0


def qk_heads(gguf_name: str, n_head: int, n_head_kv: int) -> int | None:
    """How many heads a tensor's rows are split into when it needs reordering, else None."""
    if gguf_name.endswith("attn_q.weight"):
        return n_head
    if gguf_name.endswith("attn_k.weight"):
        return n_head_kv
    return None


def hf_to_gguf_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder a q/k projection's rows from Hugging Face "rotate half" to llama.cpp pairs."""
    rows = w.shape[0]
    if rows % (2 * n_heads):
        raise ValueError(f"{rows} rows do not split into {n_heads} heads of rotary pairs")
    per = rows // n_heads // 2
    return w.reshape(n_heads, 2, per, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_to_hf_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """The inverse of :func:`hf_to_gguf_rows`."""
    rows = w.shape[0]
    if rows % (2 * n_heads):
        raise ValueError(f"{rows} rows do not split into {n_heads} heads of rotary pairs")
    per = rows // n_heads // 2
    return w.reshape(n_heads, per, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
