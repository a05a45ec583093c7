"""Find and stream the weight tensors of a Hugging Face checkpoint directory.

Supported layouts, in the order they are looked for: ``model.safetensors.index.json``
(sharded safetensors), ``*.safetensors``, ``pytorch_model.bin.index.json`` (sharded torch),
``pytorch_model*.bin`` and ``*.pth`` / ``consolidated.*.pth``.  Tensors are read one at a time:
safetensors through ``safe_open``, torch files through ``torch.load(mmap=True,
weights_only=True)`` (never unpickling arbitrary code), one file open at a time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llamachain.errors import ModelFileError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor of the checkpoint lives, and its shape (read without loading it)."""

    name: str
    shape: tuple[int, ...]
    file: Path


def _index(directory: Path, index_name: str) -> tuple[list[Path], dict[str, str]] | None:
    index = directory / index_name
    if not index.is_file():
        return None
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        files = sorted({str(f) for f in weight_map.values()})
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ModelFileError(index, f"is not a valid shard index ({e}); restore the file") from e
    missing = [f for f in files if not (directory / f).is_file()]
    if missing:
        raise ModelFileError(
            directory,
            f"is missing {len(missing)} of the {len(files)} shards {index_name} lists "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); download them",
        )
    return [directory / f for f in files], {str(k): str(v) for k, v in weight_map.items()}


def find_weight_files(directory: Path) -> tuple[list[Path], dict[str, str] | None]:
    """The checkpoint's weight files and its shard index (tensor -> file name) if it has one,
    or a :class:`ModelFileError` saying what is missing."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        found = _index(directory, index_name)
        if found is not None:
            return found
    for pattern in ("*.safetensors", "pytorch_model*.bin", "consolidated.*.pth", "*.pth"):
        files = sorted(directory.glob(pattern))
        if files:
            if pattern == "consolidated.*.pth" and len(files) > 1:
                raise ModelFileError(
                    directory,
                    f"holds a model-parallel checkpoint in {len(files)} consolidated.*.pth "
                    "files; merge it into one checkpoint first (for example with transformers' "
                    "LLaMA conversion script)",
                )
            return files, None
    raise ModelFileError(
        directory,
        "has no weights (model.safetensors, model-*.safetensors with an index, "
        "pytorch_model.bin or *.pth); download the weight files next to config.json",
    )


class CheckpointReader:
    """Random access to the tensors of a list of weight files, streaming one at a time."""

    def __init__(self, files: list[Path], index: dict[str, str] | None = None) -> None:
        self.files = files
        self._open_path: Path | None = None
        self._open: Any = None
        self.refs: dict[str, TensorRef] = {}
        for path in files:
            for name, shape in self._shapes(path):
                if name in self.refs:
                    raise ModelFileError(
                        path, f"repeats tensor {name!r} already in {self.refs[name].file.name}"
                    )
                if index is not None and index.get(name) != path.name:
                    listed = f"lists it in {index[name]}" if name in index else "does not list it"
                    raise ModelFileError(
                        path,
                        f"holds tensor {name!r} but the shard index {listed}; the shards and "
                        "the index are from different downloads",
                    )
                self.refs[name] = TensorRef(name, shape, path)
        if index is not None:
            absent = sorted(set(index) - set(self.refs))
            if absent:
                raise ModelFileError(
                    files[0].parent,
                    f"the shard index lists {len(absent)} tensors no shard holds "
                    f"({', '.join(absent[:3])}{', ...' if len(absent) > 3 else ''}); "
                    "a shard is incomplete or from a different download",
                )

    @staticmethod
    def _is_safetensors(path: Path) -> bool:
        return path.suffix == ".safetensors"

    def _handle(self, path: Path) -> Any:
        if self._open_path == path:
            return self._open
        self.close()
        if self._is_safetensors(path):
            from safetensors import safe_open

            try:
                handle: Any = safe_open(str(path), framework="pt")
            except Exception as e:  # safetensors raises its own error types
                raise ModelFileError(path, f"is not a readable safetensors file ({e})") from e
        else:
            handle = _torch_load(path)
        self._open_path, self._open = path, handle
        return handle

    def _shapes(self, path: Path) -> Iterator[tuple[str, tuple[int, ...]]]:
        handle = self._handle(path)
        if self._is_safetensors(path):
            for name in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                yield name, tuple(int(d) for d in handle.get_slice(name).get_shape())
        else:
            for name, value in handle.items():
                yield name, tuple(int(d) for d in value.shape)

    def load(self, name: str) -> np.ndarray:
        """Tensor ``name`` as float32 numpy (bf16/f16 upcast exactly)."""
        import torch

        ref = self.refs[name]
        handle = self._handle(ref.file)
        tensor = handle.get_tensor(name) if self._is_safetensors(ref.file) else handle[name]
        return np.asarray(tensor.to(torch.float32).numpy())

    def close(self) -> None:
        self._open_path = self._open = None


def _torch_load(path: Path) -> dict[str, Any]:
    import pickle

    import torch

    try:
        try:
            data = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) torch files cannot be memory-mapped
            data = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ModelFileError(
            path,
            "holds objects other than tensors and was not loaded (only plain state dicts are, "
            "with weights_only=True); save the state dict alone or use safetensors",
        ) from e
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise ModelFileError(path, f"is not a readable PyTorch checkpoint ({e})") from e
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ModelFileError(path, "is not a state dict of tensors")
    return data
