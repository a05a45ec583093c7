"""LoRA adapters through real llama.cpp on the bundled model.

Logits are compared on the exact F32 dequantization of the bundled Q4_1 model, with an F32
KV cache: with llama.cpp's default F16 cache, K/V rounding alone moves logits by ~0.02 when
the same computation is merely split differently, which would hide an adapter's error.  With
F32 everywhere the rounding noise measured between two batch splits of the same model is
~3e-5, so ``TOL = 1e-3`` (30x that) separates "the same function" from "a different one"; every
adapter here moves the logits by more than ``100 * TOL``.

"The same function" is checked against a merged model: a copy of the F32 base GGUF whose
adapted weights are overwritten in place with ``W + scale * alpha / r * B @ A``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np
import pytest
from click.testing import CliRunner

from llamachain import ChatLlama, LlamaLLM
from llamachain.cli.main import cli
from llamachain.engine import LlamaEngine
from llamachain.engine.cache import LoadParams, ModelCache, _load
from llamachain.errors import ConfigError, LlamaChainError, ModelFileError
from llamachain.models import quantized_variant, resolve_model_path
from llamachain.models.lora import convert_peft_lora, read_lora_info, write_gguf_lora

PROMPT = b"The capital of France is Paris, and the capital of Italy is"
TOL = 1e-3
N_HEAD, N_HEAD_KV, HEAD_DIM = 9, 3, 64


@pytest.fixture(scope="session")
def f32_base(variants_home: Path) -> str:
    return str(quantized_variant("f32", variants_home))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lora")


def _random_pair(rng: np.random.Generator, out: int, inp: int, rank: int, std: float):
    a = rng.standard_normal((rank, inp)).astype(np.float32) * std
    b = rng.standard_normal((out, rank)).astype(np.float32) * std
    return a, b


class MergedModel:
    """One writable copy of the F32 base whose weights ``merged(deltas)`` sets to ``W + delta``
    (numpy order (n_out, n_in)), so every merged model of the module shares one 540 MB file."""

    def __init__(self, base: str, path: Path) -> None:
        shutil.copyfile(base, path)
        self.path = str(path)
        self.tensors = {t.name: t for t in gguf.GGUFReader(base).tensors}

    @contextlib.contextmanager
    def merged(self, deltas: dict[str, np.ndarray]) -> Iterator[str]:
        data = np.memmap(self.path, dtype=np.uint8, mode="r+")
        try:
            for name, delta in deltas.items():
                self._write(data, name, np.asarray(self.tensors[name].data) + delta)
            data.flush()
            yield self.path
        finally:
            for name in deltas:  # back to the base weights
                self._write(data, name, np.asarray(self.tensors[name].data))
            data.flush()
            del data

    def _write(self, data: np.ndarray, name: str, values: np.ndarray) -> None:
        t = self.tensors[name]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        assert values.shape == tuple(t.data.shape), (name, values.shape, t.data.shape)
        raw = np.frombuffer(values.astype(np.float32).tobytes(), dtype=np.uint8)
        start = int(t.data_offset)
        data[start : start + raw.size] = raw


@pytest.fixture(scope="module")
def merged(f32_base: str, work: Path) -> MergedModel:
    return MergedModel(f32_base, work / "merged.gguf")


def _logits(path: str, lora: tuple[tuple[str, float], ...] = ()) -> np.ndarray:
    """Every prompt position's logits, through our own loader (so through engine/_lora.py)."""
    extra = (("logits_all", True), ("type_k", 0), ("type_v", 0))  # ggml type 0: F32 cache
    model = _load(LoadParams(path=path, n_ctx=64, n_threads=2, lora=lora, extra=extra))
    try:
        llama = model.llama
        tokens = llama.tokenize(PROMPT)
        llama.eval(tokens)
        return np.array(llama.scores[: len(tokens)], dtype=np.float32)
    finally:
        model.close()


def _diff(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.abs(x - y).max())


