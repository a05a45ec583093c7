"""llama.cpp's own ``llama-bench``, built from the llama.cpp inside the llama-cpp-python sdist.

The sdist that our wheel was built from (``scripts/build_llama_cpp.py`` pins the version)
carries the full llama.cpp tree under ``vendor/llama.cpp``.  We build only the ``llama-bench``
target from it, with the same CPU flags as our wheel (``cmake_args()``: ``GGML_NATIVE=OFF``,
the CPU's instruction sets on, AMX off) and a Release build, statically linked so the binary
stands alone.  Download, sources and build tree live in a temporary directory that is removed
afterwards; only the binary is kept, in::

    ~/.cache/llamachain/llama-bench/<version>-<hash of the flags>/llama-bench

(``$XDG_CACHE_HOME`` honoured), next to a ``build.json`` with the flags and the build time, so
later runs reuse it.  Nothing of this is committed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

Log = Callable[[str], None]
ROOT = Path(__file__).resolve().parent.parent

# What we add to the wheel's CPU flags: a standalone llama-bench and nothing else.
_EXTRA_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_COMMON=ON",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_OPENSSL=OFF",
)


def _build_script() -> ModuleType:
    """``scripts/build_llama_cpp.py`` as a module: its pinned version and ``cmake_args()``."""
    path = ROOT / "scripts" / "build_llama_cpp.py"
    spec = importlib.util.spec_from_file_location("_llamachain_build_llama_cpp", path)
    if spec is None or spec.loader is None:  # pragma: no cover - the file is in the repo
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_flags() -> tuple[str, list[str]]:
    """(llama-cpp-python version, the CMake arguments for llama-bench on this machine)."""
    script = _build_script()
    return script.LLAMA_CPP_VERSION, [*script.cmake_args(), *_EXTRA_FLAGS]


def cache_dir(version: str, flags: list[str]) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    ident = {"version": version, "cmake": flags, "platform": platform.machine()}
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    return Path(base) / "llamachain" / "llama-bench" / f"{version}-{digest}"


def _run(cmd: list[str], log: Log, **kwargs: Any) -> None:
    log("$ " + " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")


def _unpack_llama_cpp(archive: Path, dest: Path) -> Path:
    """Extract only ``<top>/vendor/llama.cpp/**`` from the sdist; return that directory."""
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if "/vendor/llama.cpp/" in f"{m.name}/"]
        if not members:
            raise SystemExit(f"{archive} has no vendor/llama.cpp tree")
        tar.extractall(dest, members=members, filter="data")
    found = next(dest.glob("*/vendor/llama.cpp/CMakeLists.txt"), None)
    if found is None:
        raise SystemExit(f"{archive}: vendor/llama.cpp has no CMakeLists.txt")
    return found.parent


def ensure_llama_bench(log: Log, *, force: bool = False) -> tuple[Path, dict[str, Any]]:
    """The cached ``llama-bench`` binary and its ``build.json``, building it first if needed."""
    version, flags = build_flags()
    target = cache_dir(version, flags)
    binary = target / "llama-bench"
    if binary.is_file() and not force:
        info = json.loads((target / "build.json").read_text())
        log(f"reusing llama-bench {binary} (built in {info.get('build_seconds', 0):.0f} s)")
        return binary, {**info, "cached": True}
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise SystemExit(f"building llama-bench needs `{tool}` on PATH")
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    jobs = str(os.cpu_count() or 2)
    log(f"building llama-bench from llama-cpp-python {version}'s llama.cpp (one-off)")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llamachain-llama-bench-") as tmp_name:
        tmp = Path(tmp_name)
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-d",
                str(tmp / "sdist"),
                f"llama-cpp-python=={version}",
            ],
            log,
        )
        archive = next((tmp / "sdist").glob("llama_cpp_python-*.tar.gz"))
        src = _unpack_llama_cpp(archive, tmp / "src")
        fetched = time.perf_counter()
        build = tmp / "build"
        _run(["cmake", "-S", str(src), "-B", str(build), *generator, *flags], log)
        configured = time.perf_counter()
        _run(["cmake", "--build", str(build), "--target", "llama-bench", "-j", jobs], log)
        built = time.perf_counter()
        produced = next(build.rglob("bin/llama-bench"), None)
        if produced is None:
            raise SystemExit(f"the build finished but left no bin/llama-bench under {build}")
        info = {
            "llama_cpp_python": version,
            "sdist": archive.name,
            "cmake_args": flags,
            "fetch_seconds": round(fetched - start, 1),
            "configure_seconds": round(configured - fetched, 1),
            "build_seconds": round(built - configured, 1),
            "jobs": int(jobs),
        }
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=_mkdir(target.parent)))
        shutil.copy2(produced, staging / "llama-bench")
        (staging / "build.json").write_text(json.dumps(info, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)  # atomic: never a half-copied cache entry
    log(
        f"built llama-bench in {info['build_seconds']:.0f} s "
        f"(+{info['fetch_seconds']:.0f} s fetch, {info['configure_seconds']:.0f} s configure)"
    )
    return binary, {**info, "cached": False}


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_llama_bench(
    binary: Path,
    model: Path,
    *,
    threads: int,
    n_prompt: int = 512,
    n_gen: int = 128,
    reps: int = 5,
    flash_attn: bool = True,
) -> dict[str, float]:
    """Run ``llama-bench`` on one file; return ``{"pp": tok/s, "tg": tok/s, ...}`` (averages).

    ``pp`` is llama-bench's pp<n_prompt> test (one prompt of n_prompt random tokens in one
    batch), ``tg`` its tg<n_gen> test (n_gen tokens decoded one by one from an empty
    context); each is averaged over ``reps`` runs after a warm-up, as llama-bench reports them.
    """
    cmd = [
        str(binary),
        "-m",
        str(model),
        "-p",
        str(n_prompt),
        "-n",
        str(n_gen),
        "-t",
        str(threads),
        "-r",
        str(reps),
        "-fa",
        "on" if flash_attn else "off",
        "-o",
        "json",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-10:])
        raise SystemExit(f"llama-bench failed ({proc.returncode}) on {model}:\n{tail}")
    rows = json.loads(proc.stdout)
    out: dict[str, float] = {}
    for row in rows:
        key = "pp" if row.get("n_prompt", 0) > 0 and row.get("n_gen", 0) == 0 else "tg"
        out[key] = float(row["avg_ts"])
        out[f"{key}_stddev"] = float(row.get("stddev_ts", 0.0))
        samples = row.get("samples_ts")
        if samples:
            out[f"{key}_median"] = float(sorted(samples)[len(samples) // 2])
    return out


if __name__ == "__main__":  # build (or find) the binary and print its path
    path, meta = ensure_llama_bench(lambda msg: print(msg, file=sys.stderr, flush=True))
    print(path)
