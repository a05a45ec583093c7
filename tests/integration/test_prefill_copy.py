"""Prompts of the bundled Q4_1 model run on its Q8_0 copy; tokens are generated on the file.

Checked on the real model: the copy is made once and loaded next to the file, the prefix
cache stays exact through it, its first-token distribution matches the file's own, and every
way the copy can fail (no place to write it, llama.cpp refusing its state) falls back to
evaluating prompts on the file itself, with a warning and the same answers.
"""

import logging
import math
from pathlib import Path

import llama_cpp
import pytest

from llamachain.engine import LlamaEngine, ModelCache, SamplingParams
from llamachain.engine import _prefill_copy as pc
from llamachain.models.gguf_info import read_model_info

GREEDY = SamplingParams(temperature=0, max_tokens=24, repeat_penalty=1.0, seed=0)
FIRST = SamplingParams(temperature=0, max_tokens=1, repeat_penalty=1.0, seed=0, logprobs=5)
SYSTEM = (
    "You answer questions about the Harbour Museum from these notes. The museum opens at ten "
    "and closes at five, every day except Monday. Tickets cost eight euros for adults and "
    "three for children. The lighthouse gallery is on the top floor, reached by the lift "
    "behind the shop. Guided tours start every hour from the main hall and last forty "
    "minutes. Photography is allowed everywhere except in the map room. "
) * 2
QUESTIONS = [
    "When does the museum open?",
    "How much is a child's ticket?",
    "Where is the lighthouse gallery?",
    "How long is a guided tour?",
]