@pytest.fixture(scope="module")
def adapters(work: Path) -> dict[str, tuple[str, dict[str, tuple[np.ndarray, np.ndarray]], float]]:
    """name -> (path, {weight: (A, B)}, alpha) for the generated adapters."""
    rng = np.random.default_rng(1234)
    one = {
        "blk.0.attn_q.weight": _random_pair(rng, 576, 576, 4, 0.08),
        "blk.5.ffn_down.weight": _random_pair(rng, 576, 1536, 4, 0.05),
    }
    two = {
        "blk.0.attn_q.weight": _random_pair(rng, 576, 576, 2, 0.08),
        "blk.12.ffn_up.weight": _random_pair(rng, 1536, 576, 2, 0.05),
    }
    zero = {k: (a, np.zeros_like(b)) for k, (a, b) in one.items()}
    out = {}
    for name, tensors, alpha in (("one", one, 8.0), ("two", two, 4.0), ("zero", zero, 8.0)):
        path = write_gguf_lora(work / f"{name}.gguf", tensors, alpha=alpha, name=name)
        out[name] = (str(path), tensors, alpha)
    return out


def _delta(tensors: dict[str, tuple[np.ndarray, np.ndarray]], alpha: float, scale: float):
    return {
        k: scale * (alpha / a.shape[0]) * (b.astype(np.float64) @ a.astype(np.float64))
        for k, (a, b) in tensors.items()
    }


@pytest.fixture(scope="module")
def base_logits(f32_base: str) -> np.ndarray:
    return _logits(f32_base)


def test_a_zero_adapter_leaves_the_logits_unchanged(f32_base, adapters, base_logits):
    zero = _logits(f32_base, ((adapters["zero"][0], 1.0),))
    assert _diff(zero, base_logits) <= TOL


def test_an_adapter_changes_the_logits_as_the_merged_weights_do(
    f32_base, adapters, base_logits, merged
):
    path, tensors, alpha = adapters["one"]
    scale = 0.7
    with merged.merged(_delta(tensors, alpha, scale)) as merged_path:
        expected = _logits(merged_path)
    with_adapter = _logits(f32_base, ((path, scale),))
    assert _diff(with_adapter, base_logits) > 100 * TOL  # it does something...
    assert _diff(with_adapter, expected) <= TOL  # ...and exactly what the merged model does
    assert _diff(_logits(f32_base, ((path, 0.0),)), base_logits) <= TOL  # scale 0: no effect


def test_two_adapters_add_their_scaled_deltas(f32_base, adapters, base_logits, merged):
    (p1, t1, a1), (p2, t2, a2) = adapters["one"], adapters["two"]
    s1, s2 = 0.5, -1.5
    deltas = _delta(t1, a1, s1)
    for name, d in _delta(t2, a2, s2).items():  # both adapt blk.0.attn_q: the deltas add up
        deltas[name] = deltas.get(name, 0) + d
    with merged.merged(deltas) as merged_path:
        expected = _logits(merged_path)
    both = _logits(f32_base, ((p1, s1), (p2, s2)))
    assert _diff(both, base_logits) > 100 * TOL
    assert _diff(both, expected) <= TOL


# -- PEFT conversion -----------------------------------------------------------------------


def _hf_to_llama_cpp_rows(n_heads: int, head_dim: int) -> np.ndarray:
    """For each llama.cpp row, the Hugging Face row it comes from (written out from the
    definition: HF keeps each head's rotary pair i at rows i and i + head_dim/2, llama.cpp at
    rows 2i and 2i+1)."""
    source = np.empty(n_heads * head_dim, dtype=np.int64)
    half = head_dim // 2
    for h in range(n_heads):
        for i in range(half):
            source[h * head_dim + 2 * i] = h * head_dim + i
            source[h * head_dim + 2 * i + 1] = h * head_dim + half + i
    return source


