"""Build (or reuse) a llama-cpp-python wheel that cannot crash on this CPU.

Why this exists: a default source build of llama-cpp-python uses ``-march=native``
(``GGML_NATIVE=ON``).  On CPUs that advertise AMX, that compiles ggml's AMX kernels,
which segfault in ``ggml_backend_amx_mul_mat`` for every quantized type
(ggml-org/llama.cpp#20824).  We build with ``GGML_NATIVE=OFF`` instead and switch on,
one by one, exactly the instruction sets this CPU reports -- never AMX, and never an
instruction the CPU lacks (that would be SIGILL on another machine).

pip's wheel cache is keyed by name and version only, not by ``CMAKE_ARGS``, so a wheel
built elsewhere with other flags would be silently reused.  We therefore build with
``--no-cache-dir`` into our own cache directory whose key is a hash of the llama-cpp-python
version, the CMake flags, the Python tag and the platform, and install from there.

Standard library only: it runs before anything else is installed.

Usage:  python scripts/build_llama_cpp.py [--print-flags] [--force]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

LLAMA_CPP_VERSION = "0.3.36"

# /proc/cpuinfo flag(s) that must all be present -> ggml CMake option.
_FEATURES: list[tuple[str, tuple[str, ...]]] = [
    ("GGML_SSE42", ("sse4_2",)),
    ("GGML_AVX", ("avx",)),
    ("GGML_AVX2", ("avx2",)),
    ("GGML_BMI2", ("bmi2",)),
    ("GGML_FMA", ("fma",)),
    ("GGML_F16C", ("f16c",)),
    ("GGML_AVX_VNNI", ("avx_vnni",)),
    # ggml's AVX512 switch compiles with -mavx512f/cd/vl/dq/bw together.
    ("GGML_AVX512", ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw")),
    ("GGML_AVX512_VBMI", ("avx512vbmi",)),
    ("GGML_AVX512_VNNI", ("avx512_vnni",)),
    ("GGML_AVX512_BF16", ("avx512_bf16",)),
]
# Always off: the AMX kernels are the ones that crash.
_ALWAYS_OFF = ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cmake_args(flags: set[str] | None = None) -> list[str]:
    """The CMake arguments for this machine (empty list: let llama.cpp decide)."""
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64"):
        return []  # AMX is x86-only; other architectures build as upstream intends.
    flags = cpu_flags() if flags is None else flags
    if not flags:
        return []  # not Linux: cannot read the CPU's features, keep upstream defaults
    args = ["-DGGML_NATIVE=OFF"]
    for option, needed in _FEATURES:
        on = all(f in flags for f in needed)
        if option.startswith("GGML_AVX512_") and not all(
            f in flags for f in dict(_FEATURES)["GGML_AVX512"]
        ):
            on = False  # the AVX512 extensions only make sense on top of AVX512F
        args.append(f"-D{option}={'ON' if on else 'OFF'}")
    args += [f"-D{option}=OFF" for option in _ALWAYS_OFF]
    return args


def cache_root() -> Path:
    env = os.environ.get("LLAMACHAIN_WHEEL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llamachain" / "wheels"


def build_key(args: list[str]) -> str:
    ident = {
        "package": f"llama-cpp-python=={LLAMA_CPP_VERSION}",
        "cmake": args,
        "python": sys.implementation.cache_tag,
        "platform": sysconfig.get_platform(),
    }
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    return f"{LLAMA_CPP_VERSION}-{digest}"


def find_wheel(directory: Path) -> Path | None:
    wheels = sorted(directory.glob("llama_cpp_python-*.whl"))
    return wheels[0] if wheels else None


def build_wheel(args: list[str], target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    env = dict(os.environ)
    env["CMAKE_ARGS"] = " ".join(args)
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-cache-dir",
        "--no-binary",
        "llama-cpp-python",
        "-w",
        str(tmp),
        f"llama-cpp-python=={LLAMA_CPP_VERSION}",
    ]
    print(
        f"[llamachain] building llama-cpp-python {LLAMA_CPP_VERSION} from source "
        f"(about 6 minutes on 2 cores)\n[llamachain] CMAKE_ARGS={env['CMAKE_ARGS']}",
        flush=True,
    )
    try:
        subprocess.run(cmd, env=env, check=True)
    except subprocess.CalledProcessError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SystemExit(
            "[llamachain] llama-cpp-python build failed; see the log above. "
            "It needs gcc/g++, cmake and the Python headers."
        ) from e
    (tmp / "build.json").write_text(json.dumps({"cmake_args": args}, indent=2))
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)  # atomic: a killed build never leaves a half-written cache entry
    wheel = find_wheel(target)
    assert wheel is not None
    return wheel


def installed_key(prefix: Path) -> str | None:
    marker = prefix / "llamachain-llama-build.json"
    try:
        return json.loads(marker.read_text())["key"]
    except (OSError, ValueError, KeyError):
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--print-flags", action="store_true", help="print the CMake arguments for this CPU and exit"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    ns = parser.parse_args()
    args = cmake_args()
    if ns.print_flags:
        print(" ".join(args))
        return 0
    key = build_key(args)
    prefix = Path(sys.prefix)
    if installed_key(prefix) == key and not ns.force:
        print(f"[llamachain] llama-cpp-python build {key} already installed", flush=True)
        return 0
    target = cache_root() / key
    wheel = None if ns.force else find_wheel(target)
    if wheel is None:
        wheel = build_wheel(args, target)
    else:
        print(f"[llamachain] reusing cached wheel {wheel}", flush=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--force-reinstall", "--no-deps", str(wheel)],
        check=True,
    )
    # llama-cpp-python's runtime dependencies (normal wheels, no build flags involved)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", str(wheel)],
        check=True,
    )
    (prefix / "llamachain-llama-build.json").write_text(
        json.dumps({"key": key, "cmake_args": args, "wheel": str(wheel)}, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
