"""Convert a Hugging Face LLaMA-architecture checkpoint directory to a GGUF file.

The directory holds ``config.json``, the weights (safetensors or PyTorch shards, see
:mod:`llamachain.models._convert_weights`) and the tokenizer (``tokenizer.json`` or a
sentencepiece ``tokenizer.model``, with ``tokenizer_config.json``).  Everything is checked
(architecture, tensor names, shapes, shards, tokenizer) before a byte is written; tensors are
then streamed one at a time into a temporary file next to ``dst``, which is renamed into place
only after the result passes our GGUF checks, so a failed or killed run leaves nothing behind.

Output types follow llama.cpp's converter: ``f32`` keeps every tensor F32; ``f16`` stores 2-D
weights as F16 and 1-D norms as F32; ``q8_0`` stores 2-D weights as Q8_0 (F16 when a row does
not split into 32-value blocks) and norms as F32.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llamachain.errors import ConfigError, ModelFileError
from llamachain.models import _hf_names as names
from llamachain.models._convert_tokenizer import read_hf_vocab
from llamachain.models._convert_weights import CheckpointReader, find_weight_files
from llamachain.models.gguf_info import check_header

logger = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM")
OUTTYPES = ("f32", "f16", "q8_0")
_ROPE_TYPES = ("default", "linear", "yarn", "llama3")
_BLK = re.compile(r"^blk\.(\d+)\.(.+)$")
# Per-block tensors in the order they are written, with their expected (rows, cols) layout.
_BLOCK_PARTS = (
    "attn_norm",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_norm",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
)


@dataclass(frozen=True)
class LlamaParams:
    """The hyperparameters of a LLaMA checkpoint, as read from its ``config.json``."""

    architecture: str
    vocab_size: int
    dim: int
    n_ff: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    context_length: int
    rms_eps: float
    rope_theta: float
    rope_scaling: dict[str, Any] | None
    tied: bool


@dataclass(frozen=True)
class ConvertResult:
    src: Path
    dst: Path
    outtype: str
    tensors: int
    parameters: int
    vocab_size: int
    tokenizer: str
    chat_template: bool
    dst_size: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["src"], data["dst"] = str(self.src), str(self.dst)
        return data


def normalize_outtype(outtype: str) -> str:
    key = str(outtype).strip().lower()
    if key not in OUTTYPES:
        raise ConfigError(f"unknown output type {outtype!r}; choose one of: {', '.join(OUTTYPES)}")
    return key


def _int(config: dict[str, Any], key: str, path: Path, default: int | None = None) -> int:
    value = config.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ModelFileError(path, f"needs a positive integer {key!r} (found {value!r})")
    return value


def _rope(config: dict[str, Any], path: Path) -> tuple[float, dict[str, Any] | None]:
    """(rope_theta, rope scaling) from transformers 4 (rope_theta/rope_scaling) or 5 keys."""
    params = config.get("rope_parameters") or {}
    theta = float(config.get("rope_theta") or params.get("rope_theta") or 10000.0)
    scaling = config.get("rope_scaling") or params or None
    if not scaling:
        return theta, None
    kind = scaling.get("rope_type") or scaling.get("type") or "default"
    if kind not in _ROPE_TYPES:
        raise ModelFileError(
            path, f"uses rope scaling {kind!r}; supported: {', '.join(_ROPE_TYPES)}"
        )
    return theta, None if kind == "default" else {**scaling, "rope_type": kind}


def read_config(directory: Path) -> LlamaParams:
    """Validate ``config.json`` and return the LLaMA hyperparameters it declares."""
    path = directory / "config.json"
    if not path.is_file():
        raise ModelFileError(
            directory,
            "has no config.json; this is not a Hugging Face checkpoint directory (copy the "
            "model's config.json next to its weights)",
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(path, f"is not readable JSON ({e})") from e
    archs = config.get("architectures") or []
    arch = next((a for a in archs if a in SUPPORTED_ARCHITECTURES), None)
    if arch is None:
        found = ", ".join(map(str, archs)) or f"model_type {config.get('model_type')!r}"
        raise ModelFileError(
            path,
            f"describes {found}; supported architectures: {', '.join(SUPPORTED_ARCHITECTURES)}",
        )
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key):
            raise ModelFileError(path, f"sets {key}; bias tensors are not supported")
    dim, n_head = _int(config, "hidden_size", path), _int(config, "num_attention_heads", path)
    head_dim = config.get("head_dim") or dim // n_head
    theta, scaling = _rope(config, path)
    if arch == "MistralForCausalLM" and config.get("sliding_window"):
        logger.warning(
            "%s: sliding_window=%s is not kept; llama.cpp attends to the whole context",
            path,
            config["sliding_window"],
        )
    return LlamaParams(
        architecture=arch,
        vocab_size=_int(config, "vocab_size", path),
        dim=dim,
        n_ff=_int(config, "intermediate_size", path),
        n_layer=_int(config, "num_hidden_layers", path),
        n_head=n_head,
        n_head_kv=_int(config, "num_key_value_heads", path, n_head),
        head_dim=int(head_dim),
        context_length=_int(config, "max_position_embeddings", path, 2048),
        rms_eps=float(config.get("rms_norm_eps") or 1e-5),
        rope_theta=theta,
        rope_scaling=scaling,
        tied=bool(config.get("tie_word_embeddings", False)),
    )


def expected_shape(gguf_name: str, p: LlamaParams) -> tuple[int, ...] | None:
    """The (rows, cols) a tensor must have in Hugging Face orientation, None if unknown."""
    q, kv = p.n_head * p.head_dim, p.n_head_kv * p.head_dim
    top = {
        "token_embd.weight": (p.vocab_size, p.dim),
        "output.weight": (p.vocab_size, p.dim),
        "output_norm.weight": (p.dim,),
    }
    if gguf_name in top:
        return top[gguf_name]
    m = _BLK.match(gguf_name)
    if not m or int(m.group(1)) >= p.n_layer:
        return None
    per_block = {
        "attn_norm.weight": (p.dim,),
        "ffn_norm.weight": (p.dim,),
        "attn_q.weight": (q, p.dim),
        "attn_k.weight": (kv, p.dim),
        "attn_v.weight": (kv, p.dim),
        "attn_output.weight": (p.dim, q),
        "ffn_gate.weight": (p.n_ff, p.dim),
        "ffn_up.weight": (p.n_ff, p.dim),
        "ffn_down.weight": (p.dim, p.n_ff),
    }
    return per_block.get(m.group(2))


@dataclass(frozen=True)
class _Item:
    gguf_name: str
    hf_name: str | None  # None: computed (rope_freqs)
    shape: tuple[int, ...]
    reorder: int | None  # heads to reorder q/k rows over


def _is_meta_layout(hf_names: list[str]) -> bool:
    """Meta's original layout (tok_embeddings, layers.N.attention.wq) keeps q/k rows paired."""
    return "tok_embeddings.weight" in hf_names


