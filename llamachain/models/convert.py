"""Convert a Hugging Face LLaMA-architecture checkpoint directory to a GGUF file.

The directory holds ``config.json``, the weights (safetensors or PyTorch shards, see
:mod:`llamachain.models._convert_weights`) and the tokenizer (``tokenizer.json`` or a
sentencepiece ``tokenizer.model``, with ``tokenizer_config.json``).  Everything is checked
(architecture, tensor names, shapes, shards, tokenizer) before a byte is written; tensors are
then streamed one at a time into a temporary file next to ``dst``, which is renamed into place
only after the last tensor is written, so a failed or killed run leaves nothing behind.

Output types follow llama.cpp's converter: ``f32`` keeps every tensor F32; ``f16`` stores 2-D
weights as F16 and 1-D norms as F32; ``q8_0`` stores 2-D weights as Q8_0 (F16 when a row does
not split into 32-value blocks) and norms as F32.
"""

from __future__ import annotations

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
from llamachain.models._convert_config import (
    LlamaParams,
    expected_shape,
    llama3_rope_factors,
    read_config,
    write_metadata,
)
from llamachain.models._convert_tokenizer import read_hf_vocab
from llamachain.models._convert_weights import CheckpointReader, find_weight_files
from llamachain.models.gguf_info import check_header

logger = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
OUTTYPES = ("f32", "f16", "q8_0")
_BLK = re.compile(r"^blk\.(\d+)\.(.+)$")
# Per-block tensors, in the order they are written.
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
    vocab = read_hf_vocab(directory, p.config, p.vocab_size)
    reader = CheckpointReader(*find_weight_files(directory))
    plan = plan_tensors(reader, p, directory)

    import gguf

    tmp = dst_path.parent / f".{dst_path.name}.{os.getpid()}.{secrets.token_hex(4)}.partial"
    writer = gguf.GGUFWriter(str(tmp), "llama")
    try:
        write_metadata(writer, p, key, name or directory.name)
        vocab.write(writer)
        types = [_target_type(item, key) for item in plan]
        sizes = [_nbytes(item.shape, qtype) for item, qtype in zip(plan, types, strict=True)]
        for item, qtype, nbytes in zip(plan, types, sizes, strict=True):
            # The shape is the logical one: with raw_dtype given, gguf takes it as it is.
            dtype = np.float16 if qtype == gguf.GGMLQuantizationType.F16 else np.float32
            writer.add_tensor_info(item.gguf_name, item.shape, np.dtype(dtype), nbytes, qtype)
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
        if tmp.stat().st_size < sum(sizes):  # pragma: no cover - a full disk, say
            raise ModelFileError(tmp, "is shorter than its tensors; check the free disk space")
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