def qa(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


@pytest.fixture
def cache():
    c = ModelCache()
    yield c
    c.clear()


def test_the_default_model_evaluates_prompts_on_a_q8_0_copy_made_once(cache, monkeypatch, tmp_path):
    monkeypatch.setenv("LLAMACHAIN_CACHE_DIR", str(tmp_path))  # empty: the copy is made here
    engine = LlamaEngine(n_ctx=2048, cache=cache)
    assert engine.load_params().prefill_type == "Q8_0"
    m = engine._loaded()
    assert m.prefill is not None and m.llama is not m.prefill
    copies = sorted(pc.copies_dir().glob("*.Q8_0.gguf"))
    assert [p.name for p in copies] == [pc.copy_path(engine.info, "Q8_0").name]
    assert read_model_info(copies[0]).file_type == "Q8_0"
    made = copies[0].stat().st_mtime_ns
    # a second load (another context size: another model in memory) reuses the file
    other = LlamaEngine(n_ctx=1024, cache=cache)
    assert other._loaded().prefill is not None
    assert copies[0].stat().st_mtime_ns == made
    got = engine.chat(qa(QUESTIONS[0]), GREEDY)
    # a fact of the notes about opening (which one depends on the attention kernel's rounding)
    assert any(w in got.text.lower() for w in ("ten", "10", "monday")), got.text
    assert got.usage.prompt_tokens > 150 and got.usage.completion_tokens > 0
    # the list of loaded models says which ones have a prompt copy
    assert {row["prefill_type"] for row in cache.list()} == {"Q8_0"}


def test_off_and_embedding_engines_make_no_copy(cache):
    assert LlamaEngine(prefill_copy="off", cache=cache).load_params().prefill_type == ""
    assert LlamaEngine(embedding=True, cache=cache).load_params().prefill_type == ""
    engine = LlamaEngine(n_ctx=1024, prefill_copy="off", cache=cache)
    assert engine._loaded().prefill is None
    assert engine.chat(qa(QUESTIONS[1]), GREEDY).usage.completion_tokens > 0


def test_the_prefix_cache_stays_exact_through_the_copy(cache):
    engine = LlamaEngine(n_ctx=2048, cache=cache)
    answers = {}
    for q in QUESTIONS:
        answers[q] = engine.chat(qa(q), GREEDY)
    assert all(a.usage.cached_tokens >= 128 for a in list(answers.values())[1:])
    fresh = LlamaEngine(n_ctx=2048, prefix_cache=False, cache=ModelCache())
    try:
        for q in reversed(QUESTIONS):  # another order, nothing reused
            got = fresh.chat(qa(q), GREEDY)
            assert got.usage.cached_tokens == 0
            assert got.text == answers[q].text, q
    finally:
        fresh.close()


def test_the_first_token_distribution_matches_the_file_itself(cache):
    """The copy's KV cells are the Q4_1 model's to within Q8_0 rounding of its weights.

    Measured: the likeliest tokens' probabilities move by at most ~0.035 (an F16 copy moves
    them as much: the kernels' own rounding of activations differs), ranks only swap among
    near-ties.
    """
    with_copy = LlamaEngine(n_ctx=2048, cache=cache)
    without = LlamaEngine(n_ctx=2048, prefill_copy="off", cache=cache)
    for q in QUESTIONS:
        a = with_copy.chat(qa(q), FIRST).logprobs[0]
        b = without.chat(qa(q), FIRST).logprobs[0]
        assert a.token == b.token, q
        assert [t for t, _ in a.top[:2]] == [t for t, _ in b.top[:2]], q
        copy_p = {t: math.exp(lp) for t, lp in a.top}
        for t, lp in b.top[:2]:
            assert copy_p[t] == pytest.approx(math.exp(lp), abs=0.05), (q, t)


def test_an_unwritable_cache_dir_falls_back_to_the_file(cache, monkeypatch, tmp_path, caplog):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory would be")
    monkeypatch.setenv("LLAMACHAIN_CACHE_DIR", str(blocker))
    engine = LlamaEngine(n_ctx=1024, cache=cache)
    with caplog.at_level(logging.WARNING, logger="llamachain"):
        m = engine._loaded()
    assert m.prefill is None
    assert "evaluating prompts on" in caplog.text and "copy could not be made" in caplog.text
    assert engine.chat(qa(QUESTIONS[2]), GREEDY).usage.completion_tokens > 0
    assert not list(Path(tmp_path).glob("**/*.gguf"))


def test_a_refused_state_drops_the_copy_and_answers_the_same(cache, monkeypatch, caplog):
    reference = LlamaEngine(n_ctx=2048, prefill_copy="off", cache=ModelCache())
    try:
        expected = reference.chat(qa(QUESTIONS[3]), GREEDY).text
    finally:
        reference.close()
    engine = LlamaEngine(n_ctx=2048, cache=cache)
    m = engine._loaded()
    assert m.prefill is not None
    monkeypatch.setattr(llama_cpp, "llama_state_seq_set_data", lambda *a: 0)
    with caplog.at_level(logging.WARNING, logger="llamachain"):
        got = engine.chat(qa(QUESTIONS[3]), GREEDY)
    assert m.prefill is None
    assert "refused to load the copy's KV state" in caplog.text
    assert got.text == expected  # the whole prompt was evaluated on the file itself
    assert got.usage.cached_tokens == 0


def test_a_corrupt_copy_is_removed_and_made_again(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("LLAMACHAIN_CACHE_DIR", str(tmp_path))
    engine = LlamaEngine(n_ctx=1024, cache=ModelCache())
    target = pc.copy_path(engine.info, "Q8_0")
    target.parent.mkdir(parents=True)
    target.write_bytes(b"GGUF" + b"\0" * 64)  # a truncated file where the copy should be
    try:
        with caplog.at_level(logging.WARNING, logger="llamachain"):
            m = engine._loaded()
        assert m.prefill is None
        assert "will be made again" in caplog.text
        assert not target.exists()
        assert engine.chat(qa(QUESTIONS[0]), GREEDY).usage.completion_tokens > 0
    finally:
        engine.close()
    again = LlamaEngine(n_ctx=1024, cache=ModelCache())
    try:
        assert again._loaded().prefill is not None
        assert read_model_info(target).file_type == "Q8_0"
    finally:
        again.close()
