"""Round trip of the bundled model: GGUF -> Hugging Face checkpoint -> GGUF, run by llama.cpp
and by transformers; and tiny random checkpoints that llama.cpp and transformers must agree on.

The export is made once per module: SmolLM2-135M-Instruct Q4_1, dequantized to float32
safetensors (~540 MB).  ``quantized_variant("f32")`` is the exact dequantization of the
shipped file, so it is the reference the f32 round trip must reproduce.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np
import pytest

from llamachain.models import quantized_variant, read_model_info, resolve_model_path
from llamachain.models.convert import convert
from llamachain.models.export_hf import export_hf

PROMPT = (
    "The capital of France is Paris. The capital of Germany is Berlin. "
    "Here is a Python function that adds two numbers:\ndef add(a, b):\n"
)
PROMPTS = [
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
]
TEXTS = [
    "Hello, world!",
    "naïve café — 日本語のテキスト, emoji 🚀🦙 and Ünïcödé",
    "def f(x):\n\treturn x ** 2  # 1234567890\n",
    "spaces:    four, then\n\n\n three newlines and trailing   ",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nhi<|im_end|>",
]


def llama(path: Path, n_ctx: int = 256):
    import llama_cpp

    return llama_cpp.Llama(
        str(path), n_ctx=n_ctx, logits_all=True, n_threads=1, seed=0, verbose=False
    )


def llama_logits(path: Path, ids: list[int]) -> np.ndarray:
    model = llama(path)
    model.eval(ids)
    out = np.array(model.scores[: len(ids)], dtype=np.float32)
    model.close()
    return out


def greedy(path: Path, prompts: list[str], n: int = 16) -> list[list[int]]:
    model = llama(path)
    runs = []
    for prompt in prompts:
        model.reset()
        ids = model.tokenize(prompt.encode(), add_bos=False, special=True)
        out = []
        for token in model.generate(ids, temp=0.0, top_k=1, reset=True):
            out.append(token)
            if len(out) == n:
                break
        runs.append(out)
    model.close()
    return runs


def gap(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(max |a - b| relative to a's logit spread, share of positions with the same top-1)."""
    rel = float(np.abs(a - b).max() / (a.max() - a.min()))
    return rel, float((a.argmax(-1) == b.argmax(-1)).mean())


def read(path: Path) -> tuple[dict[str, object], dict[str, tuple[str, np.ndarray]]]:
    """(metadata, tensor name -> (type, raw data)) of a GGUF file, parsed once."""
    reader = gguf.GGUFReader(str(path))
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    return fields, {t.name: (t.tensor_type.name, np.asarray(t.data)) for t in reader.tensors}


def assert_same_tensors(got: Path, want: Path) -> dict[str, object]:
    """Each tensor of ``got`` has the type and bytes of ``want``'s; returns ``got``'s fields."""
    fields, tensors = read(got)
    _, reference = read(want)
    assert tensors.keys() == reference.keys()
    for name, (kind, data) in reference.items():
        assert tensors[name][0] == kind, name
        np.testing.assert_array_equal(tensors[name][1], data, err_msg=name)
    return fields


@pytest.fixture(scope="module")
def source() -> Path:
    return resolve_model_path(None)


