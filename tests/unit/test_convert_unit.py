"""The checkpoint converter and exporter on tiny handmade Hugging Face directories (no llama.cpp).

Each checkpoint is a random 2-layer LLaMA (dim 64, 4 heads, 2 KV heads, FFN 80) written with
safetensors or torch.save, beside a byte-level BPE tokenizer trained in memory.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
from click.testing import CliRunner

from llamachain.cli.main import cli
from llamachain.errors import ConfigError, ModelFileError
from llamachain.models._hf_names import hf_to_gguf_rows
from llamachain.models.convert import convert, llama3_rope_factors
from llamachain.models.export_hf import export_hf

DIM, HEADS, KV, FF, LAYERS = 64, 4, 2, 80, 2
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b  # 12345",
    "Grounded answers from your own documents, on a CPU.",
] * 20
TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"


def _tokenizer(directory: Path) -> int:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TEXTS, trainer)
    tok.save(str(directory / "tokenizer.json"))
    config = {"bos_token": "<s>", "eos_token": "</s>", "chat_template": TEMPLATE}
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return int(tok.get_vocab_size())


def _weights(vocab: int, tied: bool, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    out = {"model.embed_tokens.weight": w(vocab, DIM), "model.norm.weight": w(DIM)}
    if not tied:
        out["lm_head.weight"] = w(vocab, DIM)
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        out |= {
            p + "input_layernorm.weight": w(DIM),
            p + "post_attention_layernorm.weight": w(DIM),
            p + "self_attn.q_proj.weight": w(HEADS * 16, DIM),
            p + "self_attn.k_proj.weight": w(KV * 16, DIM),
            p + "self_attn.v_proj.weight": w(KV * 16, DIM),
            p + "self_attn.o_proj.weight": w(DIM, HEADS * 16),
            p + "mlp.gate_proj.weight": w(FF, DIM),
            p + "mlp.up_proj.weight": w(FF, DIM),
            p + "mlp.down_proj.weight": w(DIM, FF),
            p + "self_attn.rotary_emb.inv_freq": w(8),  # a buffer GGUF does not store
        }
    return out


def make_checkpoint(
    directory: Path, *, tied: bool = True, fmt: str = "safetensors", **config_extra: object
) -> dict[str, np.ndarray]:
    directory.mkdir(parents=True, exist_ok=True)
    vocab = _tokenizer(directory)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": DIM,
        "intermediate_size": FF,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-6,
        "rope_theta": 50000.0,
        "vocab_size": vocab,
        "tie_word_embeddings": tied,
        **config_extra,
    }
    (directory / "config.json").write_text(json.dumps(config))
    weights = _weights(vocab, tied)
    if fmt == "safetensors":
        from safetensors.numpy import save_file

        save_file(weights, str(directory / "model.safetensors"))
    else:
        import torch

        torch.save({k: torch.from_numpy(v) for k, v in weights.items()}, directory / fmt)
    return weights


def tensors(path: Path) -> dict[str, tuple[str, np.ndarray]]:
    from gguf.quants import dequantize

    reader = gguf.GGUFReader(str(path))
    return {t.name: (t.tensor_type.name, dequantize(t.data, t.tensor_type)) for t in reader.tensors}


def field(path: Path, key: str) -> object:
    f = gguf.GGUFReader(str(path)).fields.get(key)
    return None if f is None else f.contents()


@pytest.fixture
def ckpt(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    d = tmp_path / "tiny-llama"
    return d, make_checkpoint(d)


# -- what a conversion writes -------------------------------------------------------------------


def test_f32_conversion_stores_every_tensor_exactly_with_qk_rows_paired(ckpt, tmp_path):
    d, weights = ckpt
    out = tmp_path / "tiny.gguf"
    result = convert(d, out, outtype="f32")
    got = tensors(out)
    assert result.tensors == len(got) == 2 + 9 * LAYERS  # tied: no output.weight
    assert "output.weight" not in got
    np.testing.assert_array_equal(got["token_embd.weight"][1], weights["model.embed_tokens.weight"])
    q = weights["model.layers.1.self_attn.q_proj.weight"]
    k = weights["model.layers.1.self_attn.k_proj.weight"]
    np.testing.assert_array_equal(got["blk.1.attn_q.weight"][1], hf_to_gguf_rows(q, HEADS))
    np.testing.assert_array_equal(got["blk.1.attn_k.weight"][1], hf_to_gguf_rows(k, KV))
    v = weights["model.layers.1.self_attn.v_proj.weight"]
    np.testing.assert_array_equal(got["blk.1.attn_v.weight"][1], v)  # not reordered
    assert {kind for kind, _ in got.values()} == {"F32"}
    assert result.parameters == sum(
        a.size for k, a in weights.items() if not k.endswith("inv_freq")
    )


def test_metadata_and_tokenizer(ckpt, tmp_path):
    d, _ = ckpt
    out = tmp_path / "tiny.gguf"
    convert(d, out, outtype="f32", name="tiny")
    expected = {
        "general.architecture": "llama",
        "general.name": "tiny",
        "general.file_type": 0,
        "llama.context_length": 256,
        "llama.embedding_length": DIM,
        "llama.block_count": LAYERS,
        "llama.feed_forward_length": FF,
        "llama.attention.head_count": HEADS,
        "llama.attention.head_count_kv": KV,
        "llama.rope.dimension_count": DIM // HEADS,
        "llama.rope.freq_base": 50000.0,
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt2",
        "tokenizer.ggml.bos_token_id": 0,
        "tokenizer.ggml.eos_token_id": 1,
        "tokenizer.ggml.add_bos_token": False,
        "tokenizer.chat_template": TEMPLATE,
    }
    assert {k: field(out, k) for k in expected} == expected
    assert field(out, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(1e-6)
    source = json.loads((d / "tokenizer.json").read_text())
    vocab = sorted(source["model"]["vocab"], key=source["model"]["vocab"].get)
    assert field(out, "tokenizer.ggml.tokens") == vocab
    assert field(out, "tokenizer.ggml.merges") == [" ".join(m) for m in source["model"]["merges"]]
    assert field(out, "tokenizer.ggml.token_type")[:3] == [3, 3, 1]  # <s>, </s> are control
    assert field(out, "llama.vocab_size") == len(vocab)


def test_untied_checkpoint_keeps_its_output_layer(tmp_path):
    d = tmp_path / "untied"
    weights = make_checkpoint(d, tied=False)
    convert(d, tmp_path / "u.gguf", outtype="f32")
    got = tensors(tmp_path / "u.gguf")
    np.testing.assert_array_equal(got["output.weight"][1], weights["lm_head.weight"])


def test_f16_and_q8_0_types_follow_llama_cpp(ckpt, tmp_path):
    d, weights = ckpt
    convert(d, tmp_path / "h.gguf", outtype="f16")
    convert(d, tmp_path / "q.gguf", outtype="q8_0")
    f16, q8 = tensors(tmp_path / "h.gguf"), tensors(tmp_path / "q.gguf")
    assert f16["blk.0.attn_norm.weight"][0] == q8["blk.0.attn_norm.weight"][0] == "F32"
    assert f16["blk.0.ffn_up.weight"][0] == "F16"
    assert q8["blk.0.ffn_up.weight"][0] == "Q8_0"
    assert q8["blk.0.ffn_down.weight"][0] == "F16"  # 80 columns do not split into 32-blocks
    up = weights["model.layers.0.mlp.up_proj.weight"]
    np.testing.assert_array_equal(f16["blk.0.ffn_up.weight"][1], up.astype(np.float16))
    err = np.abs(q8["blk.0.ffn_up.weight"][1] - up).max()
    assert 0 < err <= np.abs(up).max() / 127  # Q8_0: at most half a step of amax/127
    assert field(tmp_path / "q.gguf", "general.file_type") == 7


def test_torch_bin_converts_to_the_same_tensors_as_safetensors(tmp_path):
    make_checkpoint(tmp_path / "st")
    make_checkpoint(tmp_path / "bin", fmt="pytorch_model.bin")
    convert(tmp_path / "st", tmp_path / "st.gguf", outtype="f32")
    convert(tmp_path / "bin", tmp_path / "bin.gguf", outtype="f32")
    a, b = tensors(tmp_path / "st.gguf"), tensors(tmp_path / "bin.gguf")
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name][1], b[name][1])


def test_bf16_safetensors_are_upcast_exactly(tmp_path):
    import torch
    from safetensors.torch import save_file

    d = tmp_path / "bf16"
    weights = make_checkpoint(d)
    bf16 = {k: torch.from_numpy(v).to(torch.bfloat16) for k, v in weights.items()}
    save_file(bf16, str(d / "model.safetensors"))
    convert(d, tmp_path / "b.gguf", outtype="f32")
    got = tensors(tmp_path / "b.gguf")["blk.0.ffn_gate.weight"][1]
    np.testing.assert_array_equal(got, bf16["model.layers.0.mlp.gate_proj.weight"].float().numpy())


def test_sharded_safetensors_with_an_index(ckpt, tmp_path):
    from safetensors.numpy import save_file

    d, weights = ckpt
    (d / "model.safetensors").unlink()
    names = sorted(weights)
    halves = {
        "model-00001-of-00002.safetensors": names[:20],
        "model-00002-of-00002.safetensors": names[20:],
    }
    for fname, part in halves.items():
        save_file({k: weights[k] for k in part}, str(d / fname))
    index = {"weight_map": {k: f for f, part in halves.items() for k in part}}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    convert(d, tmp_path / "s.gguf", outtype="f32")
    assert len(tensors(tmp_path / "s.gguf")) == 2 + 9 * LAYERS

    (d / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ModelFileError, match="missing 1 of the 2 shards"):
        convert(d, tmp_path / "s2.gguf", outtype="f32")


def test_shard_index_that_disagrees_with_the_shards(ckpt, tmp_path):
    d, weights = ckpt
    index = {"weight_map": {k: "model.safetensors" for k in weights}}
    index["weight_map"]["model.layers.9.mlp.up_proj.weight"] = "model.safetensors"
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelFileError, match=r"lists 1 tensors no shard holds \(model.layers.9"):
        convert(d, tmp_path / "x.gguf")
    del index["weight_map"]["model.layers.9.mlp.up_proj.weight"]
    del index["weight_map"]["model.norm.weight"]
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelFileError, match=r"'model\.norm\.weight' but the shard index does not"):
        convert(d, tmp_path / "x.gguf")


def test_meta_layout_pth_converts_like_the_hugging_face_layout(ckpt, tmp_path):
    """Meta's consolidated.00.pth names, with q/k rows already in llama.cpp's pair order."""
    import torch

    d, weights = ckpt
    convert(d, tmp_path / "hf.gguf", outtype="f32")
    meta = {
        "tok_embeddings.weight": weights["model.embed_tokens.weight"],
        "norm.weight": weights["model.norm.weight"],
        "rope.freqs": np.ones(8, np.float32),  # Meta's buffer of base frequencies: dropped
    }
    parts = {
        "attention.wq": ("self_attn.q_proj", HEADS),
        "attention.wk": ("self_attn.k_proj", KV),
        "attention.wv": ("self_attn.v_proj", None),
        "attention.wo": ("self_attn.o_proj", None),
        "feed_forward.w1": ("mlp.gate_proj", None),
        "feed_forward.w2": ("mlp.down_proj", None),
        "feed_forward.w3": ("mlp.up_proj", None),
        "attention_norm": ("input_layernorm", None),
        "ffn_norm": ("post_attention_layernorm", None),
    }
    for i in range(LAYERS):
        for ours, (theirs, heads) in parts.items():
            w = weights[f"model.layers.{i}.{theirs}.weight"]
            meta[f"layers.{i}.{ours}.weight"] = w if heads is None else hf_to_gguf_rows(w, heads)
    m = tmp_path / "meta"
    m.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(d / name, m / name)
    torch.save(
        {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in meta.items()},
        m / "consolidated.00.pth",
    )
    convert(m, tmp_path / "meta.gguf", outtype="f32")
    a, b = tensors(tmp_path / "hf.gguf"), tensors(tmp_path / "meta.gguf")
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name][1], b[name][1], err_msg=name)

    shutil.copy(m / "consolidated.00.pth", m / "consolidated.01.pth")
    with pytest.raises(ModelFileError, match="model-parallel checkpoint in 2 consolidated"):
        convert(m, tmp_path / "meta2.gguf")


def test_named_chat_templates_and_jinja_file(ckpt, tmp_path):
    d, _ = ckpt
    config = json.loads((d / "tokenizer_config.json").read_text())
    config["chat_template"] = [
        {"name": "default", "template": TEMPLATE},
        {"name": "tool_use", "template": "{{ tools }}"},
    ]
    (d / "tokenizer_config.json").write_text(json.dumps(config))
    convert(d, tmp_path / "n.gguf", outtype="f16")
    assert field(tmp_path / "n.gguf", "tokenizer.chat_template") == TEMPLATE
    assert field(tmp_path / "n.gguf", "tokenizer.chat_template.tool_use") == "{{ tools }}"

    del config["chat_template"]  # transformers 5 saves the template beside the config
    (d / "tokenizer_config.json").write_text(json.dumps(config))
    (d / "chat_template.jinja").write_text("{{ 'jinja' }}")
    convert(d, tmp_path / "j.gguf", outtype="f16")
    assert field(tmp_path / "j.gguf", "tokenizer.chat_template") == "{{ 'jinja' }}"


def test_padded_embeddings_get_placeholder_tokens(tmp_path):
    from safetensors.numpy import save_file

    d = tmp_path / "padded"
    weights = make_checkpoint(d)
    vocab = weights["model.embed_tokens.weight"].shape[0]
    weights["model.embed_tokens.weight"] = np.zeros((vocab + 4, DIM), np.float32)
    save_file(weights, str(d / "model.safetensors"))
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**config, "vocab_size": vocab + 4}))
    convert(d, tmp_path / "p.gguf", outtype="f16")
    tokens = field(tmp_path / "p.gguf", "tokenizer.ggml.tokens")
    assert len(tokens) == vocab + 4 and tokens[-1] == f"[PAD{vocab + 3}]"
    assert field(tmp_path / "p.gguf", "tokenizer.ggml.token_type")[-1] == 5  # unused


def test_llama3_rope_factors_match_transformers():
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    scaling = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    config = LlamaConfig(
        hidden_size=2048, num_attention_heads=32, rope_theta=500000.0, rope_scaling=scaling
    )
    inv_freq, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    base = 1.0 / 500000.0 ** (np.arange(0, 64, 2, dtype=np.float64) / 64)
    factors = llama3_rope_factors(scaling, 64, 500000.0)
    np.testing.assert_allclose(base / factors, inv_freq.numpy(), rtol=1e-5)
    assert factors.min() == 1.0 and factors.max() == 8.0


def test_llama3_scaled_checkpoint_stores_rope_freqs(tmp_path):
    d = tmp_path / "llama3"
    scaling = {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 64}
    make_checkpoint(d, rope_scaling=scaling)
    convert(d, tmp_path / "r.gguf", outtype="f16")
    kind, freqs = tensors(tmp_path / "r.gguf")["rope_freqs.weight"]
    assert kind == "F32" and freqs.shape == (8,)
    np.testing.assert_array_equal(freqs, llama3_rope_factors(scaling, 16, 50000.0))


def test_linear_rope_scaling_in_transformers_5_keys(tmp_path):
    d = tmp_path / "linear"
    rope = {"rope_type": "linear", "factor": 4.0, "rope_theta": 20000.0}
    make_checkpoint(d, rope_parameters=rope, rope_theta=None)
    convert(d, tmp_path / "l.gguf", outtype="f16")
    assert field(tmp_path / "l.gguf", "llama.rope.freq_base") == 20000.0
    assert field(tmp_path / "l.gguf", "llama.rope.scaling.type") == "linear"
    assert field(tmp_path / "l.gguf", "llama.rope.scaling.factor") == 4.0


# -- what a conversion refuses ------------------------------------------------------------------


def _edit_config(d: Path, **changes: object) -> None:
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**config, **changes}))


def test_missing_config(ckpt, tmp_path):
    d, _ = ckpt
    (d / "config.json").unlink()
    with pytest.raises(ModelFileError, match=r"has no config\.json"):
        convert(d, tmp_path / "x.gguf")


def test_unsupported_architecture_names_the_supported_ones(ckpt, tmp_path):
    d, _ = ckpt
    _edit_config(d, architectures=["GPT2LMHeadModel"], model_type="gpt2")
    with pytest.raises(ModelFileError, match=r"GPT2LMHeadModel.*LlamaForCausalLM, Mistral"):
        convert(d, tmp_path / "x.gguf")


def test_no_weights_and_no_tokenizer(ckpt, tmp_path):
    d, _ = ckpt
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (d / name).unlink()
    with pytest.raises(ModelFileError, match="has no tokenizer"):
        convert(d, tmp_path / "x.gguf")
    _tokenizer(d)
    (d / "model.safetensors").unlink()
    with pytest.raises(ModelFileError, match="has no weights"):
        convert(d, tmp_path / "x.gguf")


def test_unknown_tensor_name(ckpt, tmp_path):
    from safetensors.numpy import save_file

    d, weights = ckpt
    weights["model.layers.0.self_attn.frobnicator.weight"] = np.zeros((4, 4), np.float32)
    save_file(weights, str(d / "model.safetensors"))
    with pytest.raises(ModelFileError, match="frobnicator"):
        convert(d, tmp_path / "x.gguf")


def test_shape_mismatch_and_missing_tensor(ckpt, tmp_path):
    from safetensors.numpy import save_file

    d, weights = ckpt
    good = dict(weights)
    weights["model.layers.1.mlp.up_proj.weight"] = np.zeros((FF + 1, DIM), np.float32)
    save_file(weights, str(d / "model.safetensors"))
    with pytest.raises(ModelFileError, match=r"up_proj.weight' has shape \[81, 64\].*\[80, 64\]"):
        convert(d, tmp_path / "x.gguf")
    del good["model.layers.1.mlp.down_proj.weight"]
    save_file(good, str(d / "model.safetensors"))
    with pytest.raises(ModelFileError, match=r"missing 1 tensors \(model.layers.1.mlp.down_proj"):
        convert(d, tmp_path / "x.gguf")


def test_tokenizer_larger_than_the_vocab(ckpt, tmp_path):
    d, _ = ckpt
    _edit_config(d, vocab_size=100)
    with pytest.raises(ModelFileError, match="do not belong"):
        convert(d, tmp_path / "x.gguf")


def test_unknown_pre_tokenizer(ckpt, tmp_path):
    d, _ = ckpt
    data = json.loads((d / "tokenizer.json").read_text())
    data["pre_tokenizer"] = {"type": "Whitespace"}
    (d / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match=r"pre-tokenizer \(Whitespace\).*supported"):
        convert(d, tmp_path / "x.gguf")


def test_torch_file_with_objects_is_not_unpickled(tmp_path):
    import torch

    d = tmp_path / "evil"
    make_checkpoint(d, fmt="pytorch_model.bin")
    torch.save({"model": Path("/")}, d / "pytorch_model.bin")  # an object, not a tensor
    with pytest.raises(ModelFileError, match="weights_only=True"):
        convert(d, tmp_path / "x.gguf")


def test_bad_outputs(ckpt, tmp_path):
    d, _ = ckpt
    with pytest.raises(ModelFileError, match="is a directory"):
        convert(d, tmp_path)
    with pytest.raises(ModelFileError, match="no such directory"):
        convert(d, tmp_path / "nope" / "x.gguf")
    (tmp_path / "taken.gguf").write_bytes(b"x")
    with pytest.raises(ModelFileError, match="already exists"):
        convert(d, tmp_path / "taken.gguf")
    with pytest.raises(ConfigError, match="f32, f16, q8_0"):
        convert(d, tmp_path / "x.gguf", outtype="q4_0")
    with pytest.raises(ModelFileError, match="does not exist"):
        convert(tmp_path / "absent", tmp_path / "x.gguf")


def test_interrupted_conversion_leaves_nothing(ckpt, tmp_path):
    d, _ = ckpt
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    def stop(done: int, total: int, name: str) -> None:
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert(d, out_dir / "x.gguf", progress=stop)
    assert list(out_dir.iterdir()) == []


# -- sentencepiece ------------------------------------------------------------------------------


def test_sentencepiece_tokenizer_model(tmp_path):
    import io

    sentencepiece = pytest.importorskip("sentencepiece")
    d = tmp_path / "spm"
    make_checkpoint(d)
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXTS),
        model_writer=model,
        vocab_size=320,  # the size of the checkpoint's embeddings
        model_type="bpe",
        byte_fallback=True,
        minloglevel=2,
    )
    (d / "tokenizer.model").write_bytes(model.getvalue())
    (d / "tokenizer.json").unlink()
    sp = sentencepiece.SentencePieceProcessor(model_proto=model.getvalue())
    assert sp.vocab_size() == 320
    convert(d, tmp_path / "sp.gguf", outtype="f16")
    out = tmp_path / "sp.gguf"
    assert field(out, "tokenizer.ggml.model") == "llama"
    assert field(out, "tokenizer.ggml.tokens") == [
        sp.id_to_piece(i) for i in range(sp.vocab_size())
    ]
    scores = field(out, "tokenizer.ggml.scores")
    assert scores == pytest.approx([sp.get_score(i) for i in range(sp.vocab_size())])
    types = field(out, "tokenizer.ggml.token_type")
    assert types[sp.unk_id()] == 2 and types[sp.bos_id()] == 3
    assert types.count(6) == 256  # byte-fallback pieces
    assert field(out, "tokenizer.ggml.add_space_prefix") is True


# -- the exporter -------------------------------------------------------------------------------


def test_export_then_convert_is_exact(ckpt, tmp_path):
    from safetensors.numpy import load_file

    d, weights = ckpt
    convert(d, tmp_path / "t.gguf", outtype="f32")
    result = export_hf(tmp_path / "t.gguf", tmp_path / "hf", max_shard_size=100_000)
    assert result.shards > 1 and (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    exported = {}
    for shard in sorted((tmp_path / "hf").glob("model-*.safetensors")):
        exported |= load_file(str(shard))
    for name, array in weights.items():
        if not name.endswith("inv_freq"):
            np.testing.assert_array_equal(exported[name], array)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["tie_word_embeddings"] is True and config["rope_theta"] == 50000.0
    tok_config = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())
    assert tok_config["chat_template"] == TEMPLATE and tok_config["bos_token"] == "<s>"
    convert(tmp_path / "hf", tmp_path / "again.gguf", outtype="f32")
    a, b = tensors(tmp_path / "t.gguf"), tensors(tmp_path / "again.gguf")
    assert all(np.array_equal(a[n][1], b[n][1]) for n in a) and a.keys() == b.keys()
    assert field(tmp_path / "again.gguf", "tokenizer.ggml.merges") == field(
        tmp_path / "t.gguf", "tokenizer.ggml.merges"
    )


def test_export_refuses_a_non_empty_directory_and_leaves_no_partial(ckpt, tmp_path):
    d, _ = ckpt
    convert(d, tmp_path / "t.gguf", outtype="f16")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with pytest.raises(ModelFileError, match="not empty"):
        export_hf(tmp_path / "t.gguf", tmp_path / "busy")
    with pytest.raises(ConfigError, match="float32, float16"):
        export_hf(tmp_path / "t.gguf", tmp_path / "new", dtype="int4")
    with pytest.raises(ModelFileError, match="is a file"):
        export_hf(tmp_path / "t.gguf", tmp_path / "t.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "t.gguf", "tiny-llama"]


def test_export_refuses_other_architectures(tmp_path):
    path = tmp_path / "gpt2.gguf"
    writer = gguf.GGUFWriter(str(path), "gpt2")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((16, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelFileError, match="architecture 'gpt2'; only 'llama'"):
        export_hf(path, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


# -- the command line ---------------------------------------------------------------------------


def test_cli_convert_summary_json_and_errors(ckpt, tmp_path):
    d, _ = ckpt
    runner = CliRunner()
    ok = runner.invoke(cli, ["convert", str(d), str(tmp_path / "c.gguf"), "--outtype", "q8_0"])
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.startswith(f"wrote {tmp_path / 'c.gguf'} (Q8_0, 20 tensors")
    assert "chat template" in ok.stdout

    js = runner.invoke(cli, ["convert", str(d), str(tmp_path / "c.gguf"), "--overwrite", "--json"])
    assert js.exit_code == 0, js.output
    data = json.loads(js.stdout)
    assert data["outtype"] == "f16" and data["tensors"] == 20 and data["tokenizer"] == "gpt2"

    bad = runner.invoke(cli, ["convert", str(tmp_path), str(tmp_path / "z.gguf")])
    assert bad.exit_code == 1 and "Traceback" not in bad.output
    assert bad.stderr.splitlines() == [
        f"error: {tmp_path}: has no config.json; this is not a "
        "Hugging Face checkpoint directory (copy the model's "
        "config.json next to its weights)"
    ]

    exp = runner.invoke(
        cli, ["export-hf", str(tmp_path / "c.gguf"), str(tmp_path / "hf"), "--json"]
    )
    assert exp.exit_code == 0, exp.output
    assert json.loads(exp.stdout)["tensors"] == 20
    assert (tmp_path / "hf" / "model.safetensors").is_file()
