"""ChatLlama / LlamaLLM logic over the FakeEngine: conversion, tools, structured output."""

import asyncio
import json

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.exceptions import OutputParserException
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel

from llamachain import ChatLlama, LlamaLLM
from llamachain.errors import ConfigError, ContextOverflowError
from llamachain.testing import FakeEngine


@tool
def magic_function(input: int) -> int:
    """Applies a magic function to an input."""
    return input + 2


@tool
def get_weather(location: str) -> str:
    """Get weather at a location."""
    return "sunny"


def chat_with(*replies: str, **kw) -> tuple[ChatLlama, FakeEngine]:
    engine = FakeEngine(replies)
    return ChatLlama(engine=engine, **kw), engine


def test_invoke_returns_text_usage_and_metadata():
    chat, engine = chat_with("Paris is the capital.")
    msg = chat.invoke([SystemMessage("Be brief."), HumanMessage("Capital of France?")])
    assert msg.content == "Paris is the capital."
    assert msg.usage_metadata["output_tokens"] == 4
    assert msg.usage_metadata["input_tokens"] == engine.count_tokens(engine.prompts[0])
    assert msg.response_metadata["model_name"] == "fake-model"
    assert msg.response_metadata["finish_reason"] == "stop"
    assert engine.prompts[0].startswith("<|im_start|>system\nBe brief.<|im_end|>")


def test_stop_at_construction_and_per_call_both_apply():
    chat, engine = chat_with("one two three four", "one two three four")
    assert chat.invoke("x", stop=["three"]).content == "one two "
    chat2 = ChatLlama(engine=engine, stop=["two"])
    assert chat2.invoke("x", stop=["four"]).content == "one "
    assert set(engine.params[-1].stop) >= {"two", "four"}


def test_stream_equals_invoke_and_callbacks_see_every_token():
    tokens: list[str] = []

    class Collect(BaseCallbackHandler):
        def on_llm_new_token(self, token: str, **kwargs):
            tokens.append(token)

    chat, _ = chat_with("alpha beta gamma", "alpha beta gamma")
    text = "".join(c.content for c in chat.stream("x", config={"callbacks": [Collect()]}))
    assert text == chat.invoke("x").content == "alpha beta gamma"
    assert "".join(tokens) == text


def test_per_call_sampling_overrides_reach_the_engine():
    chat, engine = chat_with("a")
    chat.invoke("x", temperature=0.0, max_tokens=7, seed=3, top_k=5)
    p = engine.params[0]
    assert (p.temperature, p.max_tokens, p.seed, p.top_k) == (0.0, 7, 3, 5)


def test_unknown_call_argument_is_a_clear_error():
    chat, _ = chat_with("a")
    with pytest.raises(ConfigError, match="unknown argument"):
        chat.invoke("x", temprature=0)


def test_overflow_error_reaches_the_caller():
    engine = FakeEngine(n_ctx=10)
    chat = ChatLlama(engine=engine, max_tokens=5)
    with pytest.raises(ContextOverflowError, match="exceeds the context window of 10"):
        chat.invoke("a b c d e f g h i j")


def test_forced_tool_call_is_parsed():
    chat, engine = chat_with('{"name": "magic_function", "arguments": {"input": 3}}')
    msg = chat.bind_tools([magic_function], tool_choice="any").invoke("magic_function(3)?")
    assert msg.tool_calls[0]["name"] == "magic_function"
    assert msg.tool_calls[0]["args"] == {"input": 3}
    assert msg.response_metadata["finish_reason"] == "tool_calls"
    schema = engine.params[0].json_schema
    assert schema["properties"]["name"] == {"const": "magic_function"}
    assert "You can use these tools" in engine.prompts[0]


def test_named_tool_choice_limits_the_schema_to_that_tool():
    chat, engine = chat_with('{"name": "get_weather", "arguments": {"location": "Oslo"}}')
    chat.bind_tools([magic_function, get_weather], tool_choice="get_weather").invoke("hi")
    assert engine.params[0].json_schema["properties"]["name"] == {"const": "get_weather"}


def test_any_with_two_tools_allows_either():
    chat, engine = chat_with('{"name": "get_weather", "arguments": {"location": "Oslo"}}')
    msg = chat.bind_tools([magic_function, get_weather], tool_choice="any").invoke("hi")
    assert msg.tool_calls[0]["args"] == {"location": "Oslo"}
    assert len(engine.params[0].json_schema["anyOf"]) == 2


def test_unknown_tool_choice_lists_the_tools():
    chat, _ = chat_with()
    with pytest.raises(ConfigError, match="magic_function"):
        chat.bind_tools([magic_function], tool_choice="nope")