@pytest.fixture(scope="module")
def source_f32(variants_home: Path) -> Path:
    return quantized_variant("f32", variants_home)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory, source: Path) -> Path:
    out = tmp_path_factory.mktemp("hf-export") / "smollm2-hf"
    result = export_hf(source, out)
    assert result.tensors == 272 and result.shards == 1 and result.dtype == "float32"
    return out


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory, hf_dir: Path) -> Iterator[dict[str, Path]]:
    """Each output type converted back from the export, made when first asked for."""
    out_dir = tmp_path_factory.mktemp("hf-convert")

    class Lazy(dict[str, Path]):
        def __missing__(self, outtype: str) -> Path:
            path = out_dir / f"smollm2.{outtype}.gguf"
            convert(hf_dir, path, outtype=outtype)
            self[outtype] = path
            return path

    yield Lazy()
    shutil.rmtree(out_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def prompt_ids(source: Path) -> list[int]:
    model = llama(source)
    ids = model.tokenize(PROMPT.encode(), add_bos=False)
    model.close()
    return list(ids)


@pytest.fixture(scope="module")
def f32_logits(source_f32: Path, prompt_ids: list[int]) -> np.ndarray:
    """llama.cpp's logits on the exact dequantization of the shipped file."""
    return llama_logits(source_f32, prompt_ids)


# -- the export is a genuine Hugging Face checkpoint ------------------------------------------


def test_transformers_runs_the_export_like_llama_cpp(hf_dir, source, f32_logits, prompt_ids):
    import torch
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(hf_dir, dtype=torch.float32, local_files_only=True)
    assert model.config.tie_word_embeddings and model.config.num_key_value_heads == 3
    with torch.no_grad():
        hf = model(torch.tensor([prompt_ids])).logits[0].numpy()
    exact = f32_logits  # the same weights, F32 in llama.cpp
    shipped = llama_logits(source, prompt_ids)  # Q4_1/Q8_0 weights x 8-bit activations
    rel_exact, top_exact = gap(hf, exact)
    rel_shipped, top_shipped = gap(hf, shipped)
    baseline, _ = gap(exact, shipped)  # what llama.cpp's own quantized kernels account for
    print(f"\nHF vs llama.cpp F32: max|d|/spread {rel_exact:.2e}, top-1 {top_exact:.2f}")
    print(f"HF vs Q4_1: {rel_shipped:.2e}, top-1 {top_shipped:.2f} (F32 vs Q4_1 {baseline:.2e})")
    # Same weights, both in float32: only summation order differs.
    assert rel_exact < 1e-3 and top_exact == 1.0
    # Against the shipped file the gap is llama.cpp's quantized arithmetic, not the export:
    # it is no larger than llama.cpp's own F32-vs-Q4_1 gap (plus the float32 noise above).
    assert rel_shipped <= baseline + 2 * rel_exact
    assert top_shipped >= 0.9


def test_exported_tokenizer_matches_llama_cpp(hf_dir, source):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(hf_dir, local_files_only=True)
    model = llama(source)
    for text in TEXTS:
        ids = model.tokenize(text.encode(), add_bos=False, special=True)
        assert tok(text)["input_ids"] == ids, text
        assert tok.decode(ids) == text
    model.close()
    messages = [{"role": "user", "content": "hi"}]
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert rendered.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == (
        "<|im_start|>",
        "<|im_end|>",
        "<|im_end|>",
    )


# -- converting it back -----------------------------------------------------------------------


def test_f32_round_trip_is_exact(converted, source, source_f32, f32_logits, prompt_ids):
    out = converted["f32"]
    back = assert_same_tensors(out, source_f32)
    assert {kind for kind, _ in read(source_f32)[1].values()} == {"F32"}
    np.testing.assert_array_equal(llama_logits(out, prompt_ids), f32_logits)

    src = read(source)[0]
    same = [
        "general.architecture",
        "llama.context_length",
        "llama.embedding_length",
        "llama.block_count",
        "llama.feed_forward_length",
        "llama.attention.head_count",
        "llama.attention.head_count_kv",
        "llama.rope.dimension_count",
        "llama.rope.freq_base",
        "llama.attention.layer_norm_rms_epsilon",
        "llama.vocab_size",
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.padding_token_id",
        "tokenizer.ggml.add_bos_token",
        "tokenizer.ggml.add_space_prefix",
        "tokenizer.chat_template",
    ]
    assert {k: back.get(k) for k in same} == {k: src[k] for k in same}
    assert back["general.file_type"] == 0 and back["general.name"] == "smollm2-hf"


def test_f32_round_trip_generates_the_same_tokens(converted, source_f32):
    want = greedy(source_f32, PROMPTS)
    assert all(len(run) == 16 for run in want)
    assert greedy(converted["f32"], PROMPTS) == want


@pytest.mark.parametrize("outtype", ["f16", "q8_0"])
def test_f16_and_q8_0_match_llama_cpp_quantize(
    outtype, converted, source_f32, f32_logits, variants_home, prompt_ids
):
    """Our f16 / q8_0 files hold the very bytes llama.cpp's own quantizer writes."""
    out = converted[outtype]
    assert_same_tensors(out, quantized_variant(outtype, variants_home))
    info = read_model_info(out)  # our own checks, as every llamachain loader runs them
    assert (info.architecture, info.file_type, info.parameters) == (
        "llama",
        outtype.upper(),
        134515008,
    )
    assert info.has_chat_template and info.context_length == 8192
    f32_size = source_f32.stat().st_size
    ratio = out.stat().st_size / f32_size
    assert ratio == pytest.approx({"f16": 0.50, "q8_0": 34 / 32 / 4}[outtype], abs=0.01)
    rel, top = gap(f32_logits, llama_logits(out, prompt_ids))
    print(f"\n{outtype} vs F32 source: max|d|/spread {rel:.2e}, top-1 {top:.2f}, size {ratio:.3f}")
    assert rel < {"f16": 0.005, "q8_0": 0.06}[outtype] and top >= 0.9


# -- tiny random checkpoints: llama.cpp runs what transformers runs ---------------------------

TINY = {
    "llama-untied-head-dim-32": {"head_dim": 32, "tie_word_embeddings": False},
    "llama-linear-rope": {"rope_scaling": {"rope_type": "linear", "factor": 4.0}},
    "llama3-rope": {
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        }
    },
    "llama-yarn-rope": {
        "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}
    },
    "mistral": {"architecture": "MistralForCausalLM", "sliding_window": None},
}


