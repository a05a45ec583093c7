"""Prefix snapshots on the real bundled model: a shared system prompt survives interleaving."""

import pytest

from llamachain.engine import LlamaEngine, ModelCache, SamplingParams
from llamachain.engine._decode import PREFILL_BLOCK

GREEDY = SamplingParams(temperature=0, max_tokens=16, repeat_penalty=1.0, seed=0)

SYSTEM = (
    "You are the help desk of the Harbour Museum. The museum opens at ten and closes at five, "
    "every day except Monday. Tickets cost eight euros for adults and three for children; "
    "under-fives enter free. The lighthouse gallery is on the top floor and can be reached by "
    "the lift behind the shop. Guided tours start every hour on the hour from the main hall and "
    "last forty minutes. Photography is allowed everywhere except in the map room. The cafe on "
    "the ground floor serves soup, sandwiches and cakes until half past four. Lockers for bags "
    "and coats are next to the cloakroom and take a one-euro coin that is returned. Dogs are "
    "welcome in the garden but not inside, except assistance dogs. The museum shop sells "
    "books, postcards, model ships and a children's activity booklet. School groups must book "
    "at least two weeks ahead. The museum is closed on the first of January and on the "
    "twenty-fifth of December. Answer briefly."
)


def qa(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def other(topic: str) -> list[dict[str, str]]:
    """An unrelated chat of more than one block, as a question-rewriting step would be."""
    return [
        {"role": "system", "content": f"Rewrite the user's question about {topic} clearly."},
        {
            "role": "user",
            "content": f"so um what is the thing with {topic}, like how does it work and why "
            "do people care, and is it expensive, and where would I even start if I wanted to "
            f"learn about {topic} properly without spending a lot of time or money on it",
        },
    ]


def shared_blocks(engine: LlamaEngine, a, b) -> int:
    x = engine.prompt_tokens(engine.format_chat(a))
    y = engine.prompt_tokens(engine.format_chat(b))
    n = 0
    while n < min(len(x), len(y) - 1) and x[n] == y[n]:
        n += 1
    return n // PREFILL_BLOCK * PREFILL_BLOCK


@pytest.fixture
def cache():
    c = ModelCache()
    yield c
    c.clear()


def test_an_interleaved_prompt_does_not_evict_the_shared_system_prompt(cache):
    e = LlamaEngine(n_ctx=2048, cache=cache)
    e.chat(qa("When does the museum open?"), GREEDY)
    e.chat(other("sailing"), GREEDY)
    c = e.chat(qa("How much is a child's ticket?"), GREEDY)
    expected = shared_blocks(
        e, qa("When does the museum open?"), qa("How much is a child's ticket?")
    )
    assert expected >= 2 * PREFILL_BLOCK
    assert c.usage.cached_tokens == expected
    stats = e.snapshot_stats()
    assert stats["hits"] == 1 and stats["hit_tokens"] == expected
    assert stats["count"] >= 1 and stats["bytes"] > 0

    exact = LlamaEngine(n_ctx=2048, prefix_cache=False, cache=cache)  # same model, no reuse
    assert exact.chat(qa("How much is a child's ticket?"), GREEDY).text == c.text
    assert exact.snapshot_stats()["hits"] == 1  # prefix_cache=False neither saves nor restores


def test_a_prefix_two_prompts_share_is_saved_and_serves_a_third_later(cache):
    e = LlamaEngine(n_ctx=2048, cache=cache)
    e.chat(qa("Is there a cafe?"), GREEDY)
    e.chat(qa("Can I take photos?"), GREEDY)  # shares the system prompt: that prefix is kept
    assert e.snapshot_stats()["count"] == 1
    e.chat(other("knots"), GREEDY)
    d = e.chat(qa("Where is the lighthouse gallery?"), GREEDY)
    assert d.usage.cached_tokens == shared_blocks(
        e, qa("Is there a cafe?"), qa("Where is the lighthouse gallery?")
    )
    assert e.snapshot_stats()["hits"] == 1


def test_without_snapshots_the_interleaved_prompt_evicts_the_prefix(cache):
    e = LlamaEngine(n_ctx=2048, cache=cache, prefix_snapshots=0)
    e.chat(qa("When does the museum open?"), GREEDY)
    e.chat(other("sailing"), GREEDY)
    c = e.chat(qa("How much is a child's ticket?"), GREEDY)
    assert c.usage.cached_tokens == 0
    assert e.snapshot_stats()["saves"] == 0


def test_the_count_bound_evicts_the_least_recent(cache):
    e = LlamaEngine(n_ctx=2048, cache=cache, prefix_snapshots=2)
    for topic in ("sailing", "knots", "tides", "maps"):
        e.chat(other(topic), GREEDY)
    stats = e.snapshot_stats()
    assert stats["count"] == 2 and stats["saves"] == 3 and stats["evictions"] == 1


def test_the_byte_bound_is_never_exceeded(cache):
    e = LlamaEngine(n_ctx=2048, cache=cache)
    e.chat(other("sailing"), GREEDY)
    e.chat(other("knots"), GREEDY)
    one = e.snapshot_stats()["bytes"]  # the first prompt's aligned blocks
    assert one > 0
    e.clear_snapshots()
    small = LlamaEngine(n_ctx=2048, cache=cache, prefix_snapshot_bytes=one + one // 2)
    for topic in ("sailing", "knots", "tides", "maps"):
        small.chat(other(topic), GREEDY)
        assert small.snapshot_stats()["bytes"] <= one + one // 2
    assert small.snapshot_stats()["count"] == 1
    tiny = LlamaEngine(n_ctx=2048, cache=cache, prefix_snapshot_bytes=one // 2)
    tiny.chat(other("ropes"), GREEDY)
    assert tiny.snapshot_stats()["count"] == 0  # larger than the bound: not kept at all


def test_clearing_drops_the_snapshots(cache):
    e = LlamaEngine(n_ctx=2048, cache=cache)
    e.chat(qa("When does the museum open?"), GREEDY)
    e.chat(other("sailing"), GREEDY)
    (row,) = cache.list()
    assert row["prefix_snapshots"]["count"] == 1
    e.clear_snapshots()
    assert e.snapshot_stats()["count"] == 0 and e.snapshot_stats()["bytes"] == 0
    assert e.chat(qa("How much is a child's ticket?"), GREEDY).usage.cached_tokens == 0
    e.chat(other("tides"), GREEDY)
    assert cache.list()[0]["prefix_snapshots"]["count"] >= 1
    cache.clear_snapshots()
    assert cache.list()[0]["prefix_snapshots"]["count"] == 0


def test_lookup_and_snapshots_together_keep_the_answer(cache):
    # flash attention: what makes drafts checked in one batch give the plain greedy answer
    e = LlamaEngine(n_ctx=2048, flash_attn=True, cache=cache)
    fast = SamplingParams(temperature=0, max_tokens=16, repeat_penalty=1.0, prompt_lookup=6)
    e.chat(qa("When does the museum open?"), fast)
    e.chat(other("sailing"), fast)
    c = e.chat(qa("Which room is photography not allowed in?"), fast)
    assert c.usage.cached_tokens >= 2 * PREFILL_BLOCK
    exact = LlamaEngine(n_ctx=2048, prefix_cache=False, flash_attn=True, cache=cache)
    assert exact.chat(qa("Which room is photography not allowed in?"), GREEDY).text == c.text
