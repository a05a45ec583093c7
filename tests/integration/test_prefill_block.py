"""The prefill block: larger blocks reuse shared prefixes in larger steps, still exactly, and
engines with different blocks on one model never reuse each other's states."""

import pytest

from llamachain import ChatLlama
from llamachain.engine import LlamaEngine, ModelCache, SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=16, repeat_penalty=1.0, seed=0)
SYSTEM = (
    "You are the help desk of the Harbour Museum. The museum opens at ten and closes at five, "
    "every day except Monday. Tickets cost eight euros for adults and three for children. The "
    "lighthouse gallery is on the top floor, reached by the lift behind the shop. Guided tours "
    "start every hour from the main hall and last forty minutes. Photography is allowed "
    "everywhere except in the map room. The cafe serves soup and cakes until half past four. "
) * 3 + "Answer briefly."


def qa(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def shared(engine: LlamaEngine, a, b) -> int:
    x = engine.prompt_tokens(engine.format_chat(a))
    y = engine.prompt_tokens(engine.format_chat(b))
    n = 0
    while n < min(len(x), len(y) - 1) and x[n] == y[n]:
        n += 1
    return n


@pytest.fixture
def cache():
    c = ModelCache()
    yield c
    c.clear()


def test_a_larger_block_reuses_whole_blocks_and_stays_exact(cache):
    e = LlamaEngine(n_ctx=2048, prefill_block=256, cache=cache)
    first, second = qa("When does the museum open?"), qa("How much is a child's ticket?")
    common = shared(e, first, second)
    assert common >= 256, "the shared system prompt must span a 256-token block"
    e.chat(first, GREEDY)
    again = e.chat(second, GREEDY)
    assert again.usage.cached_tokens == common // 256 * 256
    fresh = LlamaEngine(n_ctx=2048, prefill_block=256, prefix_cache=False, cache=ModelCache())
    try:
        assert fresh.chat(second, GREEDY).text == again.text
    finally:
        fresh.close()
    e.close()


def test_engines_with_other_blocks_do_not_reuse_each_others_states(cache):
    small = LlamaEngine(n_ctx=2048, cache=cache)  # the default, 64
    large = LlamaEngine(n_ctx=2048, prefill_block=256, cache=cache)
    assert small._loaded() is large._loaded()  # one model in memory
    question = qa("Where is the lighthouse gallery?")
    small.chat(question, GREEDY)
    assert small.chat(question, GREEDY).usage.cached_tokens > 0
    # the live state was evaluated in 64-token blocks: a 256-block engine starts afresh...
    got = large.chat(question, GREEDY)
    assert got.usage.cached_tokens == 0
    # ...and answers exactly as it does with nothing cached
    fresh = LlamaEngine(n_ctx=2048, prefill_block=256, prefix_cache=False, cache=ModelCache())
    try:
        assert fresh.chat(question, GREEDY).text == got.text
    finally:
        fresh.close()
    # and back: the 64-block engine does not reuse the 256-block state either
    assert small.chat(question, GREEDY).usage.cached_tokens == 0
    small.close()
    large.close()


def test_the_langchain_classes_pass_the_block_through():
    chat = ChatLlama(prefill_block=128, temperature=0, max_tokens=4)
    assert chat.engine.prefill_block == 128
    assert chat.invoke("Hi").usage_metadata["output_tokens"] > 0
    chat.close()
