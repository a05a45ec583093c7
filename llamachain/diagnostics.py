"""The logic behind ``llamachain doctor``: is this llama.cpp build safe on this CPU?

Everything that touches llama.cpp runs in a child process (:mod:`llamachain.diagnostics_child`),
so a build that crashes (SIGSEGV in the AMX kernels, SIGILL from an instruction the CPU lacks)
is reported, diagnosed and never takes the doctor down with it.  Returns data; prints nothing.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from llamachain.settings import Settings

logger = logging.getLogger(__name__)

DEFAULT_VARIANTS = ("F16", "Q8_0", "Q4_0", "Q4_1", "Q4_K_M")
UNQUANTIZED = frozenset({"F32", "F16", "BF16"})
REBUILD = (
    "rebuild llama-cpp-python with `python scripts/build_llama_cpp.py --force` "
    "(GGML_NATIVE=OFF, this CPU's features switched on one by one, AMX off)"
)

# llama.cpp's name for a compiled-in x86 feature -> the /proc/cpuinfo flag it needs.
# fmt: off
_X86_FLAGS = {
    "SSE3": "pni", "SSSE3": "ssse3", "AVX": "avx", "AVX_VNNI": "avx_vnni", "AVX2": "avx2",
    "F16C": "f16c", "FMA": "fma", "BMI2": "bmi2", "AVX512": "avx512f",
    "AVX512_VBMI": "avx512vbmi", "AVX512_VNNI": "avx512_vnni", "AVX512_BF16": "avx512_bf16",
    "AMX_INT8": "amx_int8", "AMX_BF16": "amx_bf16",
}
# fmt: on

Status = Literal["ok", "crashed", "failed"]


@dataclass
class BuildReport:
    """How llama.cpp was built, and whether that suits this CPU."""

    llama_cpp_version: str | None
    system_info: str
    features: dict[str, bool]
    backends: list[str]
    amx_compiled: bool
    cpu_flags: list[str]
    cpu_has_amx: bool
    unsupported: list[str]  # compiled-in instructions this CPU lacks
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


@dataclass
class VariantReport:
    """One quantization of the default model, loaded and run in a child process."""

    qtype: str
    status: Status
    path: str | None = None
    signal: str | None = None
    returncode: int | None = None
    phase: str | None = None  # the step the child was in when it stopped
    seconds: float = 0.0
    tokens_per_second: float | None = None
    text: str | None = None
    error: str | None = None
    diagnosis: str | None = None
    fix: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


@dataclass
class DoctorReport:
    build: BuildReport
    variants: list[VariantReport]

    @property
    def ok(self) -> bool:
        return self.build.ok and all(v.ok for v in self.variants)

    @property
    def crashed(self) -> bool:
        return any(v.status == "crashed" for v in self.variants)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "build": self.build.to_dict(),
            "variants": [v.to_dict() for v in self.variants],
        }


@dataclass
class _ChildRun:
    returncode: int | None  # None: timed out
    lines: list[tuple[str, str]]
    stderr: str
    seconds: float

    def last(self, kind: str) -> str | None:
        return next((p for k, p in reversed(self.lines) if k == kind), None)

    @property
    def signal(self) -> str | None:
        if self.returncode is None or self.returncode >= 0:
            return None
        try:
            return signal.Signals(-self.returncode).name
        except ValueError:
            return f"signal {-self.returncode}"


def _child_command(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-X", "faulthandler", "-m", "llamachain.diagnostics_child", *args]


def _child(args: Sequence[str], timeout: float) -> _ChildRun:
    start = time.perf_counter()
    try:
        p = subprocess.run(_child_command(args), capture_output=True, text=True, timeout=timeout)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = None, _text(e.stdout), _text(e.stderr)
    lines = []
    for line in out.splitlines():
        kind, _, payload = line.partition(" ")
        if kind in ("phase", "result", "error"):
            lines.append((kind, payload))
    return _ChildRun(rc, lines, err, time.perf_counter() - start)


def _text(data: str | bytes | None) -> str:
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data or ""


def _json(payload: str | None) -> dict[str, Any]:
    try:
        data = json.loads(payload or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def cpu_flags() -> set[str]:
    """The CPU's own feature flags from /proc/cpuinfo (empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def check_build(features: dict[str, bool], flags: set[str]) -> tuple[list[str], list[str]]:
    """``(unsupported, problems)``: compiled-in instructions the CPU lacks, and what is wrong."""
    on = {name for name, enabled in features.items() if enabled}
    problems: list[str] = []
    unsupported: list[str] = []
    if flags and platform.machine().lower() in ("x86_64", "amd64", "i686", "x86"):
        unsupported = sorted(f for f in on if f in _X86_FLAGS and _X86_FLAGS[f] not in flags)
    if unsupported:
        problems.append(
            f"the build enables {', '.join(unsupported)}, which this CPU lacks (SIGILL); " + REBUILD
        )
    amx = sorted(f for f in on if f.startswith("AMX"))
    if amx:
        problems.append(
            f"the build enables {', '.join(amx)}: ggml's AMX kernels segfault in "
            f"ggml_backend_amx_mul_mat for quantized models (ggml-org/llama.cpp#20824); " + REBUILD
        )
    return unsupported, problems


