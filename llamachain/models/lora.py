"""GGUF LoRA adapters: inspect and validate them, write them, and convert PEFT adapters to them.

A GGUF LoRA adapter holds, for every adapted weight ``W`` of the base model (``blk.0.attn_q.
weight``), two tensors ``<name>.lora_a`` (numpy shape ``(r, n_in)``) and ``<name>.lora_b``
(``(n_out, r)``), plus ``general.type = "adapter"``, ``adapter.type = "lora"`` and
``adapter.lora.alpha``.  llama.cpp then computes ``W x + scale * alpha / r * B (A x)``, which
is what a model with the merged weight ``W + scale * alpha / r * B @ A`` computes.

PEFT stores the same two matrices (``...q_proj.lora_A.weight`` is ``(r, n_in)``,
``lora_B.weight`` ``(n_out, r)``) under Hugging Face names and in Hugging Face's row order;
:func:`convert_peft_lora` renames them, puts the query/key rows in llama.cpp's rotary order
(LLaMA) or un-interleaves the fused query/key/value rows (BLOOM), and folds rsLoRA and
per-module ranks/alphas into ``B`` so that llama.cpp's single ``alpha / r`` is right.
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llamachain.errors import ConfigError, ModelFileError
from llamachain.models.gguf_info import check_header, reader_field

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)

OUT_TYPES = ("f32", "f16")
# Architectures whose PEFT adapters we can convert (the Hugging Face names and row orders we know).
CONVERTIBLE = ("llama", "bloom")
LORA_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>A|B)(?:\.[^.]+)?\.weight$"
)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class LoraInfo:
    """What a GGUF LoRA adapter file holds.

    Shapes are in numpy order: A ``(r, n_in)``, B ``(n_out, r)``.
    """

    path: str
    file_size: int
    architecture: str
    alpha: float
    tensors: dict[str, tuple[tuple[int, int], tuple[int, int]]]
    tensor_types: dict[str, int]
    name: str | None = None
    task_name: str | None = None
    prompt_prefix: str | None = None

    @property
    def ranks(self) -> list[int]:
        return sorted({a[0] for a, _ in self.tensors.values()})

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ranks"] = self.ranks
        data["tensors"] = {k: {"a": list(a), "b": list(b)} for k, (a, b) in self.tensors.items()}
        return data


def _field(reader: Any, key: str) -> Any:
    try:
        return reader_field(reader, key)
    except Exception:  # pragma: no cover - malformed value; treat as absent
        return None


_HOW = "convert a PEFT adapter with `llamachain lora convert PEFT_DIR OUT.gguf --base MODEL.gguf`"


def read_lora_info(path: str | os.PathLike[str]) -> LoraInfo:
    """Validate a GGUF LoRA adapter file (metadata, tensor pairs, shapes, finite values)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelFileError(p, f"no such file; pass the path of a GGUF LoRA adapter ({_HOW})")
    check_header(p)
    p = p.resolve()
    import gguf  # lazy: numpy-heavy
    import numpy as np

    size = p.stat().st_size
    try:
        reader = gguf.GGUFReader(p)
    except Exception as e:
        raise ModelFileError(p, f"is truncated or corrupt: cannot parse GGUF metadata ({e})") from e
    kind = _field(reader, "general.type")
    if kind != "adapter":
        what = f"general.type={kind!r}" if kind else "no general.type"
        raise ModelFileError(
            p,
            f"is not a LoRA adapter ({what}; a model file?): pass the base model as the model and "
            f"a GGUF LoRA adapter as lora ({_HOW})",
        )
    adapter_type = _field(reader, "adapter.type")
    if adapter_type != "lora":
        raise ModelFileError(p, f"is a {adapter_type!r} adapter, not a LoRA adapter")
    arch = _field(reader, "general.architecture")
    if not isinstance(arch, str):
        raise ModelFileError(p, "has no general.architecture; cannot tell which model it adapts")
    alpha = _field(reader, "adapter.lora.alpha")
    alpha = float(alpha) if alpha is not None else 0.0
    if not math.isfinite(alpha):
        raise ModelFileError(p, f"has a non-finite adapter.lora.alpha ({alpha})")

    halves: dict[str, dict[str, Any]] = {}
    tensor_types: dict[str, int] = {}
    for t in reader.tensors:
        if int(t.data_offset) + int(t.n_bytes) > size:
            raise ModelFileError(p, f"is truncated: the data of tensor {t.name} is missing")
        base, _, half = t.name.rpartition(".")
        if half not in ("lora_a", "lora_b") or not base:
            raise ModelFileError(p, f"has tensor {t.name}, which is neither X.lora_a nor X.lora_b")
        if len(t.shape) != 2:
            raise ModelFileError(p, f"tensor {t.name} has {len(t.shape)} dimensions, not 2")
        halves.setdefault(base, {})[half] = t
        tensor_types[t.tensor_type.name] = tensor_types.get(t.tensor_type.name, 0) + 1
    if not halves:
        raise ModelFileError(p, "contains no LoRA tensors")
    tensors: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {}
    for base, pair in sorted(halves.items()):
        missing = {"lora_a", "lora_b"} - pair.keys()
        if missing:
            raise ModelFileError(p, f"has no {base}.{missing.pop()} to go with its other half")
        a_shape = tuple(int(x) for x in reversed(pair["lora_a"].shape))
        b_shape = tuple(int(x) for x in reversed(pair["lora_b"].shape))
        if a_shape[0] != b_shape[1]:
            raise ModelFileError(
                p,
                f"{base}: lora_a {a_shape} and lora_b {b_shape} disagree on the rank "
                "(expected A of shape (r, n_in) and B of shape (n_out, r))",
            )
        for half in ("lora_a", "lora_b"):
            values = _values(pair[half])
            if not np.isfinite(values).all():
                raise ModelFileError(p, f"{base}.{half} holds NaN or infinite values")
        tensors[base] = (a_shape, b_shape)  # type: ignore[assignment]
    return LoraInfo(
        path=str(p),
        file_size=size,
        architecture=arch,
        alpha=alpha,
        tensors=tensors,
        tensor_types=tensor_types,
        name=_field(reader, "general.name"),
        task_name=_field(reader, "adapter.lora.task_name"),
        prompt_prefix=_field(reader, "adapter.lora.prompt_prefix"),
    )


