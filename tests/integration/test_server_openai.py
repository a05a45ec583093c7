"""The OpenAI-compatible routes of a real ``llamachain serve`` process, through the official
``openai`` client and httpx: SmolLM2 (greedy, one thread) and all-MiniLM-L6-v2."""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from llamachain_server import LlamachainServer, start_llamachain_server

STORY = "Write a very long story about a dragon and a knight."
CAP = 512


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamachainServer]:
    env = {
        "LLAMACHAIN_N_THREADS": "1",
        "LLAMACHAIN_N_CTX": "1024",
        "LLAMACHAIN_SERVER_MAX_TOKENS": str(CAP),
    }
    s = start_llamachain_server(tmp_path_factory.mktemp("openai-home"), env=env)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def client(server: LlamachainServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=server.token, max_retries=0)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_models_lists_the_chat_model_and_the_embedder(client: openai.OpenAI) -> None:
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert len(ids) == 2 and all(m.object == "model" and m.owned_by for m in models.data)
    chat_id, embed_id = ids
    assert "smollm2" in chat_id.lower() and "minilm" in embed_id.lower()
    assert client.models.retrieve(embed_id).id == embed_id
    with pytest.raises(openai.NotFoundError, match="this server has"):
        client.models.retrieve("gpt-4o")


def test_chat_completion_with_usage_and_finish_reason(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="gpt-4o-mini",  # any name is accepted; the response names the real model
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        max_tokens=24,
    )
    assert r.object == "chat.completion" and "smollm2" in r.model.lower()
    choice = r.choices[0]
    assert choice.message.role == "assistant" and "Paris" in choice.message.content
    assert choice.finish_reason in ("stop", "length")
    u = r.usage
    assert u is not None and u.prompt_tokens > 10 and 0 < u.completion_tokens <= 24
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    # greedy with seed 0 by default: the same request gives the same answer
    again = client.chat.completions.create(
        model="x",
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        max_tokens=24,
    )
    assert again.choices[0].message.content == choice.message.content


def test_length_limit_stop_sequences_and_text_parts(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="x",
        messages=[{"role": "user", "content": [{"type": "text", "text": STORY}]}],
        max_completion_tokens=7,
    )
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 7
    full = r.choices[0].message.content
    word = full.split()[2]
    cut = client.chat.completions.create(
        model="x", messages=[{"role": "user", "content": STORY}], max_tokens=7, stop=[word]
    )
    text = cut.choices[0].message.content
    assert cut.choices[0].finish_reason == "stop" and word not in text
    assert full.startswith(text)


def test_streamed_chat_matches_the_whole_answer(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Name three colours."}]
    whole = client.chat.completions.create(model="x", messages=messages, max_tokens=20)
    chunks = list(
        client.chat.completions.create(
            model="x",
            messages=messages,
            max_tokens=20,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    pieces = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 3  # token by token, not one block
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_logprobs_and_json_schema_output(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="x",
        messages=[{"role": "user", "content": "Name a colour."}],
        max_tokens=6,
        logprobs=True,
        top_logprobs=2,
    )
    lp = r.choices[0].logprobs
    assert lp is not None and len(lp.content) == r.usage.completion_tokens
    assert "".join(t.token for t in lp.content) == r.choices[0].message.content
    assert all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in lp.content)
    # greedy: the chosen token is the most likely one
    assert all(t.logprob == pytest.approx(t.top_logprobs[0].logprob) for t in lp.content)
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
    }
    j = client.chat.completions.create(
        model="x",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=40,
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
    )
    assert j.choices[0].finish_reason == "stop"
    assert set(json.loads(j.choices[0].message.content)) == {"city"}


def test_embeddings_float_and_base64(client: openai.OpenAI) -> None:
    texts = ["The cat sat on the mat.", "A kitten rested on a rug.", "Stock prices fell sharply."]
    floats = client.embeddings.create(
        model="text-embedding-3-small", input=texts, encoding_format="float"
    )
    assert "minilm" in floats.model.lower()
    vectors = [d.embedding for d in floats.data]
    assert [d.index for d in floats.data] == [0, 1, 2] and all(len(v) == 384 for v in vectors)
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-3 for v in vectors)

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2]) + 0.2
    assert floats.usage.prompt_tokens == floats.usage.total_tokens >= 15
    # the client asks for base64 by default and decodes it itself
    default = client.embeddings.create(model="x", input=texts[0])
    assert default.data[0].embedding == pytest.approx(vectors[0], abs=1e-6)
    assert default.usage.prompt_tokens < floats.usage.prompt_tokens