def build_report(timeout: float = 120.0) -> BuildReport:
    """Ask a child process how llama.cpp was built and check it against this CPU."""
    flags = cpu_flags()
    run = _child(["build"], timeout)
    data = _json(run.last("result"))
    # llama.cpp prefixes the first feature with its backend ("CPU : SSE3"); keep the name only.
    features = {k.rsplit(":", 1)[-1].strip(): bool(v) for k, v in data.get("features", {}).items()}
    unsupported, problems = check_build(features, flags)
    if not data:
        how = f"was killed by {run.signal}" if run.signal else _failure(run, timeout)
        problems.insert(0, f"importing llama_cpp {how}; " + REBUILD)
    return BuildReport(
        llama_cpp_version=data.get("llama_cpp_version"),
        system_info=data.get("system_info", ""),
        features=features,
        backends=list(data.get("backends", [])),
        amx_compiled=any(v and k.startswith("AMX") for k, v in features.items()),
        cpu_flags=sorted(flags),
        cpu_has_amx=any(f.startswith("amx") for f in flags),
        unsupported=unsupported,
        problems=problems,
    )


def _failure(run: _ChildRun, timeout: float) -> str:
    if run.returncode is None:
        return f"timed out after {timeout:g} s"
    message = run.last("error")
    if message:
        return message
    tail = [ln.strip() for ln in run.stderr.strip().splitlines() if ln.strip()]
    return f"exited with code {run.returncode}" + (f": {tail[-1]}" if tail else "")


def diagnose(qtype: str, sig: str, build: BuildReport | None) -> tuple[str, str]:
    """``(diagnosis, fix)`` for a child that ``qtype`` killed with signal ``sig``."""
    quantized = qtype.upper() not in UNQUANTIZED
    if sig == "SIGILL":
        lacking = f" ({', '.join(build.unsupported)})" if build and build.unsupported else ""
        return (
            f"SIGILL: the llama.cpp build uses an instruction this CPU lacks{lacking}, "
            "typically a wheel built with -march=native on another machine",
            REBUILD,
        )
    if sig == "SIGSEGV" and (quantized or (build is not None and build.amx_compiled)):
        return (
            f"SIGSEGV running {qtype}: most likely the AMX bug in ggml_backend_amx_mul_mat "
            "(ggml-org/llama.cpp#20824), which crashes every quantized type when llama.cpp "
            "is built with GGML_NATIVE=ON on a CPU that advertises AMX",
            REBUILD,
        )
    if sig == "SIGKILL":
        return (
            f"{sig}: the process was killed from outside, most often by the out-of-memory killer",
            "free memory or try a smaller quantization",
        )
    return (
        f"{sig} inside llama.cpp while running {qtype}; not a known problem of this build",
        "run the failing step with LLAMACHAIN_VERBOSE=1 to see llama.cpp's log, and "
        + REBUILD.replace("rebuild", "try rebuilding"),
    )


def run_variant(
    qtype: str, home: Path, *, timeout: float = 120.0, build: BuildReport | None = None
) -> VariantReport:
    """Make (if needed), load and run one variant of the default model in a child process."""
    name = qtype.upper()
    run = _child(["run", name, str(home)], timeout)
    report = VariantReport(
        qtype=name,
        status="ok",
        returncode=run.returncode,
        phase=run.last("phase"),
        seconds=round(run.seconds, 3),
    )
    data = _json(run.last("result"))
    if run.returncode == 0 and data:
        report.path = data.get("path")
        report.text = data.get("text")
        tps = data.get("tokens_per_second")
        report.tokens_per_second = round(tps, 1) if tps is not None else None
        report.phase = None
    elif run.signal is not None:
        report.status = "crashed"
        report.signal = run.signal
        report.error = f"killed by {run.signal} during {report.phase or 'start-up'}"
        report.diagnosis, report.fix = diagnose(name, run.signal, build)
    else:
        report.status = "failed"
        report.error = _failure(run, timeout)
    if not report.ok:
        logger.info("doctor: %s %s: %s", name, report.status, report.error)
        logger.debug("doctor: %s child stderr:\n%s", name, run.stderr)
    return report


def run_doctor(
    settings: Settings | None = None,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    *,
    timeout: float = 120.0,
    on_variant: Callable[[VariantReport], None] | None = None,
) -> DoctorReport:
    """Check the build, then run every variant; ``on_variant`` sees each report as it lands."""
    from llamachain.models.quantize import normalize_qtype

    names = [normalize_qtype(v).upper() for v in variants]  # fail fast on a bad name
    home = (settings or Settings()).home.expanduser()
    os.makedirs(home, exist_ok=True)
    build = build_report(timeout=timeout)
    reports: list[VariantReport] = []
    for name in names:
        report = run_variant(name, home, timeout=timeout, build=build)
        reports.append(report)
        if on_variant is not None:
            on_variant(report)
    return DoctorReport(build=build, variants=reports)