def _values(t: Any) -> np.ndarray:
    import gguf
    import numpy as np

    if t.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        return np.asarray(t.data)
    return gguf.quants.dequantize(t.data, t.tensor_type)


def _weight_name(name: str) -> str:
    return name if name.endswith((".weight", ".bias")) else f"{name}.weight"


def write_gguf_lora(
    path: str | os.PathLike[str],
    tensors: Mapping[str, tuple[Any, Any]],
    *,
    alpha: float,
    architecture: str = "llama",
    outtype: str = "f32",
    name: str | None = None,
) -> Path:
    """Write a GGUF LoRA adapter: ``{"blk.0.attn_q.weight": (A, B), ...}``, A ``(r, n_in)``,
    B ``(n_out, r)`` (PEFT's orientation), so the weight changes by ``scale * alpha / r * B @ A``.

    The file is written next to ``path`` under a temporary name and renamed into place once it
    passes :func:`read_lora_info`.
    """
    import numpy as np

    if outtype not in OUT_TYPES:
        raise ConfigError(f"unknown output type {outtype!r}; choose one of: {', '.join(OUT_TYPES)}")
    if not math.isfinite(alpha) or alpha <= 0:
        raise ConfigError(f"alpha must be a finite number > 0, got {alpha!r}")
    if not tensors:
        raise ConfigError("no tensors to write: pass at least one {name: (A, B)} pair")
    dtype = np.float32 if outtype == "f32" else np.float16
    pairs: list[tuple[str, np.ndarray, np.ndarray]] = []
    for key, (a, b) in tensors.items():
        a_arr, b_arr = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
        if a_arr.ndim != 2 or b_arr.ndim != 2 or a_arr.shape[0] != b_arr.shape[1]:
            raise ConfigError(
                f"{key}: A {a_arr.shape} and B {b_arr.shape} must be 2-D, A of shape (r, n_in) "
                "and B of shape (n_out, r)"
            )
        if not (np.isfinite(a_arr).all() and np.isfinite(b_arr).all()):
            raise ConfigError(f"{key}: A or B holds NaN or infinite values")
        pairs.append((_weight_name(key), a_arr.astype(dtype), b_arr.astype(dtype)))

    import gguf

    dst = Path(path).expanduser().absolute()
    if dst.is_dir():
        raise ModelFileError(dst, "is a directory; pass the path of the .gguf file to write")
    if not dst.parent.is_dir():
        raise ModelFileError(dst.parent, "no such directory; create it first")
    tmp = dst.parent / f".{dst.name}.{os.getpid()}.{secrets.token_hex(4)}.partial"
    try:
        writer = gguf.GGUFWriter(str(tmp), architecture)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
        if name:
            writer.add_name(name)
        writer.add_file_type(
            gguf.LlamaFileType.ALL_F32 if outtype == "f32" else gguf.LlamaFileType.MOSTLY_F16
        )
        for weight, a_arr, b_arr in pairs:
            writer.add_tensor(f"{weight}.lora_a", np.ascontiguousarray(a_arr))
            writer.add_tensor(f"{weight}.lora_b", np.ascontiguousarray(b_arr))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        read_lora_info(tmp)  # what we wrote must pass our own checks
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dst