@pytest.mark.parametrize("kind", list(TINY))
def test_tiny_checkpoint_runs_the_same_in_llama_cpp(kind, hf_dir, tmp_path):
    import torch
    import transformers

    extra = dict(TINY[kind])
    arch = str(extra.pop("architecture", "LlamaForCausalLM"))
    config_cls = getattr(transformers, arch.replace("ForCausalLM", "Config"))
    config = config_cls(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        **extra,
    )
    torch.manual_seed(0)
    model = getattr(transformers, arch)(config).eval()
    with torch.no_grad():  # larger weights than the default init, so logits are not flat
        for p in model.parameters():
            p.normal_(0, 0.3)
    d = tmp_path / kind
    model.save_pretrained(d)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(hf_dir / name, d / name)
    convert(d, tmp_path / "tiny.gguf", outtype="f32")
    ids = list(np.random.default_rng(1).integers(20, 49000, size=48))
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0].numpy()
    got = llama_logits(tmp_path / "tiny.gguf", ids)
    rel, top = gap(want, got)
    assert rel < 1e-3 and top == 1.0, (kind, rel, top)


def test_sentencepiece_tokenizer_tokenizes_like_sentencepiece(tmp_path):
    import io

    sentencepiece = pytest.importorskip("sentencepiece")
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    corpus = [t for t in TEXTS[:4] for _ in range(30)] + [PROMPT] * 30
    spm = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=spm,
        vocab_size=400,
        model_type="bpe",
        byte_fallback=True,
        # Llama's own settings: no normalization (llama.cpp applies none), digits split.
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        split_digits=True,
        minloglevel=2,
    )
    sp = sentencepiece.SentencePieceProcessor(model_proto=spm.getvalue())
    config = LlamaConfig(
        vocab_size=sp.vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        bos_token_id=sp.bos_id(),
        eos_token_id=sp.eos_id(),
    )
    torch.manual_seed(0)
    d = tmp_path / "spm"
    LlamaForCausalLM(config).save_pretrained(d)
    (d / "tokenizer.model").write_bytes(spm.getvalue())
    convert(d, tmp_path / "spm.gguf", outtype="f16")
    model = llama(tmp_path / "spm.gguf")
    for text in [*TEXTS[:4], PROMPT, "unseen: Ω ≈ ∑ 🦙"]:
        assert model.tokenize(text.encode(), add_bos=True) == [sp.bos_id(), *sp.encode(text)], text
    model.close()
    assert json.loads((d / "config.json").read_text())["vocab_size"] == sp.vocab_size()
