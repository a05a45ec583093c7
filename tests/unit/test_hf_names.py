"""Hugging Face <-> GGUF names and the q/k row reordering used by the converters."""

import numpy as np
import pytest

from llamachain.models._hf_names import (
    block_count_of,
    gguf_to_hf_name,
    gguf_to_hf_rows,
    hf_to_gguf_name,
    hf_to_gguf_rows,
    is_ignored,
    qk_heads,
)


def test_names_round_trip_for_every_llama_tensor():
    for i in (0, 4):
        for part in ("self_attn.q_proj", "self_attn.k_proj", "mlp.down_proj", "input_layernorm"):
            hf = f"model.layers.{i}.{part}.weight"
            name = hf_to_gguf_name(hf, 5)
            assert name is not None and name.startswith(f"blk.{i}.")
            assert gguf_to_hf_name(name, 5) == hf
    assert hf_to_gguf_name("model.embed_tokens.weight", 1) == "token_embd.weight"
    assert hf_to_gguf_name("lm_head.weight", 1) == "output.weight"
    assert gguf_to_hf_name("output_norm.weight", 1) == "model.norm.weight"
    assert hf_to_gguf_name("model.layers.0.self_attn.frobnicate.weight", 1) is None


def test_helpers():
    assert is_ignored("model.layers.0.self_attn.rotary_emb.inv_freq")
    assert not is_ignored("model.layers.0.self_attn.q_proj.weight")
    assert block_count_of(["model.layers.11.mlp.up_proj.weight", "model.norm.weight"]) == 12
    assert qk_heads("blk.0.attn_q.weight", 9, 3) == 9
    assert qk_heads("blk.0.attn_k.weight", 9, 3) == 3
    assert qk_heads("blk.0.attn_v.weight", 9, 3) is None


def test_row_order_pairs_each_heads_halves_and_inverts():
    heads, head_dim, cols = 2, 4, 3
    w = np.arange(heads * head_dim * cols, dtype=np.float32).reshape(heads * head_dim, cols)
    out = hf_to_gguf_rows(w, heads)
    # head 0 of HF order: rows 0,1 are the first halves, 2,3 the second halves -> 0,2,1,3
    assert [int(r[0]) // cols for r in out[:4]] == [0, 2, 1, 3]
    assert [int(r[0]) // cols for r in out[4:]] == [4, 6, 5, 7]
    np.testing.assert_array_equal(gguf_to_hf_rows(out, heads), w)
    np.testing.assert_array_equal(gguf_to_hf_rows(hf_to_gguf_rows(w[:, 0], heads), heads), w[:, 0])
    with pytest.raises(ValueError, match="rotary pairs"):
        hf_to_gguf_rows(np.zeros((6, 2)), 2)