# -- the base model ------------------------------------------------------------------------


@dataclass(frozen=True)
class BaseModelShapes:
    """What adapting a base GGUF model needs to know: its architecture, heads and weight shapes."""

    path: str
    architecture: str
    block_count: int
    head_count: int | None
    head_count_kv: int | None
    shapes: dict[str, tuple[int, ...]] = field(repr=False)  # numpy order: (n_out, n_in)


_shapes_cache: dict[tuple[str, int, int], BaseModelShapes] = {}


def read_base_shapes(path: str | os.PathLike[str]) -> BaseModelShapes:
    """The tensor shapes (numpy order) and head counts of a base GGUF model."""
    from llamachain.models.gguf_info import read_model_info

    info = read_model_info(path)  # validates the file
    st = Path(info.path).stat()
    key = (info.path, st.st_size, st.st_mtime_ns)
    hit = _shapes_cache.get(key)
    if hit is not None:
        return hit
    from llamachain.models._gguf_scan import scan

    header = scan(Path(info.path))  # read_model_info has validated it; no vocabulary parsing
    arch = info.architecture
    heads = header.fields.get(f"{arch}.attention.head_count")
    heads_kv = header.fields.get(f"{arch}.attention.head_count_kv")
    head_count = int(heads) if isinstance(heads, int) else None  # None: absent or per layer
    result = BaseModelShapes(
        path=info.path,
        architecture=arch,
        block_count=int(info.block_count or 0),
        head_count=head_count,
        head_count_kv=int(heads_kv) if isinstance(heads_kv, int) else head_count,
        shapes={t.name: tuple(reversed(t.shape)) for t in header.tensors},
    )
    _shapes_cache[key] = result
    return result


def check_lora_fits(lora: LoraInfo, base: BaseModelShapes) -> None:
    """Raise :class:`ModelFileError` unless every adapted weight exists in ``base`` with the
    shape the adapter expects (llama.cpp may abort on a mismatch, so we look first)."""
    if lora.architecture != base.architecture:
        raise ModelFileError(
            lora.path,
            f"is an adapter for architecture {lora.architecture!r}, but the model "
            f"{base.path} is {base.architecture!r}; use an adapter made for this model",
        )
    for weight, (a_shape, b_shape) in lora.tensors.items():
        shape = base.shapes.get(weight)
        if shape is None:
            raise ModelFileError(
                lora.path,
                f"adapts {weight}, which the model {base.path} does not have; the adapter "
                "was made for another model",
            )
        want = (b_shape[0], a_shape[1])
        # llama.cpp keeps the token embedding's pair the other way round (it looks rows up)
        flipped = weight.endswith("token_embd.weight") and tuple(shape) == want[::-1]
        if tuple(shape) != want and not flipped:
            raise ModelFileError(
                lora.path,
                f"adapts {weight} as a {want[0]}x{want[1]} matrix, but in the model "
                f"{base.path} it is {'x'.join(map(str, shape))}; the adapter was made for "
                "another model (or a different size of it)",
            )


# -- PEFT -> GGUF --------------------------------------------------------------------------


@dataclass(frozen=True)
class LoraConvertResult:
    src: Path
    dst: Path
    base: str
    architecture: str
    tensors: int
    ranks: list[int]
    alpha: float
    outtype: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["src"], data["dst"] = str(self.src), str(self.dst)
        return data


