"""ChatLlama and LlamaLLM on the real bundled model: our guarantees beyond the standard suite."""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from llamachain import ChatLlama, ContextOverflowError, LlamaLLM


@pytest.fixture(scope="module")
def chat():
    return ChatLlama(temperature=0, seed=0, max_tokens=48)


def test_lcel_chain_with_the_default_model(chat):
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer in one short sentence."), ("user", "{question}")]
    )
    chain = prompt | chat | StrOutputParser()
    answer = chain.invoke({"question": "What is the capital of France?"})
    assert isinstance(answer, str) and answer.strip()


def test_deterministic_and_stream_equals_invoke(chat):
    q = "Name three animals that live in the sea."
    first = chat.invoke(q).content
    assert chat.invoke(q).content == first
    assert "".join(c.content for c in chat.stream(q)) == first


def test_usage_metadata_counts_real_tokens(chat):
    messages = [SystemMessage("Be brief."), HumanMessage("Say hi.")]
    msg = chat.invoke(messages)
    usage = msg.usage_metadata
    assert usage["input_tokens"] == chat.get_num_tokens_from_messages(messages)
    assert (
        usage["output_tokens"]
        == len(chat.get_token_ids(msg.content))
        + (1 if msg.response_metadata["finish_reason"] == "length" else 0)
        or usage["output_tokens"] > 0
    )
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_streaming_usage_arrives_once_at_the_end(chat):
    chunks = list(chat.stream("Say hi."))
    with_usage = [c for c in chunks if c.usage_metadata]
    assert len(with_usage) == 1 and with_usage[0] is chunks[-1]


def test_stop_sequences_construction_and_call_together():
    q = "Write two sentences about the moon."
    full = ChatLlama(temperature=0, seed=0, max_tokens=60).invoke(q).content
    words = full.split()
    assert len(words) > 8
    # words that occur once in the text (not even inside another word), so that stopping
    # at one cuts exactly there
    once = [w for w in words if full.count(w) == 1]
    assert len(once) >= 2, full
    early, late = once[len(once) // 3], once[-1]
    assert full.index(early) < full.index(late)
    expected = full[: full.index(early)]
    for at_init, per_call in (([late], [early]), ([early], [late])):
        model = ChatLlama(temperature=0, seed=0, max_tokens=60, stop=at_init)
        assert model.invoke(q, stop=per_call).content == expected
        assert "".join(c.content for c in model.stream(q, stop=per_call)) == expected


def test_greedy_answer_does_not_depend_on_earlier_questions():
    chat = ChatLlama(temperature=0, seed=0, max_tokens=32)
    system = ("system", "You answer questions about geography. " * 12)
    first = chat.invoke([system, ("user", "Where is Peru?")]).content
    chat.invoke("Tell me about the history of Rome.")
    chat.invoke([system, ("user", "Where is Chad?")])
    again = chat.invoke([system, ("user", "Where is Peru?")])
    assert again.content == first
    assert again.usage_metadata["input_token_details"]["cache_read"] >= 64  # prefix reused


def test_callbacks_receive_every_token(chat):
    tokens: list[str] = []

    class Collect(BaseCallbackHandler):
        def on_llm_new_token(self, token: str, **kwargs):
            tokens.append(token)

    text = "".join(c.content for c in chat.stream("Say hello.", config={"callbacks": [Collect()]}))
    assert len(tokens) > 1 and "".join(tokens) == text


def test_logprobs_when_requested():
    chat = ChatLlama(temperature=0, seed=0, max_tokens=8, logprobs=True, top_logprobs=2)
    msg = chat.invoke("Say hello.")
    content = msg.response_metadata["logprobs"]["content"]
    assert len(content) == msg.usage_metadata["output_tokens"]
    assert all(item["logprob"] <= 0 and len(item["top_logprobs"]) == 2 for item in content)
    assert "".join(item["token"] for item in content) == msg.content


def test_overflow_error(chat):
    with pytest.raises(ContextOverflowError):
        chat.invoke("hello " * 9000)


class Person(BaseModel):
    name: str = Field(description="the person's name", max_length=40)
    age: int = Field(description="age in years")


class PersonDict(TypedDict):
    name: Annotated[str, ..., "the person's name"]
    age: Annotated[int, ..., "age in years"]


@pytest.mark.parametrize("schema", [Person, PersonDict, Person.model_json_schema()])
def test_structured_output_validates(chat, schema):
    structured = chat.with_structured_output(schema)
    out = structured.invoke("Alice is 31 years old. Extract the person.")
    if schema is Person:
        assert isinstance(out, Person)
        out = out.model_dump()
    assert set(out) == {"name", "age"} and isinstance(out["age"], int)
    streamed = list(structured.stream("Bob is 45. Extract the person."))
    assert len(streamed) == 1


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@tool
def get_weather(city: str) -> str:
    """Get the weather in a city."""
    return "sunny"


@pytest.mark.parametrize("choice", ["any", "required", "multiply"])
def test_forced_tool_choice_always_returns_a_valid_call(chat, choice):
    msg = chat.bind_tools([multiply, get_weather], tool_choice=choice).invoke("What is 6 times 7?")
    assert len(msg.tool_calls) == 1
    call = msg.tool_calls[0]
    if choice == "multiply":
        assert call["name"] == "multiply"
    if call["name"] == "multiply":
        assert set(call["args"]) == {"a", "b"}
        assert all(isinstance(v, int) for v in call["args"].values())


def test_auto_tool_choice_returns_text_or_a_valid_call(chat):
    msg = chat.bind_tools([multiply]).invoke("Hello, how are you?")
    assert msg.content or msg.tool_calls
    for call in msg.tool_calls:
        assert call["name"] == "multiply"


def test_eight_threads_share_one_model_without_mixing_outputs():
    shared = ChatLlama(temperature=0, seed=0, max_tokens=24)
    prompt = ChatPromptTemplate.from_messages([("user", "Write one sentence about {topic}.")])
    chain = prompt | shared | StrOutputParser()
    topics = ["cats", "rivers", "bread", "stars", "trains", "music", "snow", "bees"]
    expected = {t: chain.invoke({"topic": t}) for t in topics}
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda t: (t, chain.invoke({"topic": t})), topics * 2))
    for topic, text in results:
        assert text == expected[topic]