def test_base64_bytes_are_little_endian_float32(server: LlamachainServer) -> None:
    with server.client() as http:
        body = {"input": "hello world", "encoding_format": "base64"}
        raw = http.post("/v1/embeddings", json=body).json()["data"][0]["embedding"]
        floats = http.post("/v1/embeddings", json={"input": "hello world"}).json()
    data = base64.b64decode(raw)
    decoded = struct.unpack(f"<{len(data) // 4}f", data)
    assert decoded == pytest.approx(floats["data"][0]["embedding"], abs=1e-6)


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": CAP + 1}, 422, "limit"),
        ({"messages": [{"role": "user", "content": "hi"}], "n": 2}, 422, "n=1"),
        ({"messages": [{"role": "tool", "content": "hi"}]}, 422, "role"),
        ({"messages": []}, 422, "messages"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            422,
            "text",
        ),
        # 2,000 words do not fit a 1,024-token context: the engine's own message
        ({"messages": [{"role": "user", "content": "word " * 2000}]}, 422, "context window"),
        ({"input": [[1, 2, 3]]}, 422, "token arrays"),
        ({"input": []}, 422, "empty"),
        ({"input": "x", "dimensions": 7}, 422, "384"),
    ],
)
def test_bad_requests_are_clear_4xx(
    server: LlamachainServer, body: dict[str, object], status: int, words: str
) -> None:
    path = "/v1/embeddings" if "input" in body else "/v1/chat/completions"
    with server.client() as http:
        r = http.post(path, json=body)
        streamed = http.post(path, json={**body, "stream": True}) if "messages" in body else r
    for resp in (r, streamed):
        assert resp.status_code == status, resp.text
        assert words in resp.json()["detail"]


def test_token_required(server: LlamachainServer) -> None:
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_disconnect_stops_generation_and_the_loop_stays_free(server: LlamachainServer) -> None:
    """A long streamed story; /healthz and /query answer while it runs; the client then hangs
    up, and the model stops: the server's CPU time shows a few tokens' work, not the story's.

    CPU time of the (one-thread) server, not wall-clock: the per-token cost is measured in
    the same run, and the next request waits for the model's lock until the story's worker
    stops, so every token it generated is counted whether it was cancelled or not."""
    messages = [{"role": "user", "content": STORY}]
    with server.client() as http:
        http.post("/query", json={"queries": [{"query": "warm up the embedder"}]})
        before = _cpu_seconds(server.process.pid)
        ref = http.post(
            "/v1/chat/completions", json={"messages": messages, "max_tokens": 64}
        ).json()
        assert ref["usage"]["completion_tokens"] == 64
        per_token = (_cpu_seconds(server.process.pid) - before) / 64

        # The whole story runs to the cap (finish_reason "length" at 400 tokens: measured
        # with the engine directly); cancelled after a few tokens it costs a fraction.
        start = _cpu_seconds(server.process.pid)
        body = {"messages": messages, "max_tokens": 400, "stream": True}
        seen = 0
        with http.stream("POST", "/v1/chat/completions", json=body) as stream:
            lines = stream.iter_lines()
            for line in lines:
                if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get(
                    "content"
                ):
                    seen += 1
                    if seen == 3:
                        break
            # the story is being generated: the event loop still answers
            assert httpx.get(server.url + "/healthz").status_code == 200
            q = http.post("/query", json={"queries": [{"query": "dragon", "top_k": 1}]})
            assert q.status_code == 200
            more = next(line for line in lines if line.startswith("data: {"))
            assert json.loads(more[6:])["choices"][0]["finish_reason"] is None
        # hung up; the next generation waits for the model until the story's worker stops
        after = http.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4},
        ).json()
        assert after["usage"]["completion_tokens"] >= 1
        used = _cpu_seconds(server.process.pid) - start
    full_story = 400 * per_token
    assert used < 0.35 * full_story, (used, full_story, per_token)