def plan_tensors(reader: CheckpointReader, p: LlamaParams, directory: Path) -> list[_Item]:
    """Map every checkpoint tensor to its GGUF name and check names, shapes and coverage."""
    hf_names = list(reader.refs)
    meta = _is_meta_layout(hf_names)
    items: dict[str, _Item] = {}
    unknown: list[str] = []
    for hf in hf_names:
        if names.is_ignored(hf) or hf == "rope.freqs":
            continue
        target = names.hf_to_gguf_name(hf, p.n_layer)
        want = expected_shape(target, p) if target else None
        if target is None or want is None:
            unknown.append(hf)
            continue
        if target == "output.weight" and p.tied:
            logger.info("%s: tie_word_embeddings is set; %s is not stored", directory, hf)
            continue
        shape = reader.refs[hf].shape
        if shape != want:
            raise ModelFileError(
                reader.refs[hf].file,
                f"tensor {hf!r} has shape {list(shape)} but config.json implies {list(want)}; "
                "the weights and config.json do not belong together",
            )
        heads = None if meta else names.qk_heads(target, p.n_head, p.n_head_kv)
        items[target] = _Item(target, hf, shape, heads)
    if unknown:
        shown = ", ".join(repr(n) for n in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise ModelFileError(
            directory,
            f"has tensors a {p.architecture} checkpoint does not have: {shown}{more} "
            "(a different architecture, or an adapter/bias the converter does not support)",
        )
    expected = ["token_embd.weight", "output_norm.weight"] + [
        f"blk.{i}.{part}.weight" for i in range(p.n_layer) for part in _BLOCK_PARTS
    ]
    missing = [n for n in expected if n not in items]
    if missing:
        back = [names.gguf_to_hf_name(n, p.n_layer) or n for n in missing[:5]]
        raise ModelFileError(
            directory,
            f"is missing {len(missing)} tensors ({', '.join(back)}"
            f"{', ...' if len(missing) > 5 else ''}); a shard is incomplete or missing",
        )
    if "output.weight" not in items and not p.tied:
        logger.warning(
            "%s: no lm_head.weight; the output layer will share the embeddings", directory
        )
    if p.rope_scaling and p.rope_scaling["rope_type"] == "llama3":
        items["rope_freqs.weight"] = _Item("rope_freqs.weight", None, (p.head_dim // 2,), None)
    files = {f: i for i, f in enumerate(reader.files)}

    def order(item: _Item) -> tuple[int, int, int]:
        file = files[reader.refs[item.hf_name].file] if item.hf_name else -1
        m = _BLK.match(item.gguf_name)
        if m is None:
            return file, -1, 0
        return file, int(m.group(1)), _BLOCK_PARTS.index(m.group(2).rsplit(".", 1)[0])

    return sorted(items.values(), key=order)


def llama3_rope_factors(scaling: dict[str, Any], head_dim: int, theta: float) -> np.ndarray:
    """Llama 3.1 frequency divisors: 1 for short wavelengths, ``factor`` for long ones,
    interpolated between (llama.cpp divides each rotary frequency by its factor)."""
    factor = float(scaling["factor"])
    low, high = (
        float(scaling.get("low_freq_factor", 1.0)),
        float(scaling.get("high_freq_factor", 4.0)),
    )
    old = float(scaling["original_max_position_embeddings"])
    freqs = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelen = 2 * np.pi / freqs
    smooth = (old / wavelen - low) / (high - low)
    mid = 1.0 / ((1 - smooth) / factor + smooth)
    out = np.where(wavelen < old / high, 1.0, np.where(wavelen > old / low, factor, mid))
    return out.astype(np.float32)


def _target_type(item: _Item, outtype: str) -> Any:
    from gguf import GGMLQuantizationType as T

    if len(item.shape) == 1 or outtype == "f32":
        return T.F32
    if outtype == "q8_0" and item.shape[-1] % 32 == 0:
        return T.Q8_0
    return T.F16


def _encode(w: np.ndarray, qtype: Any) -> np.ndarray:
    from gguf import GGMLQuantizationType as T
    from gguf.quants import quantize

    if qtype == T.F32:
        return np.ascontiguousarray(w, dtype=np.float32)
    if qtype == T.F16:
        return np.ascontiguousarray(w, dtype=np.float16)
    return np.ascontiguousarray(quantize(np.ascontiguousarray(w, dtype=np.float32), qtype))


def _nbytes(shape: tuple[int, ...], qtype: Any) -> int:
    from gguf.quants import quant_shape_to_byte_shape

    return int(np.prod(quant_shape_to_byte_shape(shape, qtype)))


def _check_dst(dst: Path, overwrite: bool) -> None:
    if dst.is_dir():
        raise ModelFileError(dst, "is a directory; pass the path of the .gguf file to write")
    if not dst.parent.is_dir():
        raise ModelFileError(dst.parent, "no such directory; create it first")
    if dst.exists() and not overwrite:
        raise ModelFileError(dst, "already exists; pick another path or pass --overwrite")


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    outtype: str = "f16",
    name: str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> ConvertResult:
    """Convert the Hugging Face checkpoint directory ``src`` to the GGUF file ``dst``."""
    key = normalize_outtype(outtype)
    directory = Path(src).expanduser().absolute()
    if not directory.is_dir():
        what = "is a file" if directory.exists() else "does not exist"
        raise ModelFileError(directory, f"{what}; pass a Hugging Face checkpoint directory")
    dst_path = Path(dst).expanduser().absolute()
    _check_dst(dst_path, overwrite)
    start = time.perf_counter()
    p = read_config(directory)
    vocab = read_hf_vocab(
        directory, json.loads((directory / "config.json").read_text()), p.vocab_size
    )
    reader = CheckpointReader(*find_weight_files(directory))
    plan = plan_tensors(reader, p, directory)

    import gguf

    tmp = dst_path.parent / f".{dst_path.name}.{os.getpid()}.{secrets.token_hex(4)}.partial"
    writer = gguf.GGUFWriter(str(tmp), "llama")
    try:
        _add_metadata(writer, p, key, name or directory.name)
        vocab.write(writer)
        types = [_target_type(item, key) for item in plan]
        for item, qtype in zip(plan, types, strict=True):
            np_dtype = {
                gguf.GGMLQuantizationType.F32: np.float32,
                gguf.GGMLQuantizationType.F16: np.float16,
            }
            writer.add_tensor_info(
                item.gguf_name,
                item.shape,
                np.dtype(np_dtype.get(qtype, np.float32)),
                _nbytes(item.shape, qtype),
                raw_dtype=qtype,
            )
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for done, (item, qtype) in enumerate(zip(plan, types, strict=True), start=1):
            if item.hf_name is None:
                w = llama3_rope_factors(p.rope_scaling or {}, p.head_dim, p.rope_theta)
            else:
                w = reader.load(item.hf_name)
                if item.reorder is not None:
                    w = names.hf_to_gguf_rows(w, item.reorder)
            writer.write_tensor_data(_encode(w, qtype))
            del w
            if progress is not None:
                progress(done, len(plan), item.gguf_name)
        writer.close()
        reader.close()
        check_header(tmp)  # the file we wrote must pass our own header checks
        os.replace(tmp, dst_path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    seconds = time.perf_counter() - start
    logger.info("converted %s -> %s (%s) in %.1fs", directory, dst_path, key, seconds)
    return ConvertResult(
        src=directory,
        dst=dst_path,
        outtype=key,
        tensors=len(plan),
        parameters=sum(int(np.prod(item.shape)) for item in plan if item.hf_name),
        vocab_size=len(vocab.tokens),
        tokenizer=vocab.model,
        chat_template=vocab.chat_template is not None,
        dst_size=dst_path.stat().st_size,
        seconds=seconds,
    )


def _add_metadata(writer: Any, p: LlamaParams, outtype: str, name: str) -> None:
    import gguf

    file_types = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }
    writer.add_type("model")
    writer.add_name(name)
    writer.add_context_length(p.context_length)
    writer.add_embedding_length(p.dim)
    writer.add_block_count(p.n_layer)
    writer.add_feed_forward_length(p.n_ff)
    writer.add_head_count(p.n_head)
    writer.add_head_count_kv(p.n_head_kv)
    if p.head_dim != p.dim // p.n_head:
        writer.add_key_length(p.head_dim)
        writer.add_value_length(p.head_dim)
    writer.add_rope_dimension_count(p.head_dim)
    writer.add_rope_freq_base(p.rope_theta)
    writer.add_layer_norm_rms_eps(p.rms_eps)
    writer.add_vocab_size(p.vocab_size)
    writer.add_file_type(file_types[outtype])
    if outtype == "q8_0":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    scaling = p.rope_scaling
    if scaling and scaling["rope_type"] in ("linear", "yarn"):
        kind = (
            gguf.RopeScalingType.LINEAR
            if scaling["rope_type"] == "linear"
            else gguf.RopeScalingType.YARN
        )
        writer.add_rope_scaling_type(kind)
        writer.add_rope_scaling_factor(float(scaling["factor"]))
        if scaling["rope_type"] == "yarn" and scaling.get("original_max_position_embeddings"):
            writer.add_rope_scaling_orig_ctx_len(int(scaling["original_max_position_embeddings"]))
