"""The engine on the real bundled model: tokenizer, templates, determinism, limits, cache."""

import threading
import warnings

import pytest

from llamachain.engine import (
    ContextTruncatedWarning,
    LlamaEngine,
    ModelCache,
    SamplingParams,
    model_cache,
)
from llamachain.engine._native import physical_cores
from llamachain.errors import ContextOverflowError

GREEDY = SamplingParams(temperature=0, max_tokens=24, seed=0)


@pytest.fixture(scope="module")
def engine():
    e = LlamaEngine()
    yield e
    e.close()


def test_defaults_come_from_the_model_file(engine):
    assert engine.n_ctx == 8192  # the model's training context, not llama-cpp's 512
    assert engine.n_threads == physical_cores()
    assert engine.chat_format.name == "gguf"


def test_context_is_capped_by_settings():
    from llamachain.settings import Settings

    e = LlamaEngine(settings=Settings(context_cap=2048))
    assert e.load_params().n_ctx == 2048


def test_tokenizer_round_trip_and_counts(engine):
    text = "Hello, world! Ünïcödé and emoji 🦙 too."
    ids = engine.tokenize(text)
    assert engine.detokenize(ids) == text
    assert engine.count_tokens(text) == len(ids)
    # special tokens are parsed only in prompts
    assert len(engine.prompt_tokens("<|im_start|>")) == 1
    assert len(engine.tokenize("<|im_start|>")) > 1


def test_golden_completion_at_temperature_zero(engine):
    out = engine.complete("The capital of France is", GREEDY)
    assert "Paris" in out.text
    again = engine.complete("The capital of France is", GREEDY)
    assert again.text == out.text and again.token_ids == out.token_ids


def test_stream_equals_complete(engine):
    prompt = "List three fruits:"
    chunks = list(engine.stream(prompt, GREEDY))
    full = engine.complete(prompt, GREEDY)
    assert "".join(c.text for c in chunks) == full.text
    assert [t for c in chunks for t in c.token_ids] == full.token_ids
    assert chunks[-1].usage.completion_tokens == len(full.token_ids)


def test_chat_uses_the_models_template(engine):
    prompt = engine.format_chat([{"role": "user", "content": "Hi"}])
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    out = engine.chat([{"role": "user", "content": "Say hello."}], GREEDY)
    assert out.text.strip() and "<|im_" not in out.text
    assert out.finish_reason in ("stop", "length")


def test_stop_sequence_cuts_before_the_match(engine):
    full = engine.complete("Count: 1, 2, 3,", SamplingParams(temperature=0, max_tokens=20))
    assert " 5" in full.text
    cut = engine.complete(
        "Count: 1, 2, 3,", SamplingParams(temperature=0, max_tokens=20, stop=(" 5",))
    )
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.index(" 5")]


def test_seeded_sampling_is_reproducible(engine):
    p = SamplingParams(temperature=0.9, max_tokens=20, seed=1234)
    assert (
        engine.complete("Once upon a time", p).text == engine.complete("Once upon a time", p).text
    )


def test_overflow_is_an_error_with_the_numbers(engine):
    long_prompt = "word " * 9000
    with pytest.raises(ContextOverflowError) as e:
        engine.complete(long_prompt, SamplingParams(max_tokens=100))
    err = e.value
    assert err.n_ctx == 8192 and err.max_tokens == 100 and err.prompt_tokens > 8192
    assert "8192" in str(err) and "overflow='truncate'" in str(err)


def test_overflow_truncate_keeps_the_newest_tokens_and_warns():
    e = LlamaEngine(n_ctx=256, overflow="truncate")
    prompt = "old " * 400 + "The capital of France is"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = e.complete(prompt, SamplingParams(temperature=0, max_tokens=16))
    assert any(issubclass(w.category, ContextTruncatedWarning) for w in caught)
    assert out.usage.prompt_tokens == 256 - 16
    assert out.text


