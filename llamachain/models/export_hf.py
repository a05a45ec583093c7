"""Export a LLaMA-architecture GGUF file as a Hugging Face checkpoint directory.

Every tensor is dequantized with ``gguf.quants.dequantize`` (exact: a quantized tensor's
values are what its blocks encode), the query/key rows are put back into Hugging Face's
"rotate half" order, and the weights are written as safetensors under the names
transformers' ``LlamaForCausalLM`` loads, beside a ``config.json``, a ``tokenizer.json``
rebuilt from the GGUF vocabulary and merges, ``tokenizer_config.json`` (with the chat
template) and ``generation_config.json``.

The directory is assembled next to ``dst`` under a temporary name and renamed into place
only when complete, so a failed or killed export leaves nothing at ``dst``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llamachain.errors import ConfigError, ModelFileError
from llamachain.models import _hf_names as names
from llamachain.models._convert_tokenizer import read_gguf_vocab
from llamachain.models._export_tokenizer import build_tokenizer_json, tokenizer_config
from llamachain.models.gguf_info import check_header, reader_field

logger = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
EXPORT_DTYPES = ("float32", "float16")
DEFAULT_SHARD_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class ExportResult:
    src: Path
    dst: Path
    dtype: str
    tensors: int
    parameters: int
    shards: int
    size: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["src"], data["dst"] = str(self.src), str(self.dst)
        return data


def hf_config(reader: Any) -> dict[str, Any]:
    """The ``config.json`` of the checkpoint a llama GGUF file describes."""
    arch = reader_field(reader, "general.architecture")
    if arch != "llama":
        raise ModelFileError(
            reader.data.filename,
            f"has architecture {arch!r}; only 'llama' models can be exported to a Hugging Face "
            "LlamaForCausalLM checkpoint",
        )

    def key(name: str) -> Any:
        return reader_field(reader, f"llama.{name}")

    dim, n_head = int(key("embedding_length")), int(key("attention.head_count"))
    head_dim = int(key("attention.key_length") or dim // n_head)
    rope_dim = key("rope.dimension_count")
    if rope_dim is not None and int(rope_dim) != head_dim:
        raise ModelFileError(
            reader.data.filename,
            f"rotates {rope_dim} of {head_dim} head dimensions; LlamaForCausalLM rotates all",
        )
    tensor_names = {t.name for t in reader.tensors}
    tokens = reader_field(reader, "tokenizer.ggml.tokens") or []
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": dim,
        "intermediate_size": int(key("feed_forward_length")),
        "num_hidden_layers": int(key("block_count")),
        "num_attention_heads": n_head,
        "num_key_value_heads": int(key("attention.head_count_kv") or n_head),
        "head_dim": head_dim,
        "max_position_embeddings": int(key("context_length") or 2048),
        "rms_norm_eps": float(key("attention.layer_norm_rms_epsilon") or 1e-5),
        "rope_theta": float(key("rope.freq_base") or 10000.0),
        "vocab_size": int(key("vocab_size") or len(tokens)),
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": reader_field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": reader_field(reader, "tokenizer.ggml.eos_token_id"),
        "pad_token_id": reader_field(reader, "tokenizer.ggml.padding_token_id"),
    }
    scaling = key("rope.scaling.type")
    if scaling in ("linear", "yarn"):
        config["rope_scaling"] = {"rope_type": scaling, "factor": float(key("rope.scaling.factor"))}
        if scaling == "yarn":
            orig = key("rope.scaling.original_context_length")
            config["rope_scaling"]["original_max_position_embeddings"] = int(orig)
    elif scaling not in (None, "none") or "rope_freqs.weight" in tensor_names:
        raise ModelFileError(
            reader.data.filename,
            f"uses rope scaling {scaling or 'by frequency factors'}, which the exporter cannot "
            "express; supported: none, linear, yarn",
        )
    return config


def _plan(reader: Any, n_blocks: int) -> list[tuple[Any, str]]:
    plan = []
    for t in reader.tensors:
        hf = names.gguf_to_hf_name(t.name, n_blocks)
        if hf is None:
            raise ModelFileError(
                reader.data.filename,
                f"has tensor {t.name!r} that a LlamaForCausalLM checkpoint has no place for",
            )
        plan.append((t, hf))
    return plan


def _tensor(t: Any, n_head: int, n_head_kv: int, dtype: str) -> np.ndarray:
    from gguf.quants import dequantize

    w = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
    heads = names.qk_heads(t.name, n_head, n_head_kv)
    if heads is not None:
        w = names.gguf_to_hf_rows(w, heads)
    return np.ascontiguousarray(w, dtype=np.float16 if dtype == "float16" else np.float32)


def _shards(sizes: list[int], limit: int) -> list[list[int]]:
    groups: list[list[int]] = [[]]
    total = 0
    for i, size in enumerate(sizes):
        if groups[-1] and total + size > limit:
            groups.append([])
            total = 0
        groups[-1].append(i)
        total += size
    return groups


def _check_dst(dst: Path, overwrite: bool) -> None:
    if dst.is_file():
        raise ModelFileError(dst, "is a file; pass the path of a directory to create")
    if dst.is_dir() and any(dst.iterdir()) and not overwrite:
        raise ModelFileError(
            dst, "exists and is not empty; pick a new directory or pass --overwrite"
        )
    if not dst.parent.is_dir():
        raise ModelFileError(dst.parent, "no such directory; create it first")


def export_hf(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    dtype: str = "float32",
    max_shard_size: int = DEFAULT_SHARD_BYTES,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> ExportResult:
    """Write the llama GGUF file ``src`` as a Hugging Face checkpoint directory ``dst``."""
    if dtype not in EXPORT_DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; choose one of: {', '.join(EXPORT_DTYPES)}")
    src_path = check_header(src).resolve()
    dst_path = Path(dst).expanduser().absolute()
    _check_dst(dst_path, overwrite)

    import gguf
    from safetensors.numpy import save_file

    start = time.perf_counter()
    try:
        reader = gguf.GGUFReader(str(src_path))
    except (ValueError, IndexError, KeyError, OSError) as e:  # truncated or corrupt metadata
        raise ModelFileError(src_path, f"is not a readable GGUF file ({e})") from e
    config = hf_config(reader)
    config["torch_dtype"] = dtype
    vocab = read_gguf_vocab(reader)
    tokenizer_json = build_tokenizer_json(vocab)  # fails before any weight is written
    n_head, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    plan = _plan(reader, config["num_hidden_layers"])
    itemsize = 2 if dtype == "float16" else 4
    sizes = [int(np.prod([int(d) for d in t.shape])) * itemsize for t, _ in plan]
    groups = _shards(sizes, max_shard_size)

    tmp = dst_path.parent / f".{dst_path.name}.{os.getpid()}.{secrets.token_hex(4)}.partial"
    tmp.mkdir()
    try:
        weight_map: dict[str, str] = {}
        done = 0
        for k, group in enumerate(groups):
            fname = (
                "model.safetensors"
                if len(groups) == 1
                else f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
            )
            arrays: dict[str, np.ndarray] = {}
            for i in group:
                t, hf = plan[i]
                arrays[hf] = _tensor(t, n_head, n_kv, dtype)
                weight_map[hf] = fname
                done += 1
                if progress is not None:
                    progress(done, len(plan), hf)
            save_file(arrays, str(tmp / fname), metadata={"format": "pt"})
            del arrays
        if len(groups) > 1:
            index = {"metadata": {"total_size": sum(sizes)}, "weight_map": weight_map}
            _write_json(tmp / "model.safetensors.index.json", index)
        _write_json(tmp / "config.json", config)
        (tmp / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
        _write_json(
            tmp / "tokenizer_config.json",
            tokenizer_config(vocab, config["max_position_embeddings"]),
        )
        generation = {
            k: config[k]
            for k in ("bos_token_id", "eos_token_id", "pad_token_id")
            if config[k] is not None
        }
        _write_json(tmp / "generation_config.json", generation)
        if dst_path.is_dir():
            shutil.rmtree(dst_path)
        os.replace(tmp, dst_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - start
    logger.info("exported %s -> %s (%s) in %.1fs", src_path, dst_path, dtype, seconds)
    return ExportResult(
        src=src_path,
        dst=dst_path,
        dtype=dtype,
        tensors=len(plan),
        parameters=sum(sizes) // itemsize,
        shards=len(groups),
        size=sum(p.stat().st_size for p in dst_path.iterdir()),
        seconds=seconds,
    )


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
