"""Hyperparameters and tensor layouts of the tiny zoo models, one builder per architecture.

A builder writes the architecture's hyperparameters with the gguf writer's ``add_*`` helpers
and returns the tensors llama.cpp's loader requires for it: name, shape in ggml order
(``ne``: the fastest-varying dimension first, as llama.cpp's ``create_tensor`` spells it) and
how to fill it.  Names come from ``gguf.TENSOR_NAMES``; each builder only uses tensors that
``gguf.MODEL_TENSORS`` lists for its architecture (checked by :func:`tensors_for`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Fill = Literal["w", "one", "zero", "half", "decay"]


@dataclass(frozen=True)
class Dims:
    """The sizes of a tiny model."""

    n_vocab: int
    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 128
    n_ctx: int = 256

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def kv_dim(self) -> int:
        return self.head_dim * self.n_head_kv


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]  # ggml order (ne0, ne1, ...); numpy's is the reverse
    fill: Fill = "w"


Builder = Callable[[Any, Dims], list[TensorSpec]]


class _Tensors:
    """Collects :class:`TensorSpec` rows, checking each name against ``gguf.MODEL_TENSORS``."""

    def __init__(self, arch: str) -> None:
        import gguf

        self.gguf = gguf
        self.arch = gguf.MODEL_ARCH[arch.upper()]
        self.allowed = set(gguf.MODEL_TENSORS[self.arch])
        self.rows: list[TensorSpec] = []

    def add(
        self,
        kind: str,
        shape: tuple[int, ...],
        fill: Fill = "w",
        *,
        bid: int | None = None,
        suffix: str = "weight",
    ) -> None:
        tensor = self.gguf.MODEL_TENSOR[kind]
        if tensor not in self.allowed:
            raise ValueError(f"{kind} is not a {self.arch.name} tensor in gguf.MODEL_TENSORS")
        base = self.gguf.TENSOR_NAMES[tensor].format(bid=bid)
        self.rows.append(TensorSpec(f"{base}.{suffix}", shape, fill))

    def norm(self, kind: str, n: int, *, bid: int | None = None, bias: bool = False) -> None:
        self.add(kind, (n,), "one", bid=bid)
        if bias:
            self.add(kind, (n,), "zero", bid=bid, suffix="bias")

    def linear(
        self, kind: str, n_in: int, n_out: int, *, bid: int | None = None, bias: bool = False
    ) -> None:
        self.add(kind, (n_in, n_out), "w", bid=bid)
        if bias:
            self.add(kind, (n_out,), "zero", bid=bid, suffix="bias")


def _basics(w: Any, d: Dims, *, n_ff: bool = True) -> None:
    w.add_context_length(d.n_ctx)
    w.add_embedding_length(d.n_embd)
    w.add_block_count(d.n_layer)
    if n_ff:
        w.add_feed_forward_length(d.n_ff)
    w.add_head_count(d.n_head)
    w.add_vocab_size(d.n_vocab)


def _gated_layer(t: _Tensors, d: Dims, i: int) -> None:
    """One LLaMA-style block: norm, grouped-query attention, norm, gated FFN."""
    t.norm("ATTN_NORM", d.n_embd, bid=i)
    t.linear("ATTN_Q", d.n_embd, d.n_embd, bid=i)
    t.linear("ATTN_K", d.n_embd, d.kv_dim, bid=i)
    t.linear("ATTN_V", d.n_embd, d.kv_dim, bid=i)
    t.linear("ATTN_OUT", d.n_embd, d.n_embd, bid=i)
    t.norm("FFN_NORM", d.n_embd, bid=i)
    t.linear("FFN_GATE", d.n_embd, d.n_ff, bid=i)
    t.linear("FFN_UP", d.n_embd, d.n_ff, bid=i)
    t.linear("FFN_DOWN", d.n_ff, d.n_embd, bid=i)


def _llama(w: Any, d: Dims) -> list[TensorSpec]:
    _basics(w, d)
    w.add_head_count_kv(d.n_head_kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(d.head_dim)
    w.add_rope_freq_base(10000.0)
    t = _Tensors("llama")
    t.add("TOKEN_EMBD", (d.n_embd, d.n_vocab))
    t.norm("OUTPUT_NORM", d.n_embd)
    t.linear("OUTPUT", d.n_embd, d.n_vocab)
    for i in range(d.n_layer):
        _gated_layer(t, d, i)
    return t.rows


def _gpt2(w: Any, d: Dims) -> list[TensorSpec]:
    _basics(w, d)
    w.add_layer_norm_eps(1e-5)
    t = _Tensors("gpt2")
    t.add("TOKEN_EMBD", (d.n_embd, d.n_vocab))
    t.add("POS_EMBD", (d.n_embd, d.n_ctx))
    t.norm("OUTPUT_NORM", d.n_embd, bias=True)
    t.linear("OUTPUT", d.n_embd, d.n_vocab)
    for i in range(d.n_layer):
        t.norm("ATTN_NORM", d.n_embd, bid=i, bias=True)
        t.linear("ATTN_QKV", d.n_embd, 3 * d.n_embd, bid=i, bias=True)
        t.linear("ATTN_OUT", d.n_embd, d.n_embd, bid=i, bias=True)
        t.norm("FFN_NORM", d.n_embd, bid=i, bias=True)
        t.linear("FFN_UP", d.n_embd, d.n_ff, bid=i, bias=True)
        t.linear("FFN_DOWN", d.n_ff, d.n_embd, bid=i, bias=True)
    return t.rows


def _bloom(w: Any, d: Dims) -> list[TensorSpec]:
    _basics(w, d)
    w.add_head_count_kv(d.n_head)
    w.add_layer_norm_eps(1e-5)
    t = _Tensors("bloom")
    t.add("TOKEN_EMBD", (d.n_embd, d.n_vocab))
    t.norm("TOKEN_EMBD_NORM", d.n_embd, bias=True)
    t.norm("OUTPUT_NORM", d.n_embd, bias=True)
    t.linear("OUTPUT", d.n_embd, d.n_vocab)
    for i in range(d.n_layer):
        t.norm("ATTN_NORM", d.n_embd, bid=i, bias=True)
        t.linear("ATTN_QKV", d.n_embd, 3 * d.n_embd, bid=i, bias=True)
        t.linear("ATTN_OUT", d.n_embd, d.n_embd, bid=i, bias=True)
        t.norm("FFN_NORM", d.n_embd, bid=i, bias=True)
        t.linear("FFN_UP", d.n_embd, d.n_ff, bid=i, bias=True)
        t.linear("FFN_DOWN", d.n_ff, d.n_embd, bid=i, bias=True)
    return t.rows


def _gptj(w: Any, d: Dims) -> list[TensorSpec]:
    _basics(w, d)
    w.add_layer_norm_eps(1e-5)
    w.add_rope_dimension_count(d.head_dim // 2)  # GPT-J rotates part of each head
    t = _Tensors("gptj")
    t.add("TOKEN_EMBD", (d.n_embd, d.n_vocab))
    t.norm("OUTPUT_NORM", d.n_embd, bias=True)
    t.linear("OUTPUT", d.n_embd, d.n_vocab, bias=True)
    for i in range(d.n_layer):
        t.norm("ATTN_NORM", d.n_embd, bid=i, bias=True)
        t.linear("ATTN_Q", d.n_embd, d.n_embd, bid=i)
        t.linear("ATTN_K", d.n_embd, d.n_embd, bid=i)
        t.linear("ATTN_V", d.n_embd, d.n_embd, bid=i)
        t.linear("ATTN_OUT", d.n_embd, d.n_embd, bid=i)
        t.linear("FFN_UP", d.n_embd, d.n_ff, bid=i, bias=True)
        t.linear("FFN_DOWN", d.n_ff, d.n_embd, bid=i, bias=True)
    return t.rows


def _gemma(w: Any, d: Dims) -> list[TensorSpec]:
    _basics(w, d)
    w.add_head_count_kv(d.n_head_kv)
    w.add_key_length(d.head_dim)
    w.add_value_length(d.head_dim)
    w.add_layer_norm_rms_eps(1e-6)
    t = _Tensors("gemma")
    t.add("TOKEN_EMBD", (d.n_embd, d.n_vocab))  # tied: Gemma has no output matrix
    t.norm("OUTPUT_NORM", d.n_embd)
    for i in range(d.n_layer):
        _gated_layer(t, d, i)
    return t.rows


def _gemma3(w: Any, d: Dims) -> list[TensorSpec]:
    _basics(w, d)
    w.add_head_count_kv(d.n_head_kv)
    w.add_key_length(d.head_dim)
    w.add_value_length(d.head_dim)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(1_000_000.0)
    w.add_sliding_window(32)
    t = _Tensors("gemma3")
    t.add("TOKEN_EMBD", (d.n_embd, d.n_vocab))  # tied, as in Gemma 3 270M
    t.norm("OUTPUT_NORM", d.n_embd)
    for i in range(d.n_layer):
        t.norm("ATTN_NORM", d.n_embd, bid=i)
        t.linear("ATTN_Q", d.n_embd, d.n_embd, bid=i)
        t.linear("ATTN_K", d.n_embd, d.kv_dim, bid=i)
        t.linear("ATTN_V", d.n_embd, d.kv_dim, bid=i)
        t.norm("ATTN_Q_NORM", d.head_dim, bid=i)
        t.norm("ATTN_K_NORM", d.head_dim, bid=i)
        t.linear("ATTN_OUT", d.n_embd, d.n_embd, bid=i)
        t.norm("ATTN_POST_NORM", d.n_embd, bid=i)
        t.norm("FFN_PRE_NORM", d.n_embd, bid=i)
        t.linear("FFN_GATE", d.n_embd, d.n_ff, bid=i)
        t.linear("FFN_UP", d.n_embd, d.n_ff, bid=i)
        t.linear("FFN_DOWN", d.n_ff, d.n_embd, bid=i)
        t.norm("FFN_POST_NORM", d.n_embd, bid=i)
    return t.rows


def _t5(w: Any, d: Dims) -> list[TensorSpec]:
    _basics(w, d)
    w.add_head_count_kv(d.n_head)
    w.add_key_length(d.head_dim)
    w.add_value_length(d.head_dim)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_relative_attn_buckets_count(32)
    w.add_decoder_start_token_id(0)  # T5 starts decoding from <pad>
    t = _Tensors("t5")
    t.add("TOKEN_EMBD", (d.n_embd, d.n_vocab))
    t.linear("OUTPUT", d.n_embd, d.n_vocab)
    t.norm("ENC_OUTPUT_NORM", d.n_embd)
    t.norm("DEC_OUTPUT_NORM", d.n_embd)
    for i in range(d.n_layer):
        for side in ("ENC", "DEC"):
            t.norm(f"{side}_ATTN_NORM", d.n_embd, bid=i)
            if i == 0:  # relative position buckets: only the first layer has them
                t.add(f"{side}_ATTN_REL_B", (d.n_head, 32), bid=i)
            t.linear(f"{side}_ATTN_Q", d.n_embd, d.n_embd, bid=i)
            t.linear(f"{side}_ATTN_K", d.n_embd, d.n_embd, bid=i)
            t.linear(f"{side}_ATTN_V", d.n_embd, d.n_embd, bid=i)
            t.linear(f"{side}_ATTN_OUT", d.n_embd, d.n_embd, bid=i)
            if side == "DEC":
                t.norm("DEC_CROSS_ATTN_NORM", d.n_embd, bid=i)
                t.linear("DEC_CROSS_ATTN_Q", d.n_embd, d.n_embd, bid=i)
                t.linear("DEC_CROSS_ATTN_K", d.n_embd, d.n_embd, bid=i)
                t.linear("DEC_CROSS_ATTN_V", d.n_embd, d.n_embd, bid=i)
                t.linear("DEC_CROSS_ATTN_OUT", d.n_embd, d.n_embd, bid=i)
            t.norm(f"{side}_FFN_NORM", d.n_embd, bid=i)
            t.linear(f"{side}_FFN_GATE", d.n_embd, d.n_ff, bid=i)  # Flan-T5: gated GELU
            t.linear(f"{side}_FFN_UP", d.n_embd, d.n_ff, bid=i)
            t.linear(f"{side}_FFN_DOWN", d.n_ff, d.n_embd, bid=i)
    return t.rows


def _rwkv6(w: Any, d: Dims) -> list[TensorSpec]:
    head = 16
    mix, decay = 8, 16  # the low-rank sizes of the data-dependent token shift and decay
    _basics(w, d, n_ff=True)
    w.add_layer_norm_eps(1e-5)
    w.add_wkv_head_size(head)
    w.add_time_mix_extra_dim(mix)
    w.add_time_decay_extra_dim(decay)
    w.add_rescale_every_n_layers(6)
    t = _Tensors("rwkv6")
    e = d.n_embd
    t.add("TOKEN_EMBD", (e, d.n_vocab))
    t.norm("TOKEN_EMBD_NORM", e, bias=True)
    t.norm("OUTPUT_NORM", e, bias=True)
    t.linear("OUTPUT", e, d.n_vocab)
    for i in range(d.n_layer):
        t.norm("ATTN_NORM", e, bid=i, bias=True)
        t.norm("ATTN_NORM_2", e, bid=i, bias=True)
        t.add("TIME_MIX_W1", (e, mix * 5), bid=i)
        t.add("TIME_MIX_W2", (mix, e, 5), bid=i)
        t.add("TIME_MIX_LERP_X", (e, 1, 1), "half", bid=i)
        t.add("TIME_MIX_LERP_FUSED", (e, 1, 1, 5), "half", bid=i)
        t.add("TIME_MIX_FIRST", (head, e // head), bid=i)
        t.add("TIME_MIX_DECAY", (e,), "decay", bid=i)
        t.add("TIME_MIX_DECAY_W1", (e, decay), bid=i)
        t.add("TIME_MIX_DECAY_W2", (decay, e), bid=i)
        t.linear("TIME_MIX_KEY", e, e, bid=i)
        t.linear("TIME_MIX_VALUE", e, e, bid=i)
        t.linear("TIME_MIX_RECEPTANCE", e, e, bid=i)
        t.linear("TIME_MIX_GATE", e, e, bid=i)
        t.norm("TIME_MIX_LN", e, bid=i, bias=True)
        t.linear("TIME_MIX_OUTPUT", e, e, bid=i)
        t.add("CHANNEL_MIX_LERP_K", (e, 1, 1), "half", bid=i)
        t.add("CHANNEL_MIX_LERP_R", (e, 1, 1), "half", bid=i)
        t.linear("CHANNEL_MIX_KEY", e, d.n_ff, bid=i)
        t.linear("CHANNEL_MIX_VALUE", d.n_ff, e, bid=i)
        t.linear("CHANNEL_MIX_RECEPTANCE", e, e, bid=i)
    return t.rows


def _rwkv7(w: Any, d: Dims) -> list[TensorSpec]:
    # Head size 64, as in every released RWKV-7: with 16 or 32 this llama.cpp's rwkv7 path
    # gives different logits for the same tokens on every run (measured; 64 is exact).
    head = 64
    decay, iclr, mix, gate = 8, 8, 8, 16  # low-rank sizes (decay, in-context LR, v-mix, gate)
    _basics(w, d, n_ff=True)
    w.add_layer_norm_eps(1e-5)
    w.add_wkv_head_size(head)
    w.add_decay_lora_rank(decay)
    w.add_iclr_lora_rank(iclr)
    w.add_value_residual_mix_lora_rank(mix)
    w.add_gate_lora_rank(gate)
    t = _Tensors("rwkv7")
    e = d.n_embd
    t.add("TOKEN_EMBD", (e, d.n_vocab))
    t.norm("TOKEN_EMBD_NORM", e, bias=True)
    t.norm("OUTPUT_NORM", e, bias=True)
    t.linear("OUTPUT", e, d.n_vocab)
    for i in range(d.n_layer):
        t.norm("ATTN_NORM", e, bid=i, bias=True)
        t.norm("ATTN_NORM_2", e, bid=i, bias=True)
        t.add("TIME_MIX_W0", (e,), "decay", bid=i)
        t.add("TIME_MIX_W1", (e, decay), bid=i)
        t.add("TIME_MIX_W2", (decay, e), bid=i)
        t.add("TIME_MIX_A0", (e,), "zero", bid=i)
        t.add("TIME_MIX_A1", (e, iclr), bid=i)
        t.add("TIME_MIX_A2", (iclr, e), bid=i)
        v_rank = iclr if i == 0 else mix  # layer 0 keeps v0..v2 but does not use them
        t.add("TIME_MIX_V0", (e,), "zero", bid=i)
        t.add("TIME_MIX_V1", (e, v_rank), bid=i)
        t.add("TIME_MIX_V2", (v_rank, e), bid=i)
        t.add("TIME_MIX_G1", (e, gate), bid=i)
        t.add("TIME_MIX_G2", (gate, e), bid=i)
        t.add("TIME_MIX_LERP_FUSED", (e, 1, 1, 6), "half", bid=i)
        t.add("TIME_MIX_K_K", (e,), "one", bid=i)
        t.add("TIME_MIX_K_A", (e,), "one", bid=i)
        t.add("TIME_MIX_R_K", (e,), "w", bid=i)
        t.linear("TIME_MIX_KEY", e, e, bid=i)
        t.linear("TIME_MIX_VALUE", e, e, bid=i)
        t.linear("TIME_MIX_RECEPTANCE", e, e, bid=i)
        t.norm("TIME_MIX_LN", e, bid=i, bias=True)
        t.linear("TIME_MIX_OUTPUT", e, e, bid=i)
        t.add("CHANNEL_MIX_LERP_K", (e, 1, 1), "half", bid=i)
        t.linear("CHANNEL_MIX_KEY", e, d.n_ff, bid=i)
        t.linear("CHANNEL_MIX_VALUE", d.n_ff, e, bid=i)
    return t.rows


BUILDERS: dict[str, Builder] = {
    "llama": _llama,
    "gpt2": _gpt2,
    "bloom": _bloom,
    "gptj": _gptj,
    "gemma": _gemma,
    "gemma3": _gemma3,
    "t5": _t5,
    "rwkv6": _rwkv6,
    "rwkv7": _rwkv7,
}
