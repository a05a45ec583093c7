"""Prompt-lookup decoding on the real bundled model: the same greedy text, fewer forward passes."""

import threading
from dataclasses import replace

import pytest

from llamachain import ChatLlama
from llamachain.engine import LlamaEngine, ModelCache, SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=64, repeat_penalty=1.0, seed=0)
LOOKUP = replace(GREEDY, prompt_lookup=6)

PASSAGES = {
    "library": (
        "The municipal library opens at nine in the morning on weekdays and at ten on "
        "Saturdays. It is closed on Sundays and public holidays. Members may borrow up to "
        "twelve books at a time for a period of three weeks. Late returns are charged twenty "
        "cents per book per day, up to a maximum of five euros.",
        "how many books members may borrow",
    ),
    "rhine": (
        "The Rhine rises in the Swiss Alps and flows north through Lake Constance. Below Basel "
        "it forms the border between France and Germany. The river then crosses the plain of "
        "the Lower Rhine and enters the Netherlands near Emmerich. It reaches the North Sea "
        "through a delta of several channels near Rotterdam.",
        "where the Rhine reaches the North Sea",
    ),
    "bees": (
        "Honey bees communicate the location of food with a movement called the waggle dance. "
        "A forager returning to the hive walks in a straight line while shaking her body. The "
        "angle of that line shows the direction of the food relative to the sun. The length of "
        "the waggle run tells the other bees how far away the flowers are.",
        "what the length of the waggle run tells the other bees",
    ),
}


def quote_task(name: str) -> list[dict[str, str]]:
    passage, what = PASSAGES[name]
    return [
        {"role": "system", "content": "Answer only from the passage, quoting it exactly."},
        {
            "role": "user",
            "content": f"Passage:\n{passage}\n\nQuote the sentence from the passage that says "
            f"{what}.",
        },
    ]


@pytest.fixture(scope="module")
def engine():
    e = LlamaEngine(n_ctx=2048, flash_attn=True, cache=ModelCache())
    yield e
    e.close()


@pytest.fixture(scope="module")
def plain(engine):
    """The normal path's answer to each quote task, computed once."""
    return {name: engine.chat(quote_task(name), GREEDY) for name in PASSAGES}


def test_lookup_models_load_with_batch_invariant_attention(engine):
    assert engine.load_params().flash_attn  # what keeps checked drafts exact
    # the LangChain classes ask for it when built for lookup; otherwise the faster default
    assert ChatLlama(prompt_lookup=6).engine.load_params().flash_attn
    assert not ChatLlama().engine.load_params().flash_attn
    assert not ChatLlama(prompt_lookup=6, flash_attn=False).engine.load_params().flash_attn
    assert not LlamaEngine().load_params().flash_attn
    assert not LlamaEngine(embedding=True).load_params().flash_attn


@pytest.mark.parametrize("name", sorted(PASSAGES))
def test_lookup_writes_the_plain_greedy_answer_with_accepted_drafts(engine, plain, name):
    base = plain[name]
    fast = engine.chat(quote_task(name), LOOKUP)
    assert fast.text == base.text and fast.token_ids == base.token_ids
    assert fast.finish_reason == base.finish_reason
    assert fast.usage.completion_tokens == base.usage.completion_tokens
    assert "draft_tokens" not in base.timings
    assert 0 < fast.timings["accepted_tokens"] <= fast.timings["draft_tokens"]
    # several tokens per forward pass: fewer passes than tokens
    assert fast.timings["lookup_steps"] < fast.usage.completion_tokens - 1


def test_lookup_changes_nothing_on_a_non_extractive_prompt(engine):
    msgs = [{"role": "user", "content": "Write a short poem about autumn leaves."}]
    assert engine.chat(msgs, LOOKUP).text == engine.chat(msgs, GREEDY).text


def test_raw_prompts_work_too(engine):
    passage, _ = PASSAGES["rhine"]
    prompt = f"{passage}\nRepeat the first sentence: The Rhine"
    fast = engine.complete(prompt, LOOKUP)
    assert fast.text == engine.complete(prompt, GREEDY).text
    assert "draft_tokens" in fast.timings


