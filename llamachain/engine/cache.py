"""The one piece of global state: an explicit, thread-safe cache of loaded llama.cpp models.

A model is loaded once per (file, load parameters) and shared by every engine that asks for
the same pair.  Engines hold a reference; the model is freed when the last one closes, or
when the cache is cleared.  ``model_cache.list()`` shows what is loaded.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from llamachain.engine._snapshots import PrefixSnapshots
from llamachain.errors import ModelLoadError
from llamachain.models.gguf_info import ModelInfo, read_model_info

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadParams:
    """Everything that changes how llama.cpp loads a model (and so needs its own copy)."""

    path: str
    n_ctx: int
    n_threads: int
    n_batch: int = 512
    embedding: bool = False
    verbose: bool = False
    lora: tuple[tuple[str, float], ...] = ()
    flash_attn: bool = False
    # Evaluate prompts with a copy of the file in this type ("" for none; see _prefill_copy).
    prefill_type: str = ""
    extra: tuple[tuple[str, Any], ...] = ()


@dataclass(eq=False)
class LoadedModel:
    """A llama.cpp model in memory, with the lock that serialises its use.

    ``snapshots`` holds saved KV states of shared prompt prefixes (8 / 256 MiB by default;
    pass ``PrefixSnapshots(max_count, max_bytes)`` to bound it differently, 0 to turn it off).
    """

    params: LoadParams
    info: ModelInfo
    llama: Any  # llama_cpp.Llama
    lock: threading.RLock = field(default_factory=threading.RLock)
    refs: int = 0
    loaded_at: float = field(default_factory=time.time)
    load_seconds: float = 0.0
    closed: bool = False
    # How many leading tokens of llama's current state were evaluated in aligned prompt blocks
    # (see LlamaEngine._prefill); only those may be reused by the prefix cache.
    aligned: int = 0
    # ...and in blocks of how many tokens: states evaluated in other blocks are not reused.
    block: int = 0
    snapshots: PrefixSnapshots = field(default_factory=PrefixSnapshots)
    # The copy prompts are evaluated on (a llama_cpp.Llama), or None.  When set, ``aligned``,
    # ``block`` and ``snapshots`` describe its state; ``llama`` receives each prompt's KV cells.
    prefill: Any = None
    transfer_buffer: list[Any] = field(default_factory=list)

    def close(self) -> None:
        with self.lock:
            if not self.closed:
                self.closed = True
                self.snapshots.clear()
                self.transfer_buffer.clear()
                _free(self.llama, self.params.path)
                if self.prefill is not None:
                    _free(self.prefill, "the prompt copy")

    def drop_prefill(self, reason: str) -> None:
        """Stop using the prompt copy (and free it); prompts then run on ``llama`` itself."""
        with self.lock:
            copy, self.prefill = self.prefill, None
            if copy is None:
                return
            logger.warning("not evaluating prompts on a copy of %s: %s", self.params.path, reason)
            self.snapshots.clear()
            self.transfer_buffer.clear()
            self.aligned = 0
            self.llama.reset()
            _free(copy, "the prompt copy")


def _free(llama: Any, what: str) -> None:
    try:
        llama.close()
    except Exception:  # pragma: no cover - best effort
        logger.debug("error while freeing %s", what, exc_info=True)


def open_llama(path: str, params: LoadParams) -> Any:
    """A ``llama_cpp.Llama`` of ``path`` with ``params``'s context, batch and threads."""
    from llama_cpp import Llama  # lazy: heavy native import

    return Llama(
        model_path=path,
        n_ctx=params.n_ctx,
        n_batch=min(params.n_batch, params.n_ctx),
        n_ubatch=min(params.n_batch, params.n_ctx),
        n_threads=params.n_threads,
        n_threads_batch=params.n_threads,
        embedding=params.embedding,
        flash_attn=params.flash_attn,
        verbose=params.verbose,
        **dict(params.extra),
    )


def _load(params: LoadParams) -> LoadedModel:
    info = read_model_info(params.path)  # our checks first: llama.cpp never sees a bad file
    from llamachain.engine._lora import apply_adapters, check_adapters
    from llamachain.engine._native import capture_llama_logs, route_llama_logs
    from llamachain.engine._prefill_copy import load_copy

    route_llama_logs(params.verbose)

    adapters = check_adapters(params.lora, info.path)  # LoRA files checked before loading too
    start = time.perf_counter()
    try:
        with capture_llama_logs() as log:
            llama = open_llama(params.path, params)
    except (ValueError, RuntimeError, OSError) as e:
        errors = [line.strip() for line in log if "error" in line.lower() or "fail" in line]
        # the first error names the cause ("unknown model architecture: ..."), later ones
        # only say that loading failed
        detail = f" (llama.cpp: {errors[0].split(': ', 1)[-1]})" if errors else ""
        if any("model architecture" in line for line in errors):
            advice = (
                "the llama.cpp in this llama-cpp-python has no loader for that architecture "
                "(llamachain.models.zoo.architectures() lists the families checked to run)"
            )
        else:
            advice = "run `llamachain doctor` to check the llama.cpp build, or try a smaller n_ctx"
        raise ModelLoadError(
            f"llama.cpp could not load {params.path} ({info.architecture}, {info.file_type}): "
            f"{e}{detail}; {advice}"
        ) from e
    try:
        apply_adapters(llama, adapters)
        copy = load_copy(params, info, llama)
    except BaseException:
        llama.close()
        raise
    seconds = time.perf_counter() - start
    logger.info("loaded %s in %.2fs (n_ctx=%d)", params.path, seconds, params.n_ctx)
    return LoadedModel(params=params, info=info, llama=llama, load_seconds=seconds, prefill=copy)


class ModelCache:
    """Thread-safe map from :class:`LoadParams` to a shared :class:`LoadedModel`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[LoadParams, LoadedModel] = {}
        self._loading: dict[LoadParams, threading.Lock] = {}

    def acquire(self, params: LoadParams) -> LoadedModel:
        """Return the shared model for ``params``, loading it if needed; adds a reference."""
        with self._lock:
            model = self._models.get(params)
            if model is not None and not model.closed:
                model.refs += 1
                return model
            load_lock = self._loading.setdefault(params, threading.Lock())
        with load_lock:  # one loader per key; others wait and then share
            with self._lock:
                model = self._models.get(params)
                if model is not None and not model.closed:
                    model.refs += 1
                    return model
            model = _load(params)
            with self._lock:
                self._models[params] = model
                self._loading.pop(params, None)
                model.refs += 1
                return model

    def release(self, model: LoadedModel) -> None:
        """Drop a reference; the last one frees the model."""
        with self._lock:
            model.refs -= 1
            if model.refs > 0:
                return
            if self._models.get(model.params) is model:
                del self._models[model.params]
        model.close()

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    **asdict(m.params),
                    "references": m.refs,
                    "load_seconds": m.load_seconds,
                    "prefix_snapshots": m.snapshots.stats(),
                }
                for m in self._models.values()
            ]

    def clear_snapshots(self) -> None:
        """Drop every model's saved prefix snapshots; the models stay loaded."""
        with self._lock:
            models = list(self._models.values())
        for m in models:
            m.snapshots.clear()

    def clear(self) -> None:
        """Free every model; engines that still hold one reload it on their next call."""
        with self._lock:
            models = list(self._models.values())
            self._models.clear()
        for m in models:
            m.close()

    def __len__(self) -> int:
        with self._lock:
            return len(self._models)


model_cache = ModelCache()
