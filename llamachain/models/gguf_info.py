"""Read and validate GGUF files with the ``gguf`` package, before llama.cpp sees them.

llama.cpp answers a bad file with a C-level error or, for some truncations, worse; we check
the magic, the version and that every tensor's data lies inside the file first, and raise a
:class:`~llamachain.errors.ModelFileError` that names the file and the problem.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llamachain.errors import ModelFileError

logger = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)


@dataclass(frozen=True)
class ModelInfo:
    """What a GGUF file says about itself."""

    path: str
    file_size: int
    gguf_version: int
    architecture: str
    name: str | None
    parameters: int
    file_type: str
    tensor_types: dict[str, int]
    context_length: int | None
    embedding_length: int | None
    block_count: int | None
    vocab_size: int | None
    chat_template: str | None
    license: str | None
    bos_token_id: int | None
    eos_token_id: int | None
    tokenizer_model: str | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def has_chat_template(self) -> bool:
        return bool(self.chat_template)

    @property
    def parameters_label(self) -> str:
        n = self.parameters
        for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
            if n >= size:
                return f"{n / size:.1f}{unit}"
        return str(n)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["has_chat_template"] = self.has_chat_template
        data["parameters_label"] = self.parameters_label
        return data


def check_header(path: str | os.PathLike[str]) -> Path:
    """Cheap checks that need no parsing: exists, is a file, GGUF magic, known version."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelFileError(p, "no such file; pass the path of a .gguf model file")
    if p.is_dir():
        raise ModelFileError(p, "is a directory, not a GGUF model file")
    try:
        with p.open("rb") as fh:
            head = fh.read(8)
    except OSError as e:
        raise ModelFileError(p, f"cannot be read ({e.strerror})") from e
    if len(head) < 8:
        raise ModelFileError(p, f"is only {len(head)} bytes long; not a GGUF model file")
    if head[:4] != GGUF_MAGIC:
        hint = ""
        if head[:4] in (b"ggml", b"ggmf", b"ggjt", b"lmgg", b"fmgg", b"tjgg"):
            hint = " (an old ggml/ggjt file: re-convert it to GGUF with llama.cpp's tools)"
        elif head[:2] == b"PK" or head[:1] == b"\x80":
            hint = " (looks like a PyTorch checkpoint: convert it to GGUF first)"
        raise ModelFileError(p, f"is not a GGUF file: bad magic {head[:4]!r}{hint}")
    version = int.from_bytes(head[4:8], "little")
    if version not in SUPPORTED_VERSIONS:
        raise ModelFileError(p, f"has GGUF version {version}; supported: {SUPPORTED_VERSIONS}")
    return p


def reader_field(reader: Any, key: str) -> Any:
    """The value of metadata ``key`` in an open ``gguf.GGUFReader`` (None when absent)."""
    f = reader.fields.get(key)
    return None if f is None else f.contents()


_cache: dict[tuple[str, int, int], ModelInfo] = {}
_cache_lock = threading.Lock()


def read_model_info(path: str | os.PathLike[str]) -> ModelInfo:
    """Validate ``path`` and return its metadata; raises :class:`ModelFileError`."""
    p = check_header(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None:
        return hit
    info = _parse(p, st.st_size)
    with _cache_lock:
        _cache[key] = info
    return info


def _parse(p: Path, size: int) -> ModelInfo:
    import gguf  # lazy: numpy-heavy

    from llamachain.models._gguf_scan import ArrayInfo, ScanError, scan

    try:
        header = scan(p)
    except (ScanError, OSError, ValueError) as e:
        raise ModelFileError(p, f"is truncated or corrupt: cannot parse GGUF metadata ({e})") from e

    def value(key: str) -> Any:
        v = header.fields.get(key)
        return None if isinstance(v, ArrayInfo) else v

    def length(key: str) -> int | None:
        v = header.fields.get(key)
        return v.length if isinstance(v, ArrayInfo) else None

    tensor_types: dict[str, int] = {}
    parameters = 0
    data_end = 0
    for t in header.tensors:
        try:
            qtype = gguf.GGMLQuantizationType(t.ggml_type)
        except ValueError as e:
            raise ModelFileError(
                p, f"tensor {t.name!r} has an unknown type {t.ggml_type}; a newer GGUF?"
            ) from e
        n = 1
        for d in t.shape:
            n *= d
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        parameters += n
        tensor_types[qtype.name] = tensor_types.get(qtype.name, 0) + 1
        data_end = max(data_end, header.data_start + t.offset + n // block * type_size)
    if not header.tensors:
        raise ModelFileError(p, "contains no tensors; it is not a model file")
    if data_end > size:
        raise ModelFileError(
            p, f"is truncated: tensor data needs {data_end} bytes but the file has {size}"
        )
    arch = value("general.architecture")
    if not isinstance(arch, str):
        raise ModelFileError(p, "has no general.architecture; not a model file")
    file_type = _file_type_name(value("general.file_type"), tensor_types)
    return ModelInfo(
        path=str(p),
        file_size=size,
        gguf_version=header.version,
        architecture=arch,
        name=value("general.name"),
        parameters=parameters,
        file_type=file_type,
        tensor_types=tensor_types,
        context_length=value(f"{arch}.context_length"),
        embedding_length=value(f"{arch}.embedding_length"),
        block_count=value(f"{arch}.block_count"),
        vocab_size=value(f"{arch}.vocab_size") or length("tokenizer.ggml.tokens"),
        chat_template=value("tokenizer.chat_template"),
        license=value("general.license"),
        bos_token_id=value("tokenizer.ggml.bos_token_id"),
        eos_token_id=value("tokenizer.ggml.eos_token_id"),
        tokenizer_model=value("tokenizer.ggml.model"),
    )


def _file_type_name(file_type_id: Any, tensor_types: dict[str, int]) -> str:
    import gguf

    if isinstance(file_type_id, int):
        try:
            name = gguf.LlamaFileType(file_type_id).name
            return name.replace("MOSTLY_", "").replace("ALL_", "")
        except ValueError:
            pass
    # No (or unknown) file type: describe by the most common tensor type.
    if tensor_types:
        return max(tensor_types.items(), key=lambda kv: kv[1])[0]
    return "unknown"
