"""GGUF LoRA files and the PEFT converter, on small GGUF files written here (no llama.cpp)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import gguf
import numpy as np
import pytest
from click.testing import CliRunner

from llamachain.cli.lora_cmd import parse_lora
from llamachain.cli.main import cli
from llamachain.engine._lora import check_scale
from llamachain.errors import ConfigError, ModelFileError
from llamachain.models.lora import (
    BaseModelShapes,
    LoraInfo,
    check_lora_fits,
    convert_peft_lora,
    read_base_shapes,
    read_lora_info,
    write_gguf_lora,
)

DIM, HEADS, HEADS_KV = 8, 2, 1
HEAD_DIM = DIM // HEADS


def _pair(rng, out, inp, r=2):
    return (
        rng.standard_normal((r, inp)).astype(np.float32),
        rng.standard_normal((out, r)).astype(np.float32),
    )


def _tensors(path: Path) -> dict[str, np.ndarray]:
    return {t.name: np.array(t.data) for t in gguf.GGUFReader(path).tensors}


def _write_gguf(path: Path, arch: str, tensors: dict[str, np.ndarray], **kv) -> Path:
    w = gguf.GGUFWriter(str(path), arch)
    for key, value in kv.items():
        if isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        else:
            w.add_uint32(key, value)
    for name, value in tensors.items():
        w.add_tensor(name, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def llama_base(tmp_path) -> Path:
    """A tiny two-layer llama GGUF: q (8x8), k and v (4x8), 2 heads, 1 kv head."""
    tensors = {}
    for i in range(2):
        tensors[f"blk.{i}.attn_q.weight"] = np.zeros((DIM, DIM), np.float32)
        tensors[f"blk.{i}.attn_k.weight"] = np.zeros((HEADS_KV * HEAD_DIM, DIM), np.float32)
        tensors[f"blk.{i}.attn_v.weight"] = np.zeros((HEADS_KV * HEAD_DIM, DIM), np.float32)
    return _write_gguf(
        tmp_path / "tiny-llama.gguf",
        "llama",
        tensors,
        **{
            "llama.block_count": 2,
            "llama.attention.head_count": HEADS,
            "llama.attention.head_count_kv": HEADS_KV,
        },
    )


def _peft(tmp_path: Path, weights: dict[str, np.ndarray], **config) -> Path:
    from safetensors.numpy import save_file

    d = tmp_path / "peft"
    d.mkdir(exist_ok=True)
    save_file(weights, str(d / "adapter_model.safetensors"))
    cfg = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "bias": "none", **config}
    (d / "adapter_config.json").write_text(json.dumps(cfg))
    return d


def _key(layer: int, proj: str, ab: str) -> str:
    return f"base_model.model.model.layers.{layer}.self_attn.{proj}.lora_{ab}.weight"


# -- the --lora option ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a.gguf", ("a.gguf", 1.0)),
        ("a.gguf:0.5", ("a.gguf", 0.5)),
        ("dir/a.gguf:-1", ("dir/a.gguf", -1.0)),
        ("odd:name.gguf", ("odd:name.gguf", 1.0)),
    ],
)
def test_parse_lora(value, expected):
    assert parse_lora(value) == expected


@pytest.mark.parametrize("bad", [math.nan, math.inf, "x", None])
def test_non_finite_or_non_numeric_scales_are_refused(bad):
    with pytest.raises(ConfigError):
        check_scale(bad)


# -- writing and reading adapters ----------------------------------------------------------


@pytest.mark.parametrize("outtype", ["f32", "f16"])
def test_write_then_read_an_adapter(tmp_path, outtype):
    rng = np.random.default_rng(0)
    a, b = _pair(rng, 4, 8, r=3)
    path = write_gguf_lora(
        tmp_path / "x.gguf", {"blk.0.attn_k": (a, b)}, alpha=6, outtype=outtype, name="x"
    )
    info = read_lora_info(path)
    assert info.architecture == "llama" and info.alpha == 6 and info.name == "x"
    assert info.tensors == {"blk.0.attn_k.weight": ((3, 8), (4, 3))} and info.ranks == [3]
    stored = _tensors(path)
    tol = 0 if outtype == "f32" else 2e-3
    np.testing.assert_allclose(stored["blk.0.attn_k.weight.lora_a"], a, rtol=tol, atol=tol)
    np.testing.assert_allclose(stored["blk.0.attn_k.weight.lora_b"], b, rtol=tol, atol=tol)
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize(
    ("tensors", "alpha", "outtype", "words"),
    [
        ({"w": (np.ones((2, 8)), np.ones((4, 3)))}, 1.0, "f32", "must be 2-D"),
        ({"w": (np.full((2, 8), np.nan), np.ones((4, 2)))}, 1.0, "f32", "NaN"),
        ({"w": (np.ones((2, 8)), np.ones((4, 2)))}, 0.0, "f32", "alpha"),
        ({"w": (np.ones((2, 8)), np.ones((4, 2)))}, 1.0, "q4_0", "output type"),
        ({}, 1.0, "f32", "no tensors"),
    ],
)
def test_write_refuses_bad_input(tmp_path, tensors, alpha, outtype, words):
    with pytest.raises(ConfigError, match=words):
        write_gguf_lora(tmp_path / "x.gguf", tensors, alpha=alpha, outtype=outtype)
    assert not list(tmp_path.iterdir())


def test_read_refuses_files_that_are_not_lora_adapters(tmp_path, llama_base):
    with pytest.raises(ModelFileError, match=r"no such file.*llamachain lora convert"):
        read_lora_info(tmp_path / "missing.gguf")
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelFileError, match="not a GGUF file"):
        read_lora_info(tmp_path / "notes.txt")
    with pytest.raises(ModelFileError, match="not a LoRA adapter"):
        read_lora_info(llama_base)
    cvec = _write_gguf(
        tmp_path / "cvec.gguf",
        "llama",
        {"direction.1": np.zeros(8, np.float32)},
        **{"general.type": "adapter", "adapter.type": "control_vector"},
    )
    with pytest.raises(ModelFileError, match="'control_vector' adapter"):
        read_lora_info(cvec)


@pytest.mark.parametrize(
    ("tensors", "words"),
    [
        ({"w.weight.lora_a": np.ones((2, 8), np.float32)}, "no w.weight.lora_b"),
        (
            {
                "w.weight.lora_a": np.ones((2, 8), np.float32),
                "w.weight.lora_b": np.ones((4, 3), np.float32),
            },
            "disagree on the rank",
        ),
        (
            {
                "w.weight.lora_a": np.full((2, 8), np.inf, np.float32),
                "w.weight.lora_b": np.ones((4, 2), np.float32),
            },
            "NaN or infinite",
        ),
        ({"w.weight": np.ones((2, 8), np.float32)}, "neither X.lora_a nor X.lora_b"),
    ],
)
def test_read_refuses_malformed_adapters(tmp_path, tensors, words):
    path = _write_gguf(
        tmp_path / "bad.gguf",
        "llama",
        tensors,
        **{"general.type": "adapter", "adapter.type": "lora", "adapter.lora.alpha": 4.0},
    )
    with pytest.raises(ModelFileError, match=words):
        read_lora_info(path)


def test_read_refuses_a_truncated_adapter(tmp_path):
    rng = np.random.default_rng(1)
    path = write_gguf_lora(tmp_path / "x.gguf", {"w": _pair(rng, 64, 64)}, alpha=1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(ModelFileError, match="truncated"):
        read_lora_info(path)


def test_check_lora_fits():
    base = BaseModelShapes("m.gguf", "llama", 1, 2, 1, {"blk.0.attn_k.weight": (4, 8)})

    def lora(arch="llama", name="blk.0.attn_k.weight", a=(2, 8), b=(4, 2)) -> LoraInfo:
        return LoraInfo("l.gguf", 0, arch, 1.0, {name: (a, b)}, {})

    check_lora_fits(lora(), base)
    with pytest.raises(ModelFileError, match=r"'bloom'.*'llama'"):
        check_lora_fits(lora(arch="bloom"), base)
    with pytest.raises(ModelFileError, match="does not have"):
        check_lora_fits(lora(name="blk.3.attn_k.weight"), base)
    with pytest.raises(ModelFileError, match=r"as a 4x16 matrix.*it is 4x8"):
        check_lora_fits(lora(a=(2, 16)), base)
    # llama.cpp's token-embedding pairs come either way round
    embd = BaseModelShapes("m.gguf", "llama", 1, 2, 1, {"token_embd.weight": (16, 8)})
    check_lora_fits(lora(name="token_embd.weight", a=(2, 16), b=(8, 2)), embd)
    check_lora_fits(lora(name="token_embd.weight", a=(2, 8), b=(16, 2)), embd)
    with pytest.raises(ModelFileError, match="token_embd"):
        check_lora_fits(lora(name="token_embd.weight", a=(2, 9), b=(16, 2)), embd)


# -- PEFT -> GGUF --------------------------------------------------------------------------


def _llama_rows(n_heads: int) -> np.ndarray:
    """llama.cpp row -> HF row, from the definition.

    Rotary pair i of a head: HF rows i and i + d/2, llama.cpp rows 2i and 2i + 1."""
    src = []
    for h in range(n_heads):
        for i in range(HEAD_DIM // 2):
            src += [h * HEAD_DIM + i, h * HEAD_DIM + HEAD_DIM // 2 + i]
    return np.array(src)


def test_convert_renames_and_reorders_q_and_k_rows(tmp_path, llama_base):
    rng = np.random.default_rng(2)
    weights = {}
    for proj, out in (("q_proj", DIM), ("k_proj", HEAD_DIM), ("v_proj", HEAD_DIM)):
        a, b = _pair(rng, out, DIM)
        weights[_key(1, proj, "A")], weights[_key(1, proj, "B")] = a, b
    src = _peft(tmp_path, weights, target_modules=["q_proj", "k_proj", "v_proj"])
    seen = []
    result = convert_peft_lora(
        src, tmp_path / "out.gguf", base=llama_base, progress=lambda d, t: seen.append((d, t))
    )
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert (result.tensors, result.alpha, result.architecture) == (3, 4.0, "llama")
    out = _tensors(result.dst)
    for proj, letter, heads in (("q_proj", "q", HEADS), ("k_proj", "k", HEADS_KV)):
        np.testing.assert_array_equal(
            out[f"blk.1.attn_{letter}.weight.lora_a"], weights[_key(1, proj, "A")]
        )
        expected_b = weights[_key(1, proj, "B")][_llama_rows(heads)]
        np.testing.assert_array_equal(out[f"blk.1.attn_{letter}.weight.lora_b"], expected_b)
    np.testing.assert_array_equal(
        out["blk.1.attn_v.weight.lora_b"], weights[_key(1, "v_proj", "B")]
    )


def test_convert_folds_rslora_and_patterns_into_b(tmp_path, llama_base):
    rng = np.random.default_rng(3)
    a0, b0 = _pair(rng, HEAD_DIM, DIM, r=2)
    a1, b1 = _pair(rng, HEAD_DIM, DIM, r=4)
    weights = {
        _key(0, "v_proj", "A"): a0,
        _key(0, "v_proj", "B"): b0,
        _key(1, "v_proj", "A"): a1,
        _key(1, "v_proj", "B"): b1,
    }
    src = _peft(
        tmp_path,
        weights,
        r=2,
        lora_alpha=4,
        use_rslora=True,
        rank_pattern={"model.layers.1.self_attn.v_proj": 4},
        alpha_pattern={"model.layers.1.self_attn.v_proj": 10},
    )
    result = convert_peft_lora(src, tmp_path / "out.gguf", base=llama_base, outtype="f32")
    out, alpha = _tensors(result.dst), result.alpha
    assert alpha == pytest.approx(4 * math.sqrt(2))
    for layer, (a, b, peft_scale) in enumerate(
        [(a0, b0, 4 / math.sqrt(2)), (a1, b1, 10 / math.sqrt(4))]
    ):
        # what llama.cpp computes (alpha / rank * B @ A) equals what PEFT computes
        rank = a.shape[0]
        got = alpha / rank * out[f"blk.{layer}.attn_v.weight.lora_b"] @ a
        np.testing.assert_allclose(got, peft_scale * b @ a, rtol=1e-5)


def test_convert_reads_pytorch_bin_files(tmp_path, llama_base):
    import torch

    rng = np.random.default_rng(4)
    a, b = _pair(rng, HEAD_DIM, DIM)
    d = _peft(tmp_path, {_key(0, "v_proj", "A"): a, _key(0, "v_proj", "B"): b})
    (d / "adapter_model.safetensors").unlink()
    state = {_key(0, "v_proj", "A"): torch.from_numpy(a).bfloat16()}
    state[_key(0, "v_proj", "B")] = torch.from_numpy(b).bfloat16()
    torch.save(state, d / "adapter_model.bin")
    result = convert_peft_lora(d, tmp_path / "out.gguf", base=llama_base, outtype="f16")
    out = _tensors(result.dst)
    np.testing.assert_allclose(out["blk.0.attn_v.weight.lora_b"], b, rtol=2e-2, atol=2e-2)
    assert read_lora_info(result.dst).tensor_types == {"F16": 2}


def test_convert_bloom_unfuses_the_qkv_rows(tmp_path):
    base = _write_gguf(
        tmp_path / "tiny-bloom.gguf",
        "bloom",
        {"blk.0.attn_qkv.weight": np.zeros((3 * DIM, DIM), np.float32)},
        **{"bloom.block_count": 1, "bloom.attention.head_count": HEADS},
    )
    rng = np.random.default_rng(5)
    a, b = _pair(rng, 3 * DIM, DIM)
    module = "base_model.model.transformer.h.0.self_attention.query_key_value"
    src = _peft(tmp_path, {f"{module}.lora_A.weight": a, f"{module}.lora_B.weight": b})
    out = _tensors(convert_peft_lora(src, tmp_path / "out.gguf", base=base).dst)
    # HF BLOOM rows run (head, q/k/v, dim); llama.cpp's fused weight (q/k/v, head, dim)
    expected = np.empty_like(b)
    for h in range(HEADS):
        for j in range(3):
            for d in range(HEAD_DIM):
                expected[j * DIM + h * HEAD_DIM + d] = b[h * 3 * HEAD_DIM + j * HEAD_DIM + d]
    np.testing.assert_array_equal(out["blk.0.attn_qkv.weight.lora_b"], expected)


@pytest.mark.parametrize(
    ("config", "weights", "words"),
    [
        ({"use_dora": True}, None, "DoRA"),
        ({"modules_to_save": ["lm_head"]}, None, "full copies"),
        ({"bias": "all"}, None, "biases"),
        ({"peft_type": "IA3"}, None, "only LORA"),
        (
            {},
            {"base_model.model.model.embed_tokens.lora_embedding_A": np.ones((2, 8))},
            "not a LoRA",
        ),
        ({}, {_key(0, "v_proj", "A"): np.ones((2, DIM), np.float32)}, "needs lora_A and lora_B"),
        (
            {},
            {
                _key(0, "v_proj", "A"): np.ones((2, 16), np.float32),
                _key(0, "v_proj", "B"): np.ones((4, 2), np.float32),
            },
            "4x16 matrix",
        ),
        (
            {},
            {
                "base_model.model.model.layers.0.mystery.lora_A.weight": np.ones(
                    (2, 8), np.float32
                ),
                "base_model.model.model.layers.0.mystery.lora_B.weight": np.ones(
                    (4, 2), np.float32
                ),
            },
            "cannot map",
        ),
    ],
)
def test_convert_refuses_what_a_gguf_lora_cannot_hold(tmp_path, llama_base, config, weights, words):
    rng = np.random.default_rng(6)
    if weights is None:
        a, b = _pair(rng, HEAD_DIM, DIM)
        weights = {_key(0, "v_proj", "A"): a, _key(0, "v_proj", "B"): b}
    src = _peft(tmp_path, {k: np.asarray(v, np.float32) for k, v in weights.items()}, **config)
    with pytest.raises((ConfigError, ModelFileError), match=words):
        convert_peft_lora(src, tmp_path / "out.gguf", base=llama_base)
    assert not (tmp_path / "out.gguf").exists()


def test_convert_needs_a_base_model(tmp_path, llama_base):
    rng = np.random.default_rng(7)
    a, b = _pair(rng, HEAD_DIM, DIM)
    weights = {_key(0, "v_proj", "A"): a, _key(0, "v_proj", "B"): b}
    src = _peft(tmp_path, weights, base_model_name_or_path="someone/some-model")
    with pytest.raises(ConfigError, match=r"'someone/some-model'.*--base"):
        convert_peft_lora(src, tmp_path / "out.gguf")
    # a local GGUF named in the config is used as the base
    cfg = json.loads((src / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(llama_base)
    (src / "adapter_config.json").write_text(json.dumps(cfg))
    assert convert_peft_lora(src, tmp_path / "out.gguf").base == str(llama_base)
    with pytest.raises(ModelFileError, match=r"no adapter_config.json"):
        convert_peft_lora(tmp_path, tmp_path / "x.gguf", base=llama_base)


def test_convert_refuses_unsupported_architectures(tmp_path):
    base = _write_gguf(
        tmp_path / "tiny-gemma.gguf",
        "gemma3",
        {"blk.0.attn_q.weight": np.zeros((DIM, DIM), np.float32)},
        **{"gemma3.block_count": 1},
    )
    assert read_base_shapes(base).architecture == "gemma3"
    rng = np.random.default_rng(8)
    a, b = _pair(rng, DIM, DIM)
    src = _peft(tmp_path, {_key(0, "q_proj", "A"): a, _key(0, "q_proj", "B"): b})
    with pytest.raises(ConfigError, match=r"'gemma3'.*supported: llama, bloom"):
        convert_peft_lora(src, tmp_path / "out.gguf", base=base)


def test_lora_cli_convert_and_info(tmp_path, llama_base):
    rng = np.random.default_rng(9)
    a, b = _pair(rng, HEAD_DIM, DIM)
    src = _peft(tmp_path, {_key(0, "v_proj", "A"): a, _key(0, "v_proj", "B"): b})
    out = tmp_path / "out.gguf"
    runner = CliRunner()
    ok = runner.invoke(cli, ["lora", "convert", str(src), str(out), "--base", str(llama_base)])
    assert ok.exit_code == 0, ok.output
    assert f"wrote {out}: 1 adapted weights, rank 2, alpha 4, f32" in ok.output
    info = runner.invoke(cli, ["lora", "info", str(out)])
    assert info.exit_code == 0 and "blk.0.attn_v.weight  A 2x8  B 4x2" in info.output
    bad = runner.invoke(
        cli, ["lora", "convert", str(tmp_path / "nope"), str(out), "--base", str(llama_base)]
    )
    assert bad.exit_code == 1
    assert bad.output.count("\n") == 1 and bad.output.startswith("error: ")
    assert "PEFT" in bad.output
