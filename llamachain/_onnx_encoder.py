"""The ONNX Runtime backend: export a sentence-transformers model once, run it without torch.

sentence-transformers' own ONNX backend needs ``optimum-onnx``, whose releases pin
transformers 4.x; this module does the same job with what is installed: torch exports the
transformer to ONNX from the local weights (no download), ONNX Runtime runs it, and the
pooling / normalisation of the model's sentence-transformers pipeline is applied in numpy.

Exports are cached under ``<home>/cache/onnx/<model>-<fingerprint>/`` (built on first use in
a temporary directory and renamed into place, so a crash never leaves half a model), and each
is checked against torch before it is kept.  ``onnx-int8`` adds a dynamically quantized copy
(per-channel int8 weights for the attention projections; the feed-forward layers stay in
float, because with them in int8 short texts drift too far); it is kept only if its vectors
stay within cosine 0.99 of the full-precision ones on a probe set of short and long texts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

from llamachain._st_loader import ModelDir, load_tokenizer, offline
from llamachain.errors import EmbeddingError

logger = logging.getLogger(__name__)

EXPORT_VERSION = 1
SUPPORTED_POOLING = ("mean", "cls", "max")
MIN_EXPORT_COSINE = 0.9999
MIN_INT8_COSINE = 0.99
_FP32 = "model.onnx"
_INT8 = "model_qint8.onnx"
_REJECTED = "model_qint8.rejected.json"

# Probe texts for the export checks: short, long, technical, plain.
PROBE_TEXTS = [
    "",
    "hello",
    "The index is rebuilt when a file changes on disk.",
    "A cat sleeps on the warm windowsill while rain taps against the glass.",
    "Quantized weights trade a little accuracy for a smaller, faster model on the CPU.",
    "def add(a, b):\n    return a + b  # adds two numbers",
    "Chroma stores vectors with their metadata; a query returns the nearest chunks.",
    "Mountains, rivers and forests covered the northern province for hundreds of miles, "
    "and the few roads that crossed it were closed by snow from November until April. " * 3,
    "Invoices must be paid within thirty days of receipt unless agreed otherwise in writing.",
    "La réunion est reportée à jeudi prochain, à dix heures, dans la salle du conseil.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "ERROR 42: connection refused (is the server running on port 8000?)",
]


def check_supported(info: ModelDir) -> None:
    extra = [t for t in info.module_types if t not in ("Transformer", "Pooling", "Normalize")]
    if extra or info.modules[0][1] or info.pooling not in SUPPORTED_POOLING:
        what = f"modules {', '.join(extra)}" if extra else f"pooling {info.pooling!r}"
        raise EmbeddingError(
            f"{info.path}: the onnx backends run Transformer + Pooling (mean, cls or max) + "
            f"Normalize pipelines, and this model has {what}; use backend='torch'"
        )


def fingerprint(info: ModelDir) -> str:
    """Changes when the model's files change; the same on every machine for the same files."""
    parts: list[Any] = [EXPORT_VERSION, info.name, info.pooling, info.max_seq_length]
    for f in sorted(info.path.rglob("*")):
        if f.is_file() and "onnx" not in f.relative_to(info.path).parts[:1]:
            parts.append((f.relative_to(info.path).as_posix(), f.stat().st_size))
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]


def export_dir(info: ModelDir, home: Path) -> Path:
    return home / "cache" / "onnx" / f"{info.name}-{fingerprint(info)}"


_export_lock = threading.Lock()


def ensure_onnx(info: ModelDir, home: Path, *, quantized: bool) -> tuple[Path, dict[str, Any]]:
    """The ONNX file to run (exported / quantized on first use) and its metadata."""
    check_supported(info)
    with _export_lock:
        target = export_dir(info, home)
        if not (target / "meta.json").is_file():
            _export(info, target)
        meta: dict[str, Any] = json.loads((target / "meta.json").read_text())
        if not quantized:
            return target / _FP32, meta
        rejected = target / _REJECTED
        if rejected.is_file():
            _raise_rejected(info, json.loads(rejected.read_text()))
        if not (target / _INT8).is_file():
            _quantize(info, target, meta)
        return target / _INT8, meta


