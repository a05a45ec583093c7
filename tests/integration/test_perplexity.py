"""Perplexity on the real bundled model, checked against a reference computed here.

The text is real English: the ItsDangerous docs pages that ship in examples/ (a prefix, to
keep the run short).  The reference evaluates each window with llama-cpp-python's
``Llama(logits_all=True)`` and takes a numpy float64 log-softmax over exactly the tokens the
module says it scores; the windows are rebuilt here from the documented rule, not from
``plan_windows``.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llamachain.errors import ConfigError
from llamachain.models import quantized_variant, resolve_model_path
from llamachain.models.perplexity import perplexity

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "examples" / "data" / "pallets-mini" / "itsdangerous").glob("*.rst"))
N_CTX = 128
STRIDE = 64
THREADS = 2
EXE = shutil.which("llamachain", path=str(Path(sys.executable).parent)) or "llamachain"


@pytest.fixture(scope="module")
def text() -> str:
    full = "\n\n".join(p.read_text(encoding="utf-8") for p in PAGES)
    return full[:2400]  # ~550 tokens: 8 windows of 128


@pytest.fixture(scope="module")
def model() -> Path:
    return resolve_model_path(None)


@pytest.fixture(scope="module")
def result(model: Path, text: str):
    return perplexity(model, text, n_ctx=N_CTX, stride=STRIDE, n_threads=THREADS)


def reference_nll(
    model: Path, text: str, n_ctx: int, stride: int, n_batch: int | None = None
) -> tuple[np.ndarray, int]:
    """Per-token NLL from full-window logits (logits_all=True), windows built by the rule."""
    from llama_cpp import Llama

    llama = Llama(
        model_path=str(model),
        n_ctx=n_ctx,
        n_batch=n_batch or n_ctx,
        n_ubatch=n_batch or n_ctx,
        n_threads=THREADS,
        n_threads_batch=THREADS,
        logits_all=True,
        flash_attn=True,
        verbose=False,
    )
    try:
        add_bos = bool(llama._model.add_bos_token())
        ids = list(llama.tokenize(text.encode(), add_bos=False, special=False))
        bos = [llama.token_bos()] if add_bos else []
        width = n_ctx - len(bos)
        nll: list[float] = []
        prev_end = None
        end = width
        while True:
            start = end - width
            window = bos + ids[start:end]
            llama.reset()
            llama.eval(window)
            logits = np.array(llama.scores[: len(window)], dtype=np.float64)
            first = (0 if add_bos else 1) if prev_end is None else prev_end
            for t in range(first, end):
                pos = len(bos) + t - start  # where x[t] sits in the window
                row = logits[pos - 1]
                mx = row.max()
                nll.append(mx + math.log(np.exp(row - mx).sum()) - row[ids[t]])
            if end == len(ids):
                break
            prev_end, end = end, min(end + stride, len(ids))
        return np.array(nll), len(ids)
    finally:
        llama.close()


def test_matches_a_full_logits_reference(model: Path, text: str, result):
    expected, n_tokens = reference_nll(model, text, N_CTX, STRIDE)
    assert result.text_tokens == n_tokens
    assert result.add_bos is False  # SmolLM2 does not add BOS: x[0] has no context
    assert result.tokens_scored == n_tokens - 1 == len(expected)
    np.testing.assert_allclose(result.token_nll, expected, rtol=1e-5, atol=1e-5)
    assert result.ppl == pytest.approx(math.exp(expected.mean()), rel=1e-6)


def test_bookkeeping_every_token_scored_once(text: str, result):
    width = N_CTX
    assert result.windows == 1 + math.ceil((result.text_tokens - width) / STRIDE)
    assert result.tokens_evaluated == result.windows * N_CTX
    assert result.token_nll.shape == (result.tokens_scored,)
    assert result.n_ctx == N_CTX and result.stride == STRIDE and result.file_type == "Q4_1"
    assert result.ppl == pytest.approx(math.exp(result.nll), rel=1e-12)
    assert 0 < result.nll_stderr < result.nll
    assert result.tokens_per_second > 0


def test_real_text_is_far_more_predictable_than_its_words_shuffled(model, text, result):
    words = text.split()
    random.Random(0).shuffle(words)
    shuffled = perplexity(model, " ".join(words), n_ctx=N_CTX, stride=N_CTX - 1, n_threads=THREADS)
    assert 1.5 < result.ppl < 100  # a 135M model on English technical prose
    assert shuffled.ppl > 4 * result.ppl


def test_smaller_batches_and_a_progress_callback(model: Path, text: str, result):
    calls: list[tuple[int, int]] = []
    split = perplexity(
        model,
        text,
        n_ctx=N_CTX,
        stride=STRIDE,
        n_threads=THREADS,
        batch=48,  # three decode calls per window, logits needed in the last two
        progress=lambda done, total: calls.append((done, total)),
    )
    assert split.tokens_scored == result.tokens_scored and split.batch == 48
    # the reference evaluated in the same 48-token batches agrees token by token ...
    expected, _ = reference_nll(model, text, N_CTX, STRIDE, n_batch=48)
    np.testing.assert_allclose(split.token_nll, expected, rtol=1e-5, atol=1e-5)
    # ... while llama.cpp's Q4_1 kernels round differently for other batch sizes (up to
    # ~0.5 nats on single tokens here), which moves the perplexity itself only a little
    assert split.ppl == pytest.approx(result.ppl, rel=0.05)
    assert len(calls) == result.windows
    assert calls[-1] == (result.tokens_scored, result.tokens_scored)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_the_f32_dequantization_scores_like_the_q4_1_file(variants_home, text, result):
    f32 = perplexity(
        quantized_variant("f32", variants_home),
        text,
        n_ctx=N_CTX,
        stride=STRIDE,
        n_threads=THREADS,
    )
    assert f32.file_type == "F32"
    assert math.isfinite(f32.ppl)
    # the same weights; only the arithmetic differs (Q4_1 kernels round activations to 8 bits)
    assert f32.ppl == pytest.approx(result.ppl, rel=0.03)


def test_a_path_is_read_as_a_file(model: Path, tmp_path: Path, text: str, result):
    f = tmp_path / "doc.txt"
    f.write_text(text, encoding="utf-8")
    from_file = perplexity(model, f, n_ctx=N_CTX, stride=STRIDE, n_threads=THREADS)
    assert from_file.ppl == pytest.approx(result.ppl, rel=1e-9)


def test_errors_name_the_problem(model: Path):
    with pytest.raises(ConfigError, match=r"has \d+ tokens, fewer than the 128"):
        perplexity(model, "Just a short sentence.", n_ctx=N_CTX)
    with pytest.raises(ConfigError, match="larger than the 8192 tokens"):
        perplexity(model, "text " * 100, n_ctx=16384)
    with pytest.raises(ConfigError, match="stride must be between 1 and 127"):
        perplexity(model, "text " * 300, n_ctx=N_CTX, stride=128)


# -- the CLI, as a real process ---------------------------------------------------------------


def llamachain(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, *args], capture_output=True, text=True, env=dict(os.environ), timeout=600
    )


@pytest.fixture(scope="module")
def text_file(tmp_path_factory: pytest.TempPathFactory, text: str) -> Path:
    f = tmp_path_factory.mktemp("ppl") / "itsdangerous.txt"
    f.write_text(text, encoding="utf-8")
    return f


def test_cli_json_is_one_document_with_the_result(text_file: Path, result):
    proc = llamachain(
        "perplexity",
        "smollm2-135m-instruct",
        str(text_file),
        "--ctx",
        str(N_CTX),
        "--stride",
        str(STRIDE),
        "--threads",
        str(THREADS),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["ppl"] == pytest.approx(result.ppl, rel=1e-9)
    assert data["tokens_scored"] == result.tokens_scored
    assert data["text_path"] == str(text_file)
    assert "token_nll" not in data


def test_cli_human_output_with_progress(text_file: Path, result):
    proc = llamachain(
        "perplexity",
        str(resolve_model_path(None)),
        str(text_file),
        "--ctx",
        str(N_CTX),
        "--stride",
        str(N_CTX - 1),
        "--threads",
        str(THREADS),
        "--progress",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("perplexity ")
    assert f"of {result.text_tokens:,} tokens scored" in proc.stdout
    assert "scoring" in proc.stderr  # the bar went to stderr


def test_cli_errors_are_one_line(text_file: Path, tmp_path: Path):
    short = tmp_path / "short.txt"
    short.write_text("Too short to fill a window.")
    proc = llamachain("perplexity", "smollm2-135m-instruct", str(short), "--ctx", "64")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "fewer than the 64" in lines[0]
    proc = llamachain("perplexity", "smollm2-135m-instruct", str(text_file), "--ctx", "9000")
    assert proc.returncode == 1 and "larger than the 8192" in proc.stderr