def test_stop_sequences_cut_at_the_same_place(engine, plain):
    full = plain["library"].text
    words = full.split()
    stop = " " + words[len(words) // 2]
    cut_plain = engine.chat(quote_task("library"), replace(GREEDY, stop=(stop,)))
    cut_fast = engine.chat(quote_task("library"), replace(LOOKUP, stop=(stop,)))
    assert cut_fast.finish_reason == cut_plain.finish_reason == "stop"
    assert cut_fast.text == cut_plain.text == full[: full.index(stop)]
    assert cut_fast.usage.completion_tokens == cut_plain.usage.completion_tokens


@pytest.mark.parametrize("limit", [1, 2, 7, 13])
def test_max_tokens_is_exact(engine, plain, limit):
    out = engine.chat(quote_task("bees"), replace(LOOKUP, max_tokens=limit))
    assert out.finish_reason == "length"
    assert out.usage.completion_tokens == limit
    assert out.token_ids == plain["bees"].token_ids[:limit]


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.7, "seed": 7},
        {"repeat_penalty": 1.1},
        {"logprobs": 2},
        {"grammar": 'root ::= "The " [a-z ]+ "."'},
    ],
    ids=["sampling", "repeat_penalty", "logprobs", "grammar"],
)
def test_other_cases_fall_back_to_the_normal_path(engine, change):
    msgs = quote_task("rhine")
    with_lookup = engine.chat(msgs, replace(LOOKUP, max_tokens=24, **change))
    without = engine.chat(msgs, replace(GREEDY, max_tokens=24, **change))
    assert "draft_tokens" not in with_lookup.timings
    assert with_lookup.text == without.text


def test_stream_chunks_concatenate_to_the_answer(engine, plain):
    chunks = list(engine.chat_stream(quote_task("rhine"), LOOKUP))
    base = plain["rhine"]
    assert "".join(c.text for c in chunks) == base.text
    assert [t for c in chunks for t in c.token_ids] == base.token_ids
    assert any(len(c.token_ids) > 1 for c in chunks)  # a pass accepted part of a draft
    assert [c.finish_reason for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    last = chunks[-1]
    assert last.finish_reason == base.finish_reason
    assert last.usage.completion_tokens == base.usage.completion_tokens
    assert last.usage.prompt_tokens == base.usage.prompt_tokens
    assert last.timings["accepted_tokens"] > 0


def test_cancel_stops_a_lookup_generation(engine):
    cancel = threading.Event()
    chunks = []
    for chunk in engine.chat_stream(
        quote_task("library"), replace(LOOKUP, max_tokens=200), cancel=cancel
    ):
        chunks.append(chunk)
        cancel.set()
    assert chunks[-1].finish_reason == "cancelled"
    assert chunks[-1].usage.completion_tokens <= 1 + LOOKUP.prompt_lookup


def test_the_prefix_cache_stays_exact_after_a_lookup_generation(engine):
    system = {"role": "system", "content": "You answer questions about rivers. " * 12}
    first = [system, *quote_task("rhine")[1:]]
    second = [system, {"role": "user", "content": "Which sea does the Rhine flow into?"}]
    engine.chat(first, LOOKUP)
    reused = engine.chat(second, LOOKUP)
    assert reused.usage.cached_tokens >= 64
    fresh = LlamaEngine(n_ctx=2048, prefix_cache=False, flash_attn=True, cache=ModelCache())
    try:
        assert reused.text == fresh.chat(second, LOOKUP).text == fresh.chat(second, GREEDY).text
    finally:
        fresh.close()


def test_chat_llama_passes_prompt_lookup_through():
    kwargs = {"temperature": 0, "repeat_penalty": 1.0, "max_tokens": 48, "n_ctx": 2048}
    on = ChatLlama(prompt_lookup=6, **kwargs)
    off = ChatLlama(flash_attn=True, **kwargs)  # the same kernel, lookup only per call
    question = quote_task("bees")[1]["content"]
    answer = on.invoke(question).content
    assert answer == off.invoke(question).content
    assert off.invoke(question, prompt_lookup=6).content == answer
    assert "".join(str(c.content) for c in on.stream(question)) == answer