def _raise_rejected(info: ModelDir, report: dict[str, Any]) -> None:
    raise EmbeddingError(
        f"{info.name}: int8 quantization is not accurate enough for this model (min cosine "
        f"{report['min_cosine']:.4f} < {MIN_INT8_COSINE} against full precision); use "
        "backend='onnx' or 'torch'"
    )


def _export(info: ModelDir, target: Path) -> None:
    try:
        import onnxruntime  # noqa: F401  (fail before the slow export)
        import torch
        from transformers import AutoModel
    except ImportError as e:
        raise EmbeddingError(
            f"the onnx backend needs torch, transformers and onnxruntime ({e}); run "
            "`pip install onnxruntime` or use backend='torch'"
        ) from e
    start = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    try:
        with offline():
            model = AutoModel.from_pretrained(str(info.path), local_files_only=True)
        model.eval()
        import inspect

        accepted = inspect.signature(model.forward).parameters
        names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in accepted]

        class _Hidden(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, *args: Any) -> Any:
                return self.inner(**dict(zip(names, args, strict=True))).last_hidden_state

        tok = load_tokenizer(info)
        pad_id = int(getattr(model.config, "pad_token_id", None) or 0)
        meta = {
            "version": EXPORT_VERSION,
            "model": info.name,
            "inputs": names,
            "pad_id": int(pad_id),
            "pooling": info.pooling,
            "normalized": info.normalized,
        }
        # The reference vectors come first: tracing leaves the torch module altered.
        want = _torch_reference(model, tok, meta, info)
        # Trace with padding in the batch, so the attention-mask path is what gets recorded.
        mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3], dtype=torch.long)
        sample = {
            "input_ids": torch.full((2, 8), 1000, dtype=torch.long) * mask,
            "attention_mask": mask,
            "token_type_ids": torch.zeros((2, 8), dtype=torch.long),
        }
        dummy = tuple(sample[n] for n in names)
        axes = {n: {0: "batch", 1: "tokens"} for n in [*names, "hidden"]}
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Hidden(model),
                dummy,
                str(tmp / _FP32),
                input_names=names,
                output_names=["hidden"],
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            )
        # check the export against torch before keeping it
        encoder = OnnxEncoder(tmp / _FP32, info, tok, meta, n_threads=None)
        got = encoder.encode(PROBE_TEXTS, 16, True)
        low = float((got * want).sum(axis=1).min())
        if low < MIN_EXPORT_COSINE:
            raise EmbeddingError(
                f"{info.path}: the ONNX export does not reproduce the model (min cosine "
                f"{low:.5f}); use backend='torch'"
            )
        (tmp / "meta.json").write_text(json.dumps({**meta, "check_min_cosine": low}, indent=1))
        try:
            tmp.rename(target)
        except OSError:  # another process finished first: use its copy
            if not (target / "meta.json").is_file():
                raise
        logger.info(
            "exported %s to ONNX in %.1fs (%s)", info.name, time.perf_counter() - start, target
        )
    except EmbeddingError:
        raise
    except Exception as e:
        raise EmbeddingError(
            f"{info.path}: ONNX export failed ({type(e).__name__}: {e}); use backend='torch'"
        ) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _torch_reference(model: Any, tok: Any, meta: dict[str, Any], info: ModelDir) -> Any:
    import numpy as np
    import torch

    rows = []
    with torch.no_grad():
        for text in PROBE_TEXTS:
            enc = tok.encode(text, add_special_tokens=True)
            feed = _feed([enc], meta)
            hidden = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).last_hidden_state
            rows.append(_pool(hidden.numpy(), feed["attention_mask"], info.pooling, True)[0])
    return np.stack(rows)