def convert_peft_lora(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    base: str | os.PathLike[str] | None = None,
    outtype: str = "f32",
    home: Any = None,
    progress: Progress | None = None,
) -> LoraConvertResult:
    """Convert a PEFT LoRA adapter directory to a GGUF LoRA adapter for the GGUF model ``base``.

    ``base`` defaults to ``base_model_name_or_path`` in adapter_config.json when that is a
    local GGUF file.  ``progress(done, total)`` is called after each adapted weight.
    """
    import numpy as np

    start = time.perf_counter()
    if outtype not in OUT_TYPES:
        raise ConfigError(f"unknown output type {outtype!r}; choose one of: {', '.join(OUT_TYPES)}")
    src_path = Path(src).expanduser().absolute()
    from llamachain.models import _peft

    cfg = _peft.read_config(src_path)
    weights = _peft.read_weights(src_path)
    shapes = read_base_shapes(_peft.resolve_base(cfg, base, home))
    if shapes.architecture not in CONVERTIBLE:
        raise ConfigError(
            f"converting PEFT adapters for {shapes.architecture!r} models is not supported "
            f"(supported: {', '.join(CONVERTIBLE)}): their Hugging Face tensor names and row "
            "orders are not mapped yet"
        )
    r_default = int(cfg.get("r") or 8)
    alpha_default = float(cfg.get("lora_alpha") or 8)
    rslora = bool(cfg.get("use_rslora"))
    # llama.cpp scales every tensor by alpha / (its rank); with rsLoRA PEFT uses
    # alpha / sqrt(r), so the file's alpha is chosen to make the common case exact and any
    # per-module difference is folded into B below.
    file_alpha = alpha_default * math.sqrt(r_default) if rslora else alpha_default

    modules: dict[str, dict[str, np.ndarray]] = {}
    for key, value in weights.items():
        m = LORA_KEY.match(key)
        if m is None:
            raise ConfigError(
                f"{src_path}: tensor {key} is not a LoRA A/B matrix (embedding or other "
                "adapter kinds are not supported by the converter)"
            )
        modules.setdefault(m.group("module"), {})[m.group("ab")] = np.asarray(value, np.float32)

    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    total = len(modules)
    for module, pair in sorted(modules.items()):
        if set(pair) != {"A", "B"}:
            have = "".join(sorted(pair)) or "neither"
            raise ConfigError(f"{src_path}: {module} needs lora_A and lora_B, has {have} only")
        gguf_name = _peft.to_gguf_name(module, shapes)
        if gguf_name is None:
            raise ConfigError(
                f"{src_path}: cannot map {module} to a {shapes.architecture} GGUF tensor name"
            )
        a, b = pair["A"], pair["B"]
        rank = a.shape[0]
        r_m = _peft.pattern_value(cfg.get("rank_pattern"), module, r_default)
        alpha_m = _peft.pattern_value(cfg.get("alpha_pattern"), module, alpha_default)
        wanted = alpha_m / (math.sqrt(r_m) if rslora else r_m)
        factor = wanted * rank / file_alpha
        if abs(factor - 1.0) > 1e-9:
            b = b * np.float32(factor)
        out[gguf_name] = (a, b)

    dst_path = Path(dst).expanduser().absolute()
    planned = LoraInfo(
        path=str(src_path),
        file_size=0,
        architecture=shapes.architecture,
        alpha=file_alpha,
        tensors={k: (a.shape, b.shape) for k, (a, b) in out.items()},
        tensor_types={},
    )
    check_lora_fits(planned, shapes)  # before reordering rows or writing anything
    for done, (gguf_name, (a, b)) in enumerate(out.items(), start=1):
        out[gguf_name] = (a, _peft.reorder_rows(gguf_name, b, shapes))
        if progress is not None:
            progress(done, total)
    write_gguf_lora(
        dst_path,
        out,
        alpha=file_alpha,
        architecture=shapes.architecture,
        outtype=outtype,
        name=src_path.name,
    )
    seconds = time.perf_counter() - start
    logger.info("converted %s -> %s (%d tensors) in %.1fs", src_path, dst_path, len(out), seconds)
    return LoraConvertResult(
        src=src_path,
        dst=dst_path,
        base=shapes.path,
        architecture=shapes.architecture,
        tensors=len(out),
        ranks=sorted({a.shape[0] for a, _ in out.values()}),
        alpha=file_alpha,
        outtype=outtype,
        seconds=seconds,
    )