@pytest.fixture(scope="module")
def peft_dir(work: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A PEFT adapter directory (q/k/v of layers 0 and 9) and its per-module deltas, in HF
    orientation and row order (``model.layers.N.self_attn.X_proj`` -> B @ A * alpha / r)."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(99)
    r, alpha = 4, 16
    weights, deltas = {}, {}
    for layer in (0, 9):
        for proj, out in (("q_proj", 576), ("k_proj", 192), ("v_proj", 192)):
            a, b = _random_pair(rng, out, 576, r, 0.06)
            module = f"model.layers.{layer}.self_attn.{proj}"
            weights[f"base_model.model.{module}.lora_A.weight"] = a
            weights[f"base_model.model.{module}.lora_B.weight"] = b
            deltas[module] = (alpha / r) * (b.astype(np.float64) @ a.astype(np.float64))
    d = work / "peft-adapter"
    d.mkdir()
    save_file(weights, str(d / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "r": r,
        "lora_alpha": alpha,
        "target_modules": ["q_proj", "k_proj", "v_proj"],
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
    }
    (d / "adapter_config.json").write_text(json.dumps(config))
    return d, deltas


def _gguf_deltas(deltas: dict[str, np.ndarray], reorder: bool) -> dict[str, np.ndarray]:
    rows = {"q_proj": _hf_to_llama_cpp_rows(N_HEAD, HEAD_DIM)}
    rows["k_proj"] = _hf_to_llama_cpp_rows(N_HEAD_KV, HEAD_DIM)
    out = {}
    for module, delta in deltas.items():
        layer, proj = int(module.split(".")[2]), module.rsplit(".", 1)[1]
        name = f"blk.{layer}.attn_{proj[0]}.weight"
        out[name] = delta[rows[proj]] if reorder and proj in rows else delta
    return out


def test_a_converted_peft_adapter_matches_the_merged_model(
    f32_base, peft_dir, base_logits, work, merged
):
    src, deltas = peft_dir
    result = convert_peft_lora(src, work / "peft.gguf", base=f32_base)
    assert result.tensors == 6 and result.ranks == [4] and result.alpha == 16
    info = read_lora_info(result.dst)
    assert set(info.tensors) == {
        f"blk.{n}.attn_{x}.weight" for n in (0, 9) for x in ("q", "k", "v")
    }
    converted = _logits(f32_base, ((str(result.dst), 1.0),))
    with merged.merged(_gguf_deltas(deltas, reorder=True)) as merged_path:
        expected = _logits(merged_path)
    # The test can tell a wrong q/k row order: merging the deltas unreordered is far off.
    with merged.merged(_gguf_deltas(deltas, reorder=False)) as merged_path:
        unreordered = _logits(merged_path)
    assert _diff(converted, base_logits) > 100 * TOL
    assert _diff(converted, expected) <= TOL
    assert _diff(converted, unreordered) > 100 * TOL


def test_lora_convert_on_the_command_line(f32_base, peft_dir, work):
    src, _ = peft_dir
    out = work / "cli.gguf"
    runner = CliRunner()
    ok = runner.invoke(cli, ["lora", "convert", str(src), str(out), "--base", f32_base])
    assert ok.exit_code == 0, ok.output
    assert "6 adapted weights" in ok.output and read_lora_info(out).architecture == "llama"
    info = runner.invoke(cli, ["lora", "info", str(out), "--json"])
    assert info.exit_code == 0 and json.loads(info.output)["ranks"] == [4]
    # no --base, and the config names a Hugging Face repo: one clear line, no traceback
    bad = runner.invoke(cli, ["lora", "convert", str(src), str(work / "x.gguf")])
    assert bad.exit_code == 1
    lines = bad.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--base" in lines[0]
    assert not (work / "x.gguf").exists()


# -- the LangChain adapters and the engine ---------------------------------------------------


def test_chat_and_llm_generate_with_adapters(adapters):
    base_model = str(resolve_model_path(None))  # the shipped Q4_1: same shapes as the F32 copy
    kwargs = dict(model_path=base_model, temperature=0, max_tokens=8, n_ctx=256, n_threads=2)
    # adapters evaluate prompts on the file itself, not on the Q8_0 prompt copy: compare
    # with the same path, or rounding in the copy's KV could change the greedy text
    plain = ChatLlama(**kwargs, prefill_copy="off").invoke("Name a colour.").content
    zero = ChatLlama(**kwargs, lora=[(adapters["zero"][0], 1.0)]).invoke("Name a colour.").content
    assert plain and zero == plain  # a zero adapter: the same greedy text
    strong = [(adapters["one"][0], 30.0), (adapters["two"][0], 30.0)]
    llm = LlamaLLM(**kwargs, lora=strong)
    changed = llm.invoke("The colour of the sky is")
    base_text = LlamaLLM(**kwargs).invoke("The colour of the sky is")
    assert changed.strip() and changed != base_text


def test_engines_with_different_adapters_get_their_own_model(adapters, f32_base):
    cache = ModelCache()
    plain = LlamaEngine(f32_base, n_ctx=64, n_threads=1, cache=cache)
    adapted = LlamaEngine(
        f32_base, n_ctx=64, n_threads=1, lora=[(adapters["one"][0], 1)], cache=cache
    )
    try:
        plain.load(), adapted.load()
        assert len(cache) == 2
        assert {tuple(m["lora"]) for m in cache.list()} == {(), ((adapters["one"][0], 1.0),)}
    finally:
        plain.close(), adapted.close()
    assert len(cache) == 0


@pytest.fixture(scope="module")
def bad_adapters(work: Path, adapters) -> dict[str, Path]:
    rng = np.random.default_rng(5)
    out = {
        "other-arch": write_gguf_lora(
            work / "gemma.gguf",
            {"blk.0.attn_q.weight": _random_pair(rng, 576, 576, 4, 0.1)},
            alpha=8,
            architecture="gemma3",
        ),
        "wrong-shape": write_gguf_lora(
            work / "wide.gguf",
            {"blk.0.attn_q.weight": _random_pair(rng, 1024, 1024, 4, 0.1)},
            alpha=8,
        ),
        "no-such-weight": write_gguf_lora(
            work / "deep.gguf",
            {"blk.40.attn_q.weight": _random_pair(rng, 576, 576, 4, 0.1)},
            alpha=8,
        ),
    }
    truncated = work / "truncated.gguf"
    data = Path(adapters["one"][0]).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    out["truncated"] = truncated
    return out


@pytest.mark.parametrize(
    ("which", "error", "words"),
    [
        ("missing", ModelFileError, "no such file"),
        ("model", ModelFileError, "not a LoRA adapter"),
        ("other-arch", ModelFileError, "'gemma3'"),
        ("wrong-shape", ModelFileError, "1024x1024"),
        ("no-such-weight", ModelFileError, "does not have"),
        ("truncated", ModelFileError, "truncated"),
    ],
)
def test_bad_adapters_are_refused_with_a_clear_error(which, error, words, bad_adapters, work):
    paths = {"missing": work / "nope.gguf", "model": resolve_model_path(None), **bad_adapters}
    llm = ChatLlama(temperature=0, max_tokens=4, n_ctx=64, lora=[(str(paths[which]), 1.0)])
    with pytest.raises(error, match=words) as caught:
        llm.invoke("hi")
    assert isinstance(caught.value, LlamaChainError)


def test_a_non_finite_scale_is_refused(adapters):
    llm = LlamaLLM(temperature=0, max_tokens=4, n_ctx=64, lora=[(adapters["one"][0], float("nan"))])
    with pytest.raises(ConfigError, match="finite"):
        llm.invoke("hi")


def test_generate_takes_lora_on_the_command_line(adapters, monkeypatch):
    monkeypatch.setenv("LLAMACHAIN_N_CTX", "256")
    monkeypatch.setenv("LLAMACHAIN_N_THREADS", "2")
    monkeypatch.setenv("LLAMACHAIN_PREFILL_COPY", "off")  # as with adapters: prompts on the file
    args = ["generate", "Name a colour.", "-t", "0", "--max-tokens", "6", "--json"]
    runner = CliRunner()
    plain = runner.invoke(cli, args)
    zero = runner.invoke(cli, [*args, "--lora", f"{adapters['zero'][0]}:1.0"])
    assert plain.exit_code == 0 and zero.exit_code == 0, zero.output
    assert json.loads(zero.output)["text"] == json.loads(plain.output)["text"]
    bad = runner.invoke(cli, [*args, "--lora", str(resolve_model_path(None))])
    assert bad.exit_code == 1 and "not a LoRA adapter" in bad.output


def test_chat_takes_lora_on_the_command_line(adapters, monkeypatch):
    monkeypatch.setenv("LLAMACHAIN_N_CTX", "256")
    monkeypatch.setenv("LLAMACHAIN_N_THREADS", "2")
    monkeypatch.setenv("LLAMACHAIN_PREFILL_COPY", "off")  # as with adapters: prompts on the file
    runner = CliRunner()
    args = ["chat", "-t", "0", "--max-tokens", "6"]
    plain = runner.invoke(cli, args, input="Name a colour.\n")
    zero = runner.invoke(cli, [*args, "--lora", adapters["zero"][0]], input="Name a colour.\n")
    assert plain.exit_code == 0 and zero.exit_code == 0, zero.output
    assert zero.stdout == plain.stdout and zero.stdout.strip()
    with_kb = runner.invoke(cli, [*args, "--kb", "docs", "--lora", adapters["zero"][0]])
    assert with_kb.exit_code == 2 and "--lora applies to chat without --kb" in with_kb.output


def test_a_converted_bloom_adapter_matches_the_merged_model(work):
    """BLOOM's fused query_key_value: Hugging Face keeps its rows as (head, q/k/v, dim)
    (BloomAttention views the projection so), llama.cpp as (q/k/v, head, dim)."""
    from safetensors.numpy import save_file

    from llamachain.models.lora import read_base_shapes
    from llamachain.models.zoo import write_tiny_model

    base = str(write_tiny_model("bloom", work / "tiny-bloom.gguf", seed=3))
    shapes = read_base_shapes(base)
    heads, dim = shapes.head_count, shapes.shapes["blk.0.attn_qkv.weight"][1]
    per = dim // heads
    n_ff = shapes.shapes["blk.1.ffn_down.weight"][1]
    rng = np.random.default_rng(11)
    r, alpha = 2, 4
    weights, deltas = {}, {}
    for module, gguf_name, out, inp in (
        ("transformer.h.0.self_attention.query_key_value", "blk.0.attn_qkv.weight", 3 * dim, dim),
        ("transformer.h.1.mlp.dense_4h_to_h", "blk.1.ffn_down.weight", dim, n_ff),
    ):
        a, b = _random_pair(rng, out, inp, r, 0.5)
        weights[f"base_model.model.{module}.lora_A.weight"] = a
        weights[f"base_model.model.{module}.lora_B.weight"] = b
        deltas[gguf_name] = (alpha / r) * (b.astype(np.float64) @ a.astype(np.float64))
    src = work / "peft-bloom"
    src.mkdir()
    save_file(weights, str(src / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "bias": "none"}
    (src / "adapter_config.json").write_text(json.dumps(config))
    converted = convert_peft_lora(src, work / "bloom-lora.gguf", base=base)

    hf_qkv = deltas["blk.0.attn_qkv.weight"]
    llama_cpp_qkv = np.empty_like(hf_qkv)
    for h in range(heads):
        for j in range(3):  # q, k, v
            rows = slice(j * dim + h * per, j * dim + (h + 1) * per)
            llama_cpp_qkv[rows] = hf_qkv[h * 3 * per + j * per : h * 3 * per + (j + 1) * per]
    merged = MergedModel(base, work / "tiny-bloom-merged.gguf")
    with merged.merged({**deltas, "blk.0.attn_qkv.weight": llama_cpp_qkv}) as path:
        expected = _logits(path)
    with merged.merged(deltas) as path:  # the Hugging Face row order left as it was
        unreordered = _logits(path)
    base_logits = _logits(base)
    with_adapter = _logits(base, ((str(converted.dst), 1.0),))
    assert _diff(with_adapter, base_logits) > 100 * TOL
    assert _diff(with_adapter, expected) <= TOL
    assert _diff(with_adapter, unreordered) > 100 * TOL