def _quantize(info: ModelDir, target: Path, meta: dict[str, Any]) -> None:
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:
        raise EmbeddingError(
            f"backend 'onnx-int8' needs the onnx package ({e}); run `pip install onnx` or use "
            "backend='onnx'"
        ) from e
    start = time.perf_counter()
    graph = onnx.load(str(target / _FP32)).graph
    weights = {t.name: tuple(t.dims) for t in graph.initializer}
    # The feed-forward layers (non-square weights: hidden <-> intermediate) stay in float:
    # with them in int8, short texts ("hello") drift to cosine ~0.98 of full precision.
    keep_float = [
        n.name
        for n in graph.node
        if n.op_type == "MatMul"
        and any(len(s) == 2 and s[0] != s[1] for s in (weights.get(i) for i in n.input) if s)
    ]
    tmp = target / f".{_INT8}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        root = logging.getLogger()  # ORT logs advice about pre-processing on the root logger
        was, root.disabled = root.disabled, True
        try:
            quantize_dynamic(
                str(target / _FP32),
                str(tmp),
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul"],
                nodes_to_exclude=keep_float,
            )
        finally:
            root.disabled = was
        tok = load_tokenizer(info)
        full = OnnxEncoder(target / _FP32, info, tok, meta, n_threads=None)
        small = OnnxEncoder(tmp, info, tok, meta, n_threads=None)
        cos = (full.encode(PROBE_TEXTS, 16, True) * small.encode(PROBE_TEXTS, 16, True)).sum(1)
        low = float(cos.min())
        if low < MIN_INT8_COSINE:
            report = {"min_cosine": low, "mean_cosine": float(cos.mean())}
            (target / _REJECTED).write_text(json.dumps(report))
            _raise_rejected(info, report)
        os.replace(tmp, target / _INT8)
        logger.info(
            "quantized %s to int8 in %.1fs (probe min cosine %.4f)",
            info.name,
            time.perf_counter() - start,
            low,
        )
    finally:
        tmp.unlink(missing_ok=True)


def _feed(encodings: list[Any], meta: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    length = max(len(e.ids) for e in encodings)
    ids = np.full((len(encodings), length), meta["pad_id"], dtype=np.int64)
    mask = np.zeros((len(encodings), length), dtype=np.int64)
    types = np.zeros((len(encodings), length), dtype=np.int64)
    for row, e in enumerate(encodings):
        n = len(e.ids)
        ids[row, :n] = e.ids
        mask[row, :n] = 1
        types[row, :n] = e.type_ids
    every = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return {name: every[name] for name in meta["inputs"]} | {"attention_mask": mask}


def _pool(hidden: Any, mask: Any, pooling: str | None, normalize: bool) -> Any:
    import numpy as np

    m = mask[..., None].astype(np.float32)
    if pooling == "cls":
        out = hidden[:, 0]
    elif pooling == "max":
        out = np.where(m > 0, hidden, -np.inf).max(axis=1)
    else:
        out = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
    out = out.astype(np.float32)
    if normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out = out / np.clip(norms, 1e-12, None)
    return out


class OnnxEncoder:
    """One ONNX Runtime session (thread-safe) plus the model's tokenizer and pooling."""

    def __init__(
        self,
        file: Path,
        info: ModelDir,
        tokenizer: Any,
        meta: dict[str, Any],
        n_threads: int | None,
    ) -> None:
        import onnxruntime as ort

        from llamachain.engine._native import physical_cores

        options = ort.SessionOptions()
        options.intra_op_num_threads = n_threads or physical_cores()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
        self.info = info
        self.tokenizer = tokenizer
        self.meta = meta
        self.file = file

    def encode(self, texts: list[str], batch_size: int, normalize: bool) -> Any:
        import numpy as np

        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=True)
        order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))
        out: Any = None
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            feed = _feed([encodings[i] for i in idx], self.meta)
            inputs = {k: feed[k] for k in self.meta["inputs"]}
            hidden = self.session.run(["hidden"], inputs)[0]
            pooled = _pool(
                hidden, feed["attention_mask"], self.info.pooling, normalize or self.info.normalized
            )
            if out is None:
                out = np.zeros((len(texts), pooled.shape[1]), dtype=np.float32)
            out[idx] = pooled
        return out if out is not None else np.zeros((0, 0), dtype=np.float32)
