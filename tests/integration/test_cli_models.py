"""The CLI on the real bundled model: info, generate, doctor and quantize.

Commands run as real processes through the console script, so anything llama.cpp prints
outside Python would show up on stdout and break the one-JSON-document promise.
LLAMACHAIN_HOME is a fresh tmp dir per test (tests/conftest.py), except where a test uses
the session-wide ``variants_home`` so each quantized variant is made once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llamachain.models import read_model_info, resolve_model_path

pytestmark = pytest.mark.slow

EXE = shutil.which("llamachain", path=str(Path(sys.executable).parent)) or "llamachain"


def llamachain(
    *args: str, home: Path | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if home is not None:
        env["LLAMACHAIN_HOME"] = str(home)
    return subprocess.run(
        [EXE, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def json_out(proc: subprocess.CompletedProcess[str], code: int = 0) -> dict:
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    return json.loads(proc.stdout)  # exactly one document, nothing else on stdout


def test_models_info_on_the_default_model():
    proc = llamachain("models", "info", "smollm2-135m-instruct")
    assert proc.returncode == 0, proc.stderr
    fields = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition(":") for line in proc.stdout.splitlines())
    )
    assert fields["architecture"] == "llama"
    assert fields["file type"] == "Q4_1"
    assert fields["context length"] == "8192"
    assert fields["chat template"] == "yes"
    assert fields["license"] == "apache-2.0"
    assert fields["path"] == str(resolve_model_path(None).resolve())
    data = json_out(llamachain("models", "info", str(resolve_model_path(None)), "--json"))
    assert data["architecture"] == "llama" and data["file_type"] == "Q4_1"
    assert data["context_length"] == 8192 and data["has_chat_template"] is True
    assert data["license"] == "apache-2.0" and data["file_size"] > 50_000_000


@pytest.mark.parametrize("mode", ["--chat", "--raw"])
def test_generate_json_at_temperature_zero(mode):
    args = ["generate", "The capital of France is", mode, "--temperature", "0"]
    first = json_out(llamachain(*args, "--max-tokens", "8", "--seed", "1", "--json"))
    assert set(first) >= {"text", "finish_reason", "usage"}
    assert first["text"].strip()
    assert first["finish_reason"] in ("stop", "length")
    usage = first["usage"]
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    again = json_out(llamachain(*args, "--max-tokens", "8", "--json"))
    assert again["text"] == first["text"]  # greedy is deterministic
    streamed = llamachain(*args, "--max-tokens", "8")
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout.rstrip("\n") == first["text"]


def test_doctor_reports_every_variant_ok_and_no_amx(variants_home):
    report = json_out(llamachain("doctor", "--json", home=variants_home))
    assert report["ok"] is True, report
    build = report["build"]
    assert build["amx_compiled"] is False
    assert build["unsupported"] == [] and build["problems"] == []
    assert build["llama_cpp_version"] == "0.3.36"
    variants = {v["qtype"]: v for v in report["variants"]}
    assert list(variants) == ["F16", "Q8_0", "Q4_0", "Q4_1", "Q4_K_M"]
    for name, v in variants.items():
        assert v["status"] == "ok", (name, v)
        assert v["signal"] is None and v["text"]
        assert v["tokens_per_second"] and v["tokens_per_second"] > 0
    for name in ("F16", "Q8_0", "Q4_0", "Q4_K_M"):
        assert Path(variants[name]["path"]).parent == variants_home / "models" / "variants"
        assert read_model_info(variants[name]["path"]).file_type == name


def test_doctor_human_view(variants_home):
    proc = llamachain("doctor", "--type", "q4_1", home=variants_home)
    assert proc.returncode == 0, proc.stderr
    assert "AMX compiled in:   no" in proc.stdout
    assert "Q4_1" in proc.stdout and "all good" in proc.stdout


def test_quantize_to_q8_0_makes_a_loadable_file(tmp_path):
    src = resolve_model_path(None)
    out = tmp_path / "smol.q8_0.gguf"
    refused = llamachain("quantize", str(src), str(out), "--type", "q8_0")
    assert refused.returncode == 1
    lines = refused.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "already quantized (Q4_1)" in lines[0] and "--allow-requantize" in lines[0]
    assert "Traceback" not in refused.stderr and list(tmp_path.iterdir()) == []

    args = ["quantize", str(src), str(out), "--type", "Q8_0", "--allow-requantize", "--json"]
    result = json_out(llamachain(*args))
    assert result["qtype"] == "Q8_0" and result["dst"] == str(out)
    assert result["src_type"] == "Q4_1" and result["fallback_tensors"] == 0
    assert 8.0 < result["bits_per_weight"] < 9.0  # 8.5 bits per Q8_0 weight plus metadata
    assert result["dst_size"] == out.stat().st_size > result["src_size"]
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left behind
    assert read_model_info(out).file_type == "Q8_0"

    gen = json_out(
        llamachain(
            "generate", "The capital of France is", "--model", str(out), "--raw",
            "--temperature", "0", "--max-tokens", "4", "--json",
        )
    )  # fmt: skip
    assert gen["text"].strip() and gen["usage"]["completion_tokens"] > 0


def test_quantize_progress_and_k_quant_fallbacks(tmp_path):
    """Progress arrives once per tensor, in order; a 576-wide model cannot be all Q4_K."""
    from llamachain.models import quantize

    seen: list[tuple[int, int, str]] = []
    out = tmp_path / "smol.q4_k_m.gguf"
    result = quantize(
        resolve_model_path(None),
        out,
        "q4_k",
        allow_requantize=True,
        progress=lambda *a: seen.append(a),
    )
    assert result.qtype == "Q4_K_M"  # the alias
    total = seen[0][1]
    assert total == result.tensors == 272
    assert [s[0] for s in seen] == list(range(1, total + 1))
    assert {s[2] for s in seen} >= {"token_embd.weight", "blk.29.ffn_down.weight"}
    # SmolLM2's rows are 576 wide, not a multiple of Q4_K's 256-value blocks: llama.cpp writes
    # those tensors in a fallback type, and says how many.
    assert 0 < result.fallback_tensors < total
    info = read_model_info(out)
    assert info.file_type == "Q4_K_M" and "Q4_K" in info.tensor_types

    proc = llamachain(
        "quantize", str(resolve_model_path(None)), str(tmp_path / "b.gguf"), "--type", "q4_k_m",
        "--allow-requantize", "--progress",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "quantizing" in proc.stderr and f"{total}/{total}" in proc.stderr
    assert "fallback type" in proc.stdout and "bits/weight" in proc.stdout
