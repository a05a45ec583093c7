"""A fast scan of a GGUF file's metadata and tensor table, for :func:`read_model_info`.

``gguf.GGUFReader`` builds a numpy view for every element of every array, which takes ~2 s for
SmolLM2's 49k-token vocabulary and ~8 s for Gemma 3's 262k.  Model info needs only the scalar
values, the length of the arrays and the tensor table, so this reads the header with
``struct`` over a memory map and steps over array contents (string arrays by their lengths).
Any inconsistency raises :class:`ScanError`.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# GGUF value types -> struct format of one item (strings and arrays handled apart)
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9


class ScanError(ValueError):
    """The bytes do not form a GGUF header."""


@dataclass
class ArrayInfo:
    """An array value: its item type and length (contents not read)."""

    item_type: int
    length: int

    def __len__(self) -> int:
        return self.length


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # from the start of the data section


@dataclass
class Scan:
    version: int
    fields: dict[str, Any] = field(default_factory=dict)  # scalars, strings, ArrayInfo
    tensors: list[TensorInfo] = field(default_factory=list)
    data_start: int = 0


class _Cursor:
    def __init__(self, buf: Any) -> None:
        self.buf = buf
        self.pos = 0
        self.size = len(buf)

    def take(self, fmt: str) -> Any:
        n = struct.calcsize(fmt)
        if self.pos + n > self.size:
            raise ScanError(f"ends inside the header (at byte {self.pos})")
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return value

    def string(self) -> str:
        n = self.take("<Q")
        if self.pos + n > self.size:
            raise ScanError(f"a string of {n} bytes runs past the end of the file")
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return raw.decode("utf-8", "replace")

    def skip_strings(self, count: int) -> None:
        buf, pos, size, unpack = self.buf, self.pos, self.size, struct.unpack_from
        for _ in range(count):
            if pos + 8 > size:
                raise ScanError("a string array runs past the end of the file")
            pos += 8 + unpack("<Q", buf, pos)[0]
        if pos > size:
            raise ScanError("a string array runs past the end of the file")
        self.pos = pos

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.take(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            item_type = self.take("<I")
            length = self.take("<Q")
            if item_type in _SCALARS:
                end = self.pos + length * struct.calcsize(_SCALARS[item_type])
                if end > self.size:
                    raise ScanError("an array runs past the end of the file")
                self.pos = end
            elif item_type == _STRING:
                self.skip_strings(length)
            elif item_type == _ARRAY:
                for _ in range(length):  # nested arrays: rare, read one by one
                    self.value(_ARRAY)
            else:
                raise ScanError(f"unknown array item type {item_type}")
            return ArrayInfo(item_type, length)
        raise ScanError(f"unknown value type {vtype}")


def scan(path: Path) -> Scan:
    """Read ``path``'s GGUF header: metadata values and the tensor table."""
    with open(path, "rb") as f:
        if Path(path).stat().st_size == 0:
            raise ScanError("is empty")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _scan(buf)


def _scan(buf: Any) -> Scan:
    c = _Cursor(buf)
    if bytes(buf[:4]) != b"GGUF":
        raise ScanError("does not start with the GGUF magic")
    c.pos = 4
    version = c.take("<I")
    if version < 2:
        raise ScanError(f"GGUF version {version} is not supported (2 or later)")
    n_tensors = c.take("<Q")
    n_kv = c.take("<Q")
    if n_tensors > c.size or n_kv > c.size:  # counts that cannot fit: garbage
        raise ScanError("the header's counts are impossible for the file's size")
    out = Scan(version=version)
    for _ in range(n_kv):
        key = c.string()
        out.fields[key] = c.value(c.take("<I"))
    for _ in range(n_tensors):
        name = c.string()
        n_dims = c.take("<I")
        if n_dims > 8:
            raise ScanError(f"tensor {name!r} claims {n_dims} dimensions")
        shape = tuple(c.take("<Q") for _ in range(n_dims))
        out.tensors.append(TensorInfo(name, shape, c.take("<I"), c.take("<Q")))
    alignment = out.fields.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment <= 0:
        raise ScanError(f"general.alignment {alignment!r} is not a positive integer")
    out.data_start = -(-c.pos // alignment) * alignment
    return out
