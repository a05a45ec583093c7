"""Evaluate prompts with a faster copy of the model, then decode with the file itself.

llama.cpp's CPU backend has fast batched kernels (repacked or tiled matrix products) for
Q8_0, Q4_0, IQ4_NL, the k-quants and F16, but none for the legacy Q4_1 and Q5_1 formats: their
prompts go through the one-row-at-a-time dot product and evaluate at about half the speed.
The bundled model is Q4_1.  For such a file the engine keeps a Q8_0 copy of it (made once
with llama.cpp's own quantizer from the file's weights and cached on disk), evaluates every
prompt on the copy, moves the resulting KV cells into the original's context and generates
there -- so prompts run at Q8_0 speed and tokens at Q4_1 speed.

The copy is the original's weights at 8 bits: a Q4_1 weight (a 4-bit step of its block's
range) lands within 1/254 of the block's largest value, several times finer than Q4_1's own
step, so the KV cells it writes are close to the original's.  Close, not equal: answers can
differ from a pure Q4_1 run in near-ties, like any change of kernel.  ``prefill_copy="off"``
turns it off; a quantization type (``"q8_0"``, ``"f16"``, ...) asks for that copy for any
file.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from llamachain.errors import ConfigError, LlamaChainError
from llamachain.models.gguf_info import ModelInfo

logger = logging.getLogger(__name__)

# File types without fast batched CPU kernels -> the copy to evaluate their prompts with.
AUTO_TYPES: dict[str, str] = {"Q4_1": "q8_0", "Q5_1": "q8_0"}
# "auto" makes no copy of larger files: a Q8_0 copy of a 7B model would cost ~7 GB more.
AUTO_MAX_BYTES = 2 * 1024**3


def check_setting(value: str) -> str:
    """``"auto"``, ``"off"`` or a quantization type name (normalized); else ConfigError."""
    from llamachain.models.quantize import normalize_qtype

    key = str(value).strip().lower()
    if key in ("auto", "off"):
        return key
    try:
        return normalize_qtype(key)
    except ConfigError:
        raise ConfigError(
            f"prefill_copy must be 'auto', 'off' or a quantization type (q8_0, f16, ...), "
            f"got {value!r}"
        ) from None


def choose(setting: str, info: ModelInfo) -> str:
    """The copy type for this file ("" for none), upper-case like the file types."""
    key = check_setting(setting)
    if key == "off":
        return ""
    if key == "auto":
        if info.file_size > AUTO_MAX_BYTES:
            return ""
        key = AUTO_TYPES.get(info.file_type.upper(), "")
    if not key or key.upper() == info.file_type.upper():
        return ""
    return key.upper()


def copies_dir() -> Path:
    """Where copies are kept: ``$LLAMACHAIN_CACHE_DIR/prefill-copies``.

    ``LLAMACHAIN_CACHE_DIR`` defaults to ``$XDG_CACHE_HOME/llamachain`` (``~/.cache/llamachain``).
    The copies are derived files named after the source file's path, size and modification
    time, so one directory serves every ``LLAMACHAIN_HOME`` and a changed source gets a new copy.
    """
    base = os.environ.get("LLAMACHAIN_CACHE_DIR")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = str(Path(xdg) / "llamachain")
    return Path(base).expanduser() / "prefill-copies"


def copy_path(info: ModelInfo, qtype: str) -> Path:
    src = Path(info.path)
    st = src.stat()
    key = hashlib.sha256(f"{src.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return copies_dir() / f"{src.stem}.{key.hexdigest()[:12]}.{qtype.upper()}.gguf"


def ensure_copy(info: ModelInfo, qtype: str, n_threads: int) -> Path:
    """The cached copy of ``info``'s file in ``qtype``, quantized now if it is missing."""
    from llamachain.models.quantize import cached_quantization

    dst = copy_path(info, qtype)
    if not dst.is_file():
        logger.info(
            "making a %s copy of %s to evaluate its prompts faster (once; cached in %s)",
            qtype,
            Path(info.path).name,
            dst.parent,
        )
    return cached_quantization(info.path, dst, qtype, n_threads=n_threads, quiet=True)


def load_copy(params: Any, info: ModelInfo, llama: Any) -> Any:
    """The copy of the model ``llama`` (loaded with ``params``) to evaluate prompts with.

    None when the load parameters ask for none, when the model cannot use one (an encoder,
    a recurrent state, LoRA adapters the copy would lack, embeddings), or when the copy cannot
    be made or loaded -- that never fails the model's own load; it is logged as a warning.
    A copy file that does not load is removed, so the next load makes it again.
    """
    if not params.prefill_type or params.embedding or params.lora:
        return None
    import llama_cpp

    from llamachain.engine._native import capture_llama_logs
    from llamachain.engine.cache import open_llama
    from llamachain.models.gguf_info import read_model_info

    if (
        llama_cpp.llama_model_has_encoder(llama.model)
        or getattr(llama, "_is_recurrent", False)
        or getattr(llama, "_is_hybrid", False)
    ):
        return None
    path: Path | None = None
    try:
        path = ensure_copy(info, params.prefill_type, params.n_threads)
        read_model_info(path)  # our checks first: llama.cpp never sees a bad file
        with capture_llama_logs():
            copy = open_llama(str(path), params)
    except (ValueError, RuntimeError, OSError, LlamaChainError) as e:
        removed = ""
        if path is not None:
            try:
                path.unlink(missing_ok=True)
                removed = "; the copy was removed and will be made again on the next load"
            except OSError:
                pass
        logger.warning(
            "evaluating prompts on %s itself: its %s copy could not be made or loaded (%s)%s",
            params.path,
            params.prefill_type,
            e,
            removed,
        )
        return None
    if copy.n_vocab() != llama.n_vocab():  # pragma: no cover - the same model, requantized
        copy.close()
        return None
    logger.info(
        "prompts of %s are evaluated on its %s copy %s", params.path, params.prefill_type, path
    )
    return copy


def transfer(src: Any, dst: Any, n: int, buf: list[Any]) -> bool:
    """Make ``dst``'s sequence 0 the first ``n`` tokens of ``src``'s (both ``Llama``).

    ``src`` must hold exactly those ``n`` tokens.  ``buf`` is a one-item list caching the
    byte buffer between calls.  False if llama.cpp refused the state (``dst`` is then empty).
    """
    import llama_cpp

    from llamachain.engine._snapshots import Snapshot, restore

    if n == 0:
        dst.reset()
        dst._ctx.kv_cache_seq_rm(-1, 0, -1)
        return True
    size = llama_cpp.llama_state_seq_get_size(src.ctx, 0)
    if not buf or len(buf[0]) < size:
        buf[:] = [(ctypes.c_uint8 * size)()]
    if llama_cpp.llama_state_seq_get_data(src.ctx, buf[0], size, 0) != size:
        dst.reset()
        dst._ctx.kv_cache_seq_rm(-1, 0, -1)
        return False
    return restore(dst, Snapshot(tuple(src.input_ids[:n]), buf[0], size), n)
