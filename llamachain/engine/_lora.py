"""Apply GGUF LoRA adapters, with their scales, to a loaded ``llama_cpp.Llama``.

Every adapter is checked with the ``gguf`` package before llama.cpp sees it (a GGUF LoRA file,
made for this architecture, every adapted weight present in the model with the adapter's
shape, finite values and scale), because llama.cpp may abort the process on a bad one.

Lifetime: llama.cpp ties an adapter to the model it was loaded for and frees it with the
model at the latest; we free ours explicitly, after detaching them from the context, in a
callback on the ``Llama``'s own exit stack so it runs first when the ``Llama`` closes (before
its context and model are freed).
"""

from __future__ import annotations

import ctypes
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llamachain.errors import ConfigError, ModelLoadError
from llamachain.models.lora import LoraInfo, check_lora_fits, read_base_shapes, read_lora_info

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckedAdapter:
    info: LoraInfo
    scale: float


def check_scale(scale: object) -> float:
    try:
        value = float(scale)  # type: ignore[arg-type]
    except (TypeError, ValueError) as e:
        raise ConfigError(f"a LoRA scale must be a number, got {scale!r}") from e
    if not math.isfinite(value):
        raise ConfigError(f"a LoRA scale must be finite, got {scale!r}; 1.0 applies it fully")
    return value


def check_adapters(lora: Sequence[tuple[str, float]], model_path: str) -> list[CheckedAdapter]:
    """Validate ``[(adapter_path, scale), ...]`` against the base model at ``model_path``."""
    if not lora:
        return []
    base = read_base_shapes(model_path)
    checked = []
    for path, scale in lora:
        value = check_scale(scale)
        info = read_lora_info(path)
        check_lora_fits(info, base)
        checked.append(CheckedAdapter(info, value))
    return checked


class _Adapters:
    """The native adapters applied to one ``Llama``; ``free`` detaches and frees them once."""

    def __init__(self, llama: Any) -> None:
        import llama_cpp

        self._context = llama._ctx  # not the Llama itself: no reference cycle through its stack
        self.pointers: list[Any] = []
        # Held here: ``free`` may run from ``Llama.__del__`` at interpreter exit, when
        # importing is no longer possible.
        self._detach = llama_cpp.llama_set_adapters_lora
        self._free = llama_cpp.llama_adapter_lora_free

    def free(self) -> None:
        if not self.pointers:
            return
        ctx = getattr(self._context, "ctx", None)
        if ctx is not None:
            self._detach(ctx, None, 0, None)
        for pointer in self.pointers:
            self._free(pointer)
        self.pointers = []


def apply_adapters(llama: Any, adapters: Sequence[CheckedAdapter]) -> None:
    """Load ``adapters`` for ``llama``'s model and set them, with their scales, on its context."""
    if not adapters:
        return
    import llama_cpp

    from llamachain.engine._native import capture_llama_logs

    owned = _Adapters(llama)
    try:
        for adapter in adapters:
            with capture_llama_logs() as log:
                pointer = llama_cpp.llama_adapter_lora_init(
                    llama._model.model, adapter.info.path.encode()
                )
            if not pointer:  # a NULL pointer (ctypes gives a falsy object, not None)
                errors = [line.strip() for line in log if "error" in line.lower()]
                detail = f" (llama.cpp: {errors[-1]})" if errors else ""
                raise ModelLoadError(
                    f"llama.cpp could not load the LoRA adapter {adapter.info.path}{detail}; "
                    "check that it was made for this model"
                )
            owned.pointers.append(pointer)
        n = len(owned.pointers)
        array = (llama_cpp.llama_adapter_lora_p_ctypes * n)(*owned.pointers)
        scales = (ctypes.c_float * n)(*(a.scale for a in adapters))
        if llama_cpp.llama_set_adapters_lora(llama._ctx.ctx, array, n, scales):
            raise ModelLoadError("llama.cpp could not set the LoRA adapters on the context")
    except BaseException:
        owned.free()
        raise
    llama._stack.callback(owned.free)  # runs before the context and model are freed
    logger.info(
        "applied %d LoRA adapter(s): %s",
        len(adapters),
        ", ".join(f"{a.info.path} x{a.scale:g}" for a in adapters),
    )
