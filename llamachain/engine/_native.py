"""Small helpers around llama_cpp's native library and the host CPU."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
        key = key.rsplit(":", 1)[-1].strip()  # "CPU : SSE3" -> "SSE3"
        if sep and value.strip() in ("0", "1"):
            features[key] = value.strip() == "1"
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


# -- llama.cpp's log -----------------------------------------------------------------------
# llama-cpp-python 0.3.x maps ggml's log levels wrongly (this ggml numbers them DEBUG=1, INFO=2,
# WARN=3, ERROR=4), so with verbose=False it prints warnings and hides errors.  We install our
# own callback: silent unless verbose, errors kept so they can be quoted in our exceptions.

_LEVELS = {1: 10, 2: 20, 3: 30, 4: 40}  # ggml level -> logging level


class _LogState:
    verbose = False
    callback: object = None
    last = 10


_log_state = _LogState()
_captures: list[list[str]] = []
_recent_errors: deque[str] = deque(maxlen=20)
_log_lock = threading.Lock()
_logger = logging.getLogger("llamachain.llama_cpp")


def route_llama_logs(verbose: bool | None = None) -> None:
    """Send llama.cpp's log to our logger (and stderr only when ``verbose``)."""
    import ctypes

    import llama_cpp

    with _log_lock:
        if verbose is not None:
            _log_state.verbose = verbose
        if _log_state.callback is not None:
            return

        @llama_cpp.llama_log_callback
        def _callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            msg = text.decode("utf-8", "replace")
            py_level = _LEVELS.get(level, _log_state.last)  # 5 = continue previous line
            _log_state.last = py_level
            for lines in list(_captures):
                lines.append(msg)
            if py_level >= 40 and msg.strip():
                _recent_errors.append(msg.strip())
            if _log_state.verbose:
                sys.stderr.write(msg)
            elif _logger.isEnabledFor(10) and msg.strip():
                _logger.debug("%s", msg.rstrip())

        _log_state.callback = _callback  # keep a reference: ctypes callbacks must stay alive
        llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))


class _LiveLines(list[str]):
    """A capture list that also hands every new line to a callback as it arrives."""

    def __init__(self, on_line: Callable[[str], None]) -> None:
        super().__init__()
        self._on_line = on_line

    def append(self, line: str) -> None:
        super().append(line)
        try:
            self._on_line(line)
        except Exception:  # raised inside a C callback: it would be printed and lost
            _logger.exception("llama.cpp log callback failed")


@contextmanager
def capture_llama_logs(on_line: Callable[[str], None] | None = None) -> Iterator[list[str]]:
    """Collect llama.cpp's log lines written inside the block (and pass each to ``on_line``)."""
    route_llama_logs()
    lines: list[str] = [] if on_line is None else _LiveLines(on_line)
    _captures.append(lines)
    try:
        yield lines
    finally:
        _captures.remove(lines)


def recent_llama_errors() -> list[str]:
    return list(_recent_errors)
