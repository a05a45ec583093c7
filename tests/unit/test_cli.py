"""The CLI without loading a model: help, JSON output, and one-line errors.

LLAMACHAIN_HOME is isolated per test by the autouse fixture in tests/conftest.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from llamachain import diagnostics
from llamachain.cli.main import cli
from llamachain.errors import ConfigError, ModelFileError
from llamachain.models import quantize, resolve_model_path
from llamachain.models.quantize import QUANT_TYPES, normalize_qtype

COMMANDS = [[], ["models"], ["models", "info"], ["doctor"], ["quantize"], ["generate"]]


def run(*args: str, **env: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=env or None)


def assert_one_line_error(result: Result, code: int, *needles: str) -> str:
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


# -- help and import cost --------------------------------------------------------------------


def test_importing_the_cli_loads_no_heavy_module():
    code = (
        "import sys, llamachain.cli.main; "
        "print(*(m in sys.modules for m in ('llama_cpp', 'gguf', 'langchain_core', 'numpy')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"] * 4


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "llamachain")
def test_every_command_has_help_with_json(command):
    result = run(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "--json" in result.stdout


def test_quantize_help_lists_the_types():
    out = run("quantize", "--help").stdout
    assert all(name in out for name in ("q4_k_m", "q8_0", "f16"))


# -- models ----------------------------------------------------------------------------------


def test_models_json_lists_the_default_model():
    result = run("models", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["models"]
    default = [r for r in rows if r["default"]]
    assert [r["name"] for r in default] == ["smollm2-135m-instruct"]
    assert default[0]["installed"] is True
    assert {"name", "installed", "default", "description"} <= set(default[0])


def test_json_flag_on_the_group_works_too():
    result = run("--json", "models")
    assert json.loads(result.stdout)["models"]


def test_models_human_view_is_a_table():
    out = run("models").stdout
    assert out.splitlines()[0].split() == ["NAME", "INSTALLED", "DEFAULT", "DESCRIPTION"]
    assert "smollm2-135m-instruct" in out


def _truncated_copy(tmp_path: Path) -> Path:
    real = resolve_model_path(None)
    with real.open("rb") as fh:
        head = fh.read(1 << 20)
    path = tmp_path / "truncated.gguf"
    path.write_bytes(head)
    return path


def make_bad_file(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{kind}.gguf"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("hello " * 100)
    elif kind == "truncated":
        path = _truncated_copy(tmp_path)
    return path


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("missing", "no such file"),
        ("empty", "is only 0 bytes long"),
        ("text", "is not a GGUF file"),
        ("truncated", "is truncated"),
    ],
)
def test_models_info_on_a_bad_file_is_one_clean_line(tmp_path, kind, problem):
    path = make_bad_file(kind, tmp_path)
    result = run("models", "info", str(path))
    assert_one_line_error(result, 1, str(path), problem)
    assert result.stdout == ""


def test_models_info_error_with_json_prints_an_error_document(tmp_path):
    path = tmp_path / "missing.gguf"
    result = run("models", "info", str(path), "--json")
    assert_one_line_error(result, 1, str(path))
    assert json.loads(result.stdout) == {"error": result.stderr.strip().removeprefix("error: ")}


# -- usage errors and settings ---------------------------------------------------------------


def test_usage_error_is_one_line_with_exit_2():
    result = run("models", "info")
    assert_one_line_error(result, 2, "PATH_OR_NAME", "llamachain models info --help")


def test_usage_error_with_json():
    result = run("generate", "hi", "--max-tokens", "0", "--json")
    assert_one_line_error(result, 2, "--max-tokens")
    assert "--max-tokens" in json.loads(result.stdout)["error"]


def test_unknown_command_is_a_usage_error():
    assert_one_line_error(run("frobnicate"), 2, "frobnicate")


def test_a_bad_setting_is_one_line():
    result = run("models", LLAMACHAIN_N_THREADS="lots")
    assert_one_line_error(result, 1, "LLAMACHAIN_N_THREADS")


def test_generate_rejects_an_empty_prompt_before_loading():
    assert_one_line_error(run("generate", "  "), 1, "prompt is empty")


def test_generate_with_a_missing_model_is_one_line(tmp_path):
    path = tmp_path / "nope.gguf"
    assert_one_line_error(run("generate", "hi", "--model", str(path)), 1, str(path))


# -- quantize --------------------------------------------------------------------------------


def test_quantize_unknown_type_lists_the_valid_ones(tmp_path):
    result = run("quantize", str(tmp_path / "in.gguf"), str(tmp_path / "out.gguf"), "--type", "q9")
    line = assert_one_line_error(result, 1, "'q9'")
    assert all(name in line for name in QUANT_TYPES)


def test_quantize_type_names_cover_the_k_quants_and_accept_aliases():
    for k in ("q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k"):
        assert k in QUANT_TYPES
    assert normalize_qtype("Q4_K") == "q4_k_m" and normalize_qtype(" q5_k ") == "q5_k_m"
    import llama_cpp

    for constant in QUANT_TYPES.values():  # every name maps to a real llama.cpp file type
        assert isinstance(getattr(llama_cpp, constant), int)


def test_quantize_bad_input_and_output(tmp_path):
    text = tmp_path / "in.gguf"
    text.write_text("not a model")
    result = run("quantize", str(text), str(tmp_path / "out.gguf"), "--type", "q4_0", "--json")
    assert_one_line_error(result, 1, str(text), "not a GGUF file")
    assert "error" in json.loads(result.stdout)
    assert list(tmp_path.iterdir()) == [text]


def test_normalize_qtype():
    assert normalize_qtype("Q4_K_M") == "q4_k_m"
    with pytest.raises(ConfigError, match="choose one of: f32, f16"):
        normalize_qtype("int4")


def test_quantize_refuses_a_truncated_source(tmp_path):
    src = _truncated_copy(tmp_path)
    with pytest.raises(ModelFileError, match="truncated"):
        quantize(src, tmp_path / "out.gguf", "q4_0")
    assert list(tmp_path.iterdir()) == [src]


def test_quantize_into_a_missing_directory(tmp_path):
    dst = tmp_path / "nowhere" / "out.gguf"
    with pytest.raises(ModelFileError, match="no such directory"):
        quantize(resolve_model_path(None), dst, "q4_0", allow_requantize=True)


# -- doctor, with a fake child that crashes --------------------------------------------------

FAKE_BUILD = {
    "llama_cpp_version": "0.0.0",
    "system_info": "CPU : AVX2 = 1 | AMX_INT8 = 1 |",
    "features": {"CPU : AVX2": True, "AMX_INT8": True},
    "backends": ["CPU"],
}


@pytest.fixture
def crashing_child(monkeypatch):
    """Children that crash like the AMX bug: SIGSEGV once the model is loading."""

    def command(args):
        if args[0] == "build":
            script = f"print('result ' + {json.dumps(json.dumps(FAKE_BUILD))})"
        elif args[1] == "F16":
            script = 'print(\'result {"text": " Paris", "tokens_per_second": 50.0}\')'
        else:
            script = (
                "import os, signal; print('phase load', flush=True); "
                "os.kill(os.getpid(), signal.SIGSEGV)"
            )
        return [sys.executable, "-c", script]

    monkeypatch.setattr(diagnostics, "_child_command", command)


def test_doctor_survives_a_crashing_child_and_diagnoses_it(crashing_child):
    result = run("doctor", "--type", "f16", "--type", "q4_0", "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is False
    f16, q4 = report["variants"]
    assert f16["status"] == "ok" and f16["tokens_per_second"] == 50.0
    assert q4["status"] == "crashed" and q4["signal"] == "SIGSEGV" and q4["phase"] == "load"
    assert "ggml_backend_amx_mul_mat" in q4["diagnosis"]
    assert "scripts/build_llama_cpp.py --force" in q4["fix"]
    build = report["build"]
    assert build["amx_compiled"] is True and build["features"]["AVX2"] is True
    assert any("AMX_INT8" in p for p in build["problems"])


def test_doctor_human_view_shows_diagnosis_and_fix(crashing_child):
    result = run("doctor", "--type", "q4_1")
    assert result.exit_code == 1
    assert "crashed (SIGSEGV)" in result.stdout
    assert "fix:" in result.stdout and "--force" in result.stdout


def test_a_hanging_child_times_out(monkeypatch):
    monkeypatch.setattr(
        diagnostics,
        "_child_command",
        lambda args: [sys.executable, "-c", "import time; time.sleep(30)"],
    )
    report = diagnostics.run_variant("Q4_0", Path("."), timeout=1)
    assert report.status == "failed" and "timed out" in (report.error or "")


def test_a_child_error_is_reported(monkeypatch):
    script = "import sys; print('error tmp/x.gguf: is truncated'); sys.exit(1)"
    monkeypatch.setattr(diagnostics, "_child_command", lambda args: [sys.executable, "-c", script])
    report = diagnostics.run_variant("Q8_0", Path("."), timeout=30)
    assert report.status == "failed" and report.error == "tmp/x.gguf: is truncated"


def test_check_build_finds_instructions_the_cpu_lacks(monkeypatch):
    monkeypatch.setattr(diagnostics.platform, "machine", lambda: "x86_64")
    unsupported, problems = diagnostics.check_build(
        {"AVX2": True, "AVX512": True, "AVX512_BF16": False, "OPENMP": True}, {"avx2", "fma"}
    )
    assert unsupported == ["AVX512"]
    assert "SIGILL" in problems[0]
    assert diagnostics.check_build({"AVX2": True}, {"avx2"}) == ([], [])


def test_diagnose_sigill_and_unknown_signals():
    diagnosis, fix = diagnostics.diagnose("Q4_0", "SIGILL", None)
    assert "instruction this CPU lacks" in diagnosis and "--force" in fix
    diagnosis, _ = diagnostics.diagnose("F16", "SIGBUS", None)
    assert "SIGBUS" in diagnosis