def test_chat_truncate_drops_the_oldest_turns():
    e = LlamaEngine(n_ctx=256, overflow="truncate")
    history = [{"role": "system", "content": "Be brief."}]
    for i in range(20):
        history += [
            {"role": "user", "content": f"Tell me fact {i} about cats."},
            {"role": "assistant", "content": "Cats sleep a lot. " * 3},
        ]
    history.append({"role": "user", "content": "Name one colour."})
    with pytest.warns(ContextTruncatedWarning, match="oldest message"):
        out = e.chat(history, SamplingParams(temperature=0, max_tokens=16))
    assert out.usage.prompt_tokens + 16 <= 256


def test_max_tokens_none_runs_to_the_end_of_the_context():
    e = LlamaEngine(n_ctx=64)
    out = e.complete(
        "Write a very long story:",
        SamplingParams(temperature=0, max_tokens=None, repeat_penalty=1.0),
    )
    assert out.usage.total_tokens <= 64


def test_cancel_stops_generation(engine):
    cancel = threading.Event()
    n = 0
    for chunk in engine.stream(
        "Write a long essay about rivers.",
        SamplingParams(temperature=0, max_tokens=400),
        cancel=cancel,
    ):
        n += 1
        if n == 3:
            cancel.set()
        last = chunk
    assert last.finish_reason == "cancelled"
    assert last.usage.completion_tokens < 10


def test_logprobs_are_consistent(engine):
    out = engine.complete("The sky is", SamplingParams(temperature=0, max_tokens=5, logprobs=3))
    assert len(out.logprobs) == len(out.token_ids)
    for lp, tid in zip(out.logprobs, out.token_ids):
        assert lp.token_id == tid and lp.logprob <= 0
        assert len(lp.top) == 3
        # greedy: the chosen token is the most likely one
        assert lp.top[0][1] == pytest.approx(lp.logprob)
        assert [v for _, v in lp.top] == sorted((v for _, v in lp.top), reverse=True)


def test_prefix_cache_reuses_the_shared_prefix(engine):
    system = [{"role": "system", "content": "You answer questions about geography. " * 10}]
    a = engine.chat(system + [{"role": "user", "content": "Where is Peru?"}], GREEDY)
    b = engine.chat(system + [{"role": "user", "content": "Where is Chad?"}], GREEDY)
    assert a.usage.cached_tokens >= 0
    assert b.usage.cached_tokens >= 64  # the system prompt was not evaluated again
    assert (
        engine.chat(system + [{"role": "user", "content": "Where is Peru?"}], GREEDY).text == a.text
    )


def test_json_schema_constrains_the_output(engine):
    import json

    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}, "year": {"type": "integer"}},
        "required": ["city", "year"],
    }
    out = engine.chat(
        [{"role": "user", "content": "Give a city and a year as JSON."}],
        SamplingParams(temperature=0, max_tokens=60, json_schema=schema),
    )
    data = json.loads(out.text)
    assert set(data) == {"city", "year"} and isinstance(data["year"], int)


def test_models_are_shared_and_freed():
    cache = ModelCache()
    a = LlamaEngine(n_ctx=512, cache=cache)
    b = LlamaEngine(n_ctx=512, cache=cache)
    c = LlamaEngine(n_ctx=1024, cache=cache)
    a.load(), b.load(), c.load()
    rows = sorted(cache.list(), key=lambda r: r["n_ctx"])
    assert [(r["n_ctx"], r["references"]) for r in rows] == [(512, 2), (1024, 1)]
    a.close()
    assert len(cache) == 2
    b.close()
    assert [r["n_ctx"] for r in cache.list()] == [1024]
    cache.clear()
    assert len(cache) == 0
    # an engine whose model was cleared reloads on its next use
    assert c.complete("Hi", SamplingParams(temperature=0, max_tokens=2)).usage.prompt_tokens > 0
    assert len(cache) == 1
    c.close()
    assert len(cache) == 0


def test_default_cache_is_the_visible_global(engine):
    engine.load()
    assert any(r["path"] == str(engine.info.path) for r in model_cache.list())