async def test_async_does_not_block_the_event_loop():
    chat = ChatLlama(temperature=0, seed=0, max_tokens=64)
    ticks = 0
    stop = False

    async def ticker():
        nonlocal ticks
        while not stop:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    start = time.perf_counter()
    msg = await chat.ainvoke("Write a short poem about the sea.")
    elapsed = time.perf_counter() - start
    stop = True
    await task
    assert msg.content
    # the loop kept running throughout the generation
    assert ticks >= elapsed / 0.01 * 0.3


async def test_cancelling_astream_stops_generation():
    chat = ChatLlama(temperature=0, seed=0, max_tokens=2000)
    loaded = chat.engine._loaded()
    seen = 0

    async def consume():
        nonlocal seen
        async for _ in chat.astream("Write a very long story about a dragon."):
            seen += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(consume())
    while seen < 3:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # the worker stops at the next token and frees the model for the next caller
    deadline = time.monotonic() + 5
    while not loaded.lock.acquire(blocking=False):
        assert time.monotonic() < deadline, "generation kept running after cancellation"
        await asyncio.sleep(0.01)
    try:
        generated = loaded.llama.n_tokens - len(
            chat.engine.prompt_tokens(
                chat.engine.format_chat(
                    [{"role": "user", "content": "Write a very long story about a dragon."}]
                )
            )
        )
        assert generated < 100  # a handful of tokens, not 2000
    finally:
        loaded.lock.release()


async def test_async_stream_matches_sync(chat):
    q = "Name a colour."
    parts = [c.content async for c in chat.astream(q)]
    assert "".join(parts) == chat.invoke(q).content


def test_llm_raw_completion_and_chat_template():
    raw = LlamaLLM(temperature=0, seed=0, max_tokens=16)
    assert "Paris" in raw.invoke("The capital of France is")
    templated = LlamaLLM(temperature=0, seed=0, max_tokens=24, use_chat_template=True)
    out = templated.invoke("What is 2 + 2? Answer with a number.")
    assert "4" in out
    assert "".join(templated.stream("What is 2 + 2? Answer with a number.")) == out
    assert raw.get_num_tokens("hello world") == 2


async def test_llm_async():
    llm = LlamaLLM(temperature=0, seed=0, max_tokens=12)
    out = await llm.ainvoke("The capital of France is")
    assert out == llm.invoke("The capital of France is")
    parts = [p async for p in llm.astream("The capital of France is")]
    assert "".join(parts) == out
