"""Small helpers around llama_cpp's native library and the host CPU."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads only slow llama.cpp down)."""
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        allowed = set(range(os.cpu_count() or 1))
    cores: set[tuple[str, str]] = set()
    try:
        proc = current = None
        phys = core = ""
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "processor":
                proc = int(value)
                phys = core = ""
            elif key == "physical id":
                phys = value
            elif key == "core id":
                core = value
            elif not line.strip() and proc is not None:
                current = proc
                if current in allowed:
                    cores.add((phys, core or str(current)))
                proc = None
        if proc is not None and proc in allowed:
            cores.add((phys, core or str(proc)))
    except OSError:
        pass
    n = len(cores) if cores else len(allowed)
    return max(1, min(n, len(allowed) or 1))


def system_info() -> str:
    """llama.cpp's own report of the CPU features it was built with."""
    import llama_cpp

    return llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()


def build_features() -> dict[str, bool]:
    """Parse :func:`system_info` into ``{"AVX2": True, "AMX_INT8": False, ...}``."""
    features: dict[str, bool] = {}
    for part in system_info().replace("\n", "|").split("|"):
        key, sep, value = part.partition("=")
        if sep and value.strip() in ("0", "1"):
            features[key.strip()] = value.strip() == "1"
    return features


def backends() -> list[str]:
    """Names of the ggml backends (devices) compiled into this llama.cpp build."""
    import llama_cpp

    names: list[str] = []
    try:
        count = llama_cpp.ggml_backend_dev_count()  # type: ignore[attr-defined]
        for i in range(count):
            dev = llama_cpp.ggml_backend_dev_get(i)  # type: ignore[attr-defined]
            names.append(llama_cpp.ggml_backend_dev_name(dev).decode())  # type: ignore[attr-defined]
    except AttributeError:
        if llama_cpp.llama_supports_gpu_offload():
            names.append("GPU")
        names.append("CPU")
    return names


def token_piece(vocab: object, token: int, special: bool = False) -> bytes:
    """The bytes of one token (llama-cpp-python's helper pads to 32 bytes and cuts longer ones)."""
    import ctypes

    import llama_cpp

    size = 64
    while True:
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_token_to_piece(vocab, token, buf, size, 0, special)
        if n >= 0:
            return buf.raw[:n]
        size = -n


def detokenize(vocab: object, tokens: list[int], special: bool = False) -> bytes:
    return b"".join(token_piece(vocab, t, special) for t in tokens)