@pytest.mark.parametrize(
    "reply, calls",
    [
        ('{"name": "magic_function", "arguments": {"input": 3}}', 1),
        ('```json\n{"name": "magic_function", "arguments": {"input": 3}}\n```', 1),
        ("The answer is 5.", 0),
        ('{"name": "other", "arguments": {}}', 0),
    ],
)
def test_auto_tool_choice_parses_only_real_calls(reply, calls):
    chat, _ = chat_with(reply, reply)
    bound = chat.bind_tools([magic_function])
    msg = bound.invoke("x")
    assert len(msg.tool_calls) == calls
    if not calls:
        assert msg.content == reply
    full = None
    for c in bound.stream("x"):
        full = c if full is None else full + c
    assert len(full.tool_calls) == calls


def test_tool_results_are_sent_back_to_the_model():
    chat, engine = chat_with("It is 5.")
    history = [
        HumanMessage("magic_function(3)?"),
        AIMessage("", tool_calls=[{"name": "magic_function", "args": {"input": 3}, "id": "c1"}]),
        ToolMessage("5", tool_call_id="c1", name="magic_function"),
    ]
    chat.bind_tools([magic_function]).invoke(history)
    assert '{"name": "magic_function", "arguments": {"input": 3}}' in engine.prompts[0]
    assert "<|im_start|>tool\n5<|im_end|>" in engine.prompts[0]


class Joke(BaseModel):
    setup: str
    punchline: str


def test_structured_output_json_schema_pydantic():
    chat, engine = chat_with('{"setup": "Why?", "punchline": "Because."}')
    out = chat.with_structured_output(Joke).invoke("joke")
    assert out == Joke(setup="Why?", punchline="Because.")
    assert engine.params[0].json_schema["required"] == ["setup", "punchline"]


def test_structured_output_stream_yields_one_complete_object():
    chat, _ = chat_with('{"setup": "Why?", "punchline": "Because."}')
    chunks = list(chat.with_structured_output(Joke.model_json_schema()).stream("joke"))
    assert chunks == [{"setup": "Why?", "punchline": "Because."}]


def test_structured_output_cut_by_max_tokens_is_a_parser_error():
    chat, _ = chat_with('{"setup": "Why did the chicken cross", "punchline": "x"}')
    with pytest.raises(OutputParserException, match="raise max_tokens"):
        chat.with_structured_output(Joke).invoke("joke", max_tokens=3)


def test_structured_output_include_raw():
    chat, _ = chat_with("not json")
    out = chat.with_structured_output(Joke, include_raw=True).invoke("joke")
    assert out["parsed"] is None and out["parsing_error"] is not None
    assert isinstance(out["raw"], AIMessage)


def test_function_calling_method():
    chat, _ = chat_with(json.dumps({"name": "Joke", "arguments": {"setup": "a", "punchline": "b"}}))
    out = chat.with_structured_output(Joke, method="function_calling").invoke("joke")
    assert out == Joke(setup="a", punchline="b")


def test_image_input_is_refused_clearly():
    chat, _ = chat_with()
    msg = HumanMessage(content=[{"type": "image_url", "image_url": {"url": "http://x/y.png"}}])
    with pytest.raises(ConfigError, match="text-only"):
        chat.invoke([msg])


async def test_async_invoke_and_stream():
    chat, _ = chat_with("a b c", "a b c")
    assert (await chat.ainvoke("x")).content == "a b c"
    parts = [c.content async for c in chat.astream("x")]
    assert "".join(parts) == "a b c"


async def test_breaking_out_of_astream_cancels_generation():
    long_reply = " ".join(f"w{i}" for i in range(5000))
    engine = FakeEngine([long_reply])
    chat = ChatLlama(engine=engine, max_tokens=None)
    agen = chat.astream("x")
    async for _ in agen:
        break
    await agen.aclose()
    await asyncio.sleep(0.05)
    assert engine.params  # it ran, and the worker thread was told to stop


def test_llm_uses_raw_prompt_or_chat_template():
    engine = FakeEngine(["done", "done"])
    LlamaLLM(engine=engine).invoke("Complete me")
    LlamaLLM(engine=engine, use_chat_template=True, system_prompt="sys").invoke("Complete me")
    assert engine.prompts[0] == "Complete me"
    assert engine.prompts[1].startswith("<|im_start|>system\nsys<|im_end|>\n<|im_start|>user")


def test_llm_generate_reports_token_usage():
    engine = FakeEngine(["a b", "c d e"])
    result = LlamaLLM(engine=engine).generate(["p1", "p2 two"])
    assert [g[0].text for g in result.generations] == ["a b", "c d e"]
    assert result.llm_output["token_usage"]["output_tokens"] == 5


def test_ls_params():
    chat, _ = chat_with()
    params = chat._get_ls_params(stop=["x"])
    assert params["ls_provider"] == "llamachain"
    assert params["ls_model_type"] == "chat"
    assert params["ls_stop"] == ["x"]
