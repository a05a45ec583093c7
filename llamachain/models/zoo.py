"""The architecture zoo: tiny random-weight GGUF models, one per architecture family.

Each file has seeded random weights with exactly the tensors llama.cpp's loader wants for
its architecture, and a small real tokenizer of the kind that family uses (byte-level BPE,
SentencePiece, unigram or RWKV's trie), so it loads in a fraction of a second and runs
through :class:`~llamachain.LlamaLLM` / :class:`~llamachain.ChatLlama` like any model.
They produce no meaningful text: they prove that a family loads, tokenizes and generates.

>>> from llamachain.models.zoo import write_tiny_model
>>> path = write_tiny_model("gpt2", "/tmp/tiny-gpt2.gguf")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from llamachain.errors import ConfigError, ModelFileError
from llamachain.models import _zoo_tokenizers as tok
from llamachain.models._zoo_arches import BUILDERS, Dims, TensorSpec

logger = logging.getLogger(__name__)

TokenizerKind = Literal["bpe", "spm", "ugm", "rwkv"]
DType = Literal["f32", "f16"]


@dataclass(frozen=True)
class ZooArchitecture:
    """One row of the zoo: what it is, what it stands for, whether llama.cpp runs it here."""

    name: str  # the name write_tiny_model takes
    gguf_arch: str  # general.architecture in the file
    family: str  # the models it stands for
    tokenizer: TokenizerKind
    chat_format: str | None  # the named prompt format that suits the family (no template)
    runs: bool  # loads and generates through LlamaLLM / ChatLlama
    reason: str = ""  # why not, when runs is False
    notes: str = ""  # tensor layout

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_GPTJ_REASON = (
    "llama.cpp knows the name but has no loader for it: llama-cpp-python 0.3.36 refuses the "
    "file with \"unsupported model architecture: 'gptj'\" (we raise ModelLoadError)"
)

ARCHITECTURES: dict[str, ZooArchitecture] = {
    a.name: a
    for a in (
        ZooArchitecture(
            "llama",
            "llama",
            "LLaMA, Alpaca, Vicuna, SmolLM2",
            "spm",
            "alpaca",
            True,
            notes="RMSNorm, rotary q/k, grouped-query attention (4 heads, 2 KV), SwiGLU FFN, "
            "separate output matrix",
        ),
        ZooArchitecture(
            "gpt2",
            "gpt2",
            "GPT-2, Cerebras-GPT",
            "bpe",
            "alpaca",
            True,
            notes="learned position embeddings (position_embd), LayerNorm with bias, fused "
            "attn_qkv with bias, GELU FFN",
        ),
        ZooArchitecture(
            "bloom",
            "bloom",
            "BLOOM, bloomz",
            "bpe",
            "alpaca",
            True,
            notes="ALiBi (no position tensors), LayerNorm right after the embedding "
            "(token_embd_norm), fused attn_qkv with bias",
        ),
        ZooArchitecture(
            "gptj",
            "gptj",
            "GPT-J, Dolly v1",
            "bpe",
            "alpaca",
            False,
            reason=_GPTJ_REASON,
            notes="one LayerNorm per block feeding attention and FFN in parallel, separate "
            "q/k/v without bias, partial rotary (rope.dimension_count = half a head), "
            "output with bias",
        ),
        ZooArchitecture(
            "gemma",
            "gemma",
            "Gemma (1)",
            "spm",
            "gemma",
            True,
            notes="RMSNorm, GeGLU FFN, output tied to token_embd (no output tensor), "
            "embeddings scaled by sqrt(n_embd)",
        ),
        ZooArchitecture(
            "gemma3",
            "gemma3",
            "Gemma 3 (e.g. Gemma 3 270M)",
            "spm",
            "gemma",
            True,
            notes="q/k RMSNorm per head, norms after attention and FFN as well as before, "
            "sliding-window attention on 5 of 6 layers, tied output",
        ),
        ZooArchitecture(
            "t5",
            "t5",
            "T5, Flan-T5",
            "ugm",
            "alpaca",
            True,
            notes="enc.* and dec.* blocks, relative position bias (attn_rel_b) in the first "
            "layer of each, decoder cross-attention, gated-GELU FFN (Flan-T5), unigram "
            "tokenizer",
        ),
        ZooArchitecture(
            "rwkv6",
            "rwkv6",
            "RWKV-LM (RWKV v6 'Finch')",
            "rwkv",
            "vicuna",
            True,
            notes="recurrent: no attention or KV cache; time-mix (data-dependent token "
            "shift and decay, low-rank w1/w2) and channel-mix per block, LayerNorm after "
            "the embedding",
        ),
        ZooArchitecture(
            "rwkv7",
            "rwkv7",
            "RWKV-LM (RWKV v7 'Goose')",
            "rwkv",
            "vicuna",
            True,
            notes="recurrent like rwkv6; time-mix with low-rank decay (w0..w2), in-context "
            "learning rate (a0..a2), value-residual mix (v0..v2) and gate (g1, g2), six "
            "fused lerps; head size 64 (16 or 32 give run-to-run different logits here)",
        ),
    )
}


def architectures() -> list[ZooArchitecture]:
    """Every architecture :func:`write_tiny_model` can write, in table order."""
    return list(ARCHITECTURES.values())


def _vocab(arch: str, n_merges: int) -> tok.Vocab:
    if arch == "llama":
        return tok.spm_vocab(
            n_merges, ("<unk>", "<s>", "</s>"), {"unk": "<unk>", "bos": "<s>", "eos": "</s>"}
        )
    if arch in ("gemma", "gemma3"):
        gemma = ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>")
        roles = {"pad": "<pad>", "eos": "<eos>", "bos": "<bos>", "unk": "<unk>"}
        return tok.spm_vocab(n_merges, gemma, roles)
    if arch == "bloom":
        bloom = ("<unk>", "<s>", "</s>", "<pad>")
        return tok.bpe_vocab(n_merges, bloom, "<s>", "</s>", pre="bloom")
    if arch == "t5":
        return tok.ugm_vocab(n_merges)
    if arch.startswith("rwkv"):
        return tok.rwkv_vocab(n_merges)
    return tok.bpe_vocab(n_merges, ("<|endoftext|>",), "<|endoftext|>", "<|endoftext|>")


def _fill(spec: TensorSpec, rng: Any, dtype: DType) -> Any:
    import numpy as np

    shape = tuple(reversed(spec.shape))  # numpy order
    if spec.fill == "one":
        data = np.ones(shape, dtype=np.float32)
    elif spec.fill == "zero":
        data = np.zeros(shape, dtype=np.float32)
    elif spec.fill == "half":
        data = np.full(shape, 0.5, dtype=np.float32)
    elif spec.fill == "decay":
        data = rng.uniform(-2.0, 0.0, size=shape).astype(np.float32)
    else:  # scaled so activations keep their size through the layers
        data = (rng.standard_normal(shape) / np.sqrt(spec.shape[0])).astype(np.float32)
    if dtype == "f16" and spec.fill == "w" and len(spec.shape) == 2 and "rel_b" not in spec.name:
        data = data.astype(np.float16)
    return data


def write_tiny_model(
    arch: str,
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    n_embd: int = 64,
    n_layer: int = 2,
    n_ctx: int = 256,
    dtype: DType = "f32",
    n_merges: int = 96,
) -> Path:
    """Write a tiny random-weight GGUF model of architecture ``arch`` to ``path``.

    ``arch`` is a name from :data:`ARCHITECTURES` (``llama``, ``gpt2``, ``bloom``, ``gptj``,
    ``gemma``, ``gemma3``, ``t5``, ``rwkv6``, ``rwkv7``); :func:`architectures` says which of
    them llama.cpp runs.  Weights come from ``numpy``'s generator seeded with ``seed``, so the
    same arguments give the same file.  ``dtype`` is the type of the weight matrices (norms,
    biases and vectors stay F32).  The tokenizer is learned from a built-in English text with
    ``n_merges`` merges.  Returns the path written.
    """
    import gguf
    import numpy as np

    if arch not in ARCHITECTURES:
        raise ConfigError(
            f"unknown zoo architecture {arch!r}; choose one of: {', '.join(ARCHITECTURES)}"
        )
    if dtype not in ("f32", "f16"):
        raise ConfigError(f"dtype must be 'f32' or 'f16', got {dtype!r}")
    if n_embd < 16 or n_embd % 16:
        raise ConfigError(f"n_embd must be a multiple of 16 (>= 16), got {n_embd}")
    if arch == "rwkv7" and n_embd % 64:
        raise ConfigError(f"rwkv7 needs n_embd a multiple of its head size 64, got {n_embd}")
    if n_layer < 1 or n_ctx < 16:
        raise ConfigError(f"need n_layer >= 1 and n_ctx >= 16, got {n_layer} and {n_ctx}")
    row = ARCHITECTURES[arch]
    vocab = _vocab(arch, n_merges)
    dims = Dims(n_vocab=vocab.size, n_embd=n_embd, n_layer=n_layer, n_ff=2 * n_embd, n_ctx=n_ctx)
    out = Path(path).expanduser()
    if out.is_dir():
        raise ModelFileError(out, "is a directory; pass the path of the .gguf file to write")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(tmp), row.gguf_arch)
    try:
        writer.add_name(f"tiny-{arch}")
        writer.add_description(
            f"random weights (seed {seed}) in the {row.gguf_arch} layout, written by "
            "llamachain.models.zoo; generates no meaningful text"
        )
        writer.add_file_type(
            gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16
        )
        specs = BUILDERS[arch](writer, dims)
        vocab.write(writer)
        for spec in specs:
            writer.add_tensor(spec.name, _fill(spec, rng, dtype))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    writer.close()
    tmp.replace(out)
    logger.info(
        "wrote tiny %s model (%d tensors, vocab %d) to %s", arch, len(specs), vocab.size, out
    )
    return out
