"""Perplexity without llama.cpp: window planning, the float64 log-softmax, reading the text,
and the CLI's errors that come before any model is loaded."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st

from llamachain.cli.main import cli
from llamachain.errors import ConfigError, DocumentLoadError
from llamachain.models.perplexity import (
    Window,
    default_stride,
    log_softmax_nll,
    min_text_tokens,
    plan_windows,
    read_text,
    window_width,
)


def scored_targets(windows: list[Window]) -> list[int]:
    return [t for w in windows for t in range(w.score_from, w.end)]


# -- window planning ---------------------------------------------------------------------------


@given(
    n_ctx=st.integers(min_value=2, max_value=64),
    extra=st.integers(min_value=0, max_value=300),
    add_bos=st.booleans(),
    data=st.data(),
)
def test_every_token_with_context_is_scored_exactly_once(n_ctx, extra, add_bos, data):
    width = window_width(n_ctx, add_bos)
    stride = data.draw(st.integers(min_value=1, max_value=n_ctx - 1))
    n = width + extra
    windows = plan_windows(n, n_ctx, stride, add_bos)
    first = 0 if add_bos else 1
    assert scored_targets(windows) == list(range(first, n))  # once each, in order
    for w in windows:
        assert w.end - w.start == width  # every window is full, BOS not counted
        assert w.start <= w.score_from <= w.end
        assert w.start >= 0 and w.end <= n
    assert windows[-1].end == n
    # after the first window every scored token has at least n_ctx - stride tokens before it
    bos = 1 if add_bos else 0
    for w in windows[1:]:
        assert bos + w.score_from - w.start >= n_ctx - stride >= 1
    assert len(windows) == 1 + math.ceil((n - width) / stride)


def test_the_windows_for_a_small_case_are_the_documented_ones():
    # 10 tokens, n_ctx 4, stride 2, no BOS: score 1..3, then 4-5, 6-7, 8-9
    assert plan_windows(10, 4, 2, add_bos=False) == [
        Window(0, 4, 1),
        Window(2, 6, 4),
        Window(4, 8, 6),
        Window(6, 10, 8),
    ]
    # the last window is pulled back to end at the text's end
    assert plan_windows(9, 4, 2, add_bos=False)[-1] == Window(5, 9, 8)
    # with BOS each window holds n_ctx - 1 text tokens and x[0] is scored from BOS
    assert plan_windows(6, 4, 3, add_bos=True) == [Window(0, 3, 0), Window(3, 6, 3)]


def test_the_largest_stride_overlaps_windows_by_one_context_token():
    windows = plan_windows(10, 4, 3, add_bos=False)
    assert [(w.start, w.end, w.score_from) for w in windows] == [(0, 4, 1), (3, 7, 4), (6, 10, 7)]
    assert sum(w.scored for w in windows) == 9
    # with BOS, BOS is the one context token: the windows are disjoint
    windows = plan_windows(9, 4, 3, add_bos=True)
    assert [(w.start, w.end, w.score_from) for w in windows] == [(0, 3, 0), (3, 6, 3), (6, 9, 6)]


def test_default_stride_is_half_the_context():
    assert default_stride(512, add_bos=False) == 256
    assert default_stride(512, add_bos=True) == 256
    assert default_stride(2, add_bos=True) == 1
    assert min_text_tokens(512, add_bos=True) == 511


def test_too_short_a_text_says_how_many_tokens_it_has_and_needs():
    with pytest.raises(ConfigError) as e:
        plan_windows(100, 512, 256, add_bos=False)
    assert "has 100 tokens" in str(e.value) and "512" in str(e.value)
    assert "--ctx" in str(e.value)


@pytest.mark.parametrize("stride", [0, -3, 512, True])
def test_a_stride_out_of_range_is_refused_with_the_range(stride):
    with pytest.raises(ConfigError, match=r"stride must be between 1 and 511"):
        plan_windows(2000, 512, stride, add_bos=False)


def test_a_context_of_one_token_is_refused():
    with pytest.raises(ConfigError, match="at least 2"):
        plan_windows(2000, 1, 1, add_bos=False)


# -- the log-softmax -------------------------------------------------------------------------


def test_log_softmax_nll_matches_the_definition_in_float64():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(7, 50)).astype(np.float32)
    targets = rng.integers(0, 50, size=7)
    x = logits.astype(np.float64)
    expected = [-math.log(math.exp(x[i, t]) / np.exp(x[i]).sum()) for i, t in enumerate(targets)]
    np.testing.assert_allclose(log_softmax_nll(logits, targets), expected, rtol=1e-12)


def test_log_softmax_nll_is_stable_for_huge_logits():
    logits = np.array([[1e4, 1e4 - 1.0, -1e4]], dtype=np.float32)
    nll = log_softmax_nll(logits, np.array([1]))
    assert np.isfinite(nll).all()
    assert nll[0] == pytest.approx(1.0 + math.log1p(math.exp(-1.0)), rel=1e-9)


# -- reading the text --------------------------------------------------------------------------


def test_read_text_returns_utf8_text_without_a_bom(tmp_path: Path):
    p = tmp_path / "t.txt"
    p.write_bytes("\ufeffcafé au lait\n".encode())
    assert read_text(p) == "café au lait\n"


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "is empty"),
        (b"  \n\t\n", "is empty"),
        (b"GGUF\x03\x00\x00\x00\x00", "looks binary"),
        (b"caf\xe9 latin-1", "is not UTF-8"),
    ],
)
def test_read_text_refuses_what_is_not_text(tmp_path: Path, content: bytes, needle: str):
    p = tmp_path / "bad.txt"
    p.write_bytes(content)
    with pytest.raises(DocumentLoadError, match=needle):
        read_text(p)


def test_read_text_refuses_a_missing_file_and_a_directory(tmp_path: Path):
    with pytest.raises(DocumentLoadError, match="no such file"):
        read_text(tmp_path / "missing.txt")
    with pytest.raises(DocumentLoadError, match="is a directory"):
        read_text(tmp_path)


# -- the CLI before a model is loaded ----------------------------------------------------------


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def one_line_error(result: Result, *needles: str) -> str:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def test_perplexity_help_names_the_options():
    result = run("perplexity", "--help")
    assert result.exit_code == 0, result.output
    for option in ("--ctx", "--stride", "--json", "--progress / --no-progress"):
        assert option in result.stdout


def test_perplexity_of_a_missing_text_file_is_one_line(tmp_path: Path):
    one_line_error(
        run("perplexity", "smollm2-135m-instruct", str(tmp_path / "none.txt")), "no such"
    )


def test_perplexity_of_a_binary_file_is_one_line_also_with_json(tmp_path: Path):
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 4)
    result = run("perplexity", "smollm2-135m-instruct", str(blob), "--json")
    one_line_error(result, "looks binary")
    assert '"error"' in result.stdout


def test_perplexity_with_a_zero_context_is_a_usage_error(tmp_path: Path):
    text = tmp_path / "t.txt"
    text.write_text("some text")
    one_line_error(run("perplexity", "x.gguf", str(text), "--ctx", "0"), "--ctx")


def test_perplexity_of_a_missing_model_is_one_line(tmp_path: Path):
    text = tmp_path / "t.txt"
    text.write_text("some text " * 10)
    one_line_error(run("perplexity", str(tmp_path / "nope.gguf"), str(text)), "no such file")
