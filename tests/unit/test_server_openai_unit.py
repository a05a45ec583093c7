"""The /v1 routes and /ask without a model or a socket: ``FakeEngine`` behind ``ChatLlama``,
``FakeEmbeddings``, a local Chroma, the app called in-process (``httpx.ASGITransport`` or a
bare ASGI driver for client disconnects)."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llamachain.chat_models import ChatLlama
from llamachain.engine.generation import Chunk, SamplingParams
from llamachain.errors import GenerationError
from llamachain.server import ServerState, create_app
from llamachain.settings import Settings
from llamachain.testing import FakeEmbeddings, FakeEngine

PIN = "# Debugger\n\nThe debugger PIN is set with the WERKZEUG_DEBUG_PIN environment variable.\n"
QUESTION = "Which environment variable sets the debugger PIN?"
USER = [{"role": "user", "content": "hello there"}]


class RecordingEngine(FakeEngine):
    """A FakeEngine that records each generation's cancel event and tokens produced; with
    ``stall_after`` it stops producing after that many tokens until it is cancelled."""

    def __init__(
        self,
        *replies: str,
        stall_after: int | None = None,
        fail_after: int | None = None,
        n_ctx: int = 2048,
    ) -> None:
        super().__init__(replies, n_ctx=n_ctx)
        self.stall_after = stall_after
        self.fail_after = fail_after
        self.runs: list[dict[str, Any]] = []

    def stream(
        self,
        prompt: Any,
        params: SamplingParams | None = None,
        *,
        overflow: Any = None,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
    ) -> Iterator[Chunk]:
        inner = super().stream(prompt, params, overflow=overflow, cancel=cancel, timeout=timeout)
        run: dict[str, Any] = {"cancel": cancel, "tokens": 0, "stalled": None, "finish": None}
        self.runs.append(run)

        def gen() -> Iterator[Chunk]:
            for chunk in inner:
                if chunk.finish_reason is not None:
                    run["finish"] = chunk.finish_reason
                    yield chunk
                    return
                run["tokens"] += 1
                if self.fail_after is not None and run["tokens"] > self.fail_after:
                    raise GenerationError("llama_decode failed (test)")
                if self.stall_after is not None and run["tokens"] > self.stall_after:
                    assert cancel is not None
                    run["stalled"] = cancel.wait(timeout=30)  # until the consumer goes away
                yield chunk

        return gen()


def make_state(tmp_path: Path, engine: FakeEngine, **settings: Any) -> ServerState:
    s = Settings(home=tmp_path / "home", **settings)
    chat = ChatLlama(engine=engine, temperature=0.0, seed=0)
    return ServerState(s, kb_name="unit", chat_model=chat, embeddings=FakeEmbeddings())


def with_docs(state: ServerState, tmp_path: Path) -> ServerState:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "debug.md").write_text(PIN)
    state.kb.ingest([folder])
    return state


def call(state: ServerState, method: str, path: str, **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(state=state))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            return await c.request(method, path, **kw)

    return asyncio.run(go())


def sse_data(text: str) -> list[Any]:
    out = []
    for line in text.splitlines():
        if line.startswith("data: "):
            out.append(line[6:] if line[6:] == "[DONE]" else json.loads(line[6:]))
    return out


# ---- chat completions ----------------------------------------------------------------------


def test_completion_reports_the_engines_counts_and_defaults(tmp_path: Path) -> None:
    engine = RecordingEngine("one two three four")
    state = make_state(tmp_path, engine, server_max_tokens=100)
    r = call(
        state,
        "POST",
        "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": USER, "user": "x", "metadata": {}},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "fake-model"
    assert body["id"].startswith("chatcmpl-") and isinstance(body["created"], int)
    choice = body["choices"][0]
    assert choice["message"] == {
        "role": "assistant",
        "content": "one two three four",
        "refusal": None,
    }
    assert choice["finish_reason"] == "stop"
    prompt = engine.count_tokens(engine.prompts[-1])
    assert body["usage"]["prompt_tokens"] == prompt and body["usage"]["completion_tokens"] == 4
    assert body["usage"]["total_tokens"] == prompt + 4
    params = engine.params[-1]
    # unset sampling fields are the served model's (greedy, seed 0); max_tokens the cap
    assert params.temperature == 0.0 and params.seed == 0 and params.max_tokens == 100
    assert "<|im_end|>" in params.stop  # the chat template's own stop is kept


def test_sampling_fields_stop_and_length(tmp_path: Path) -> None:
    engine = RecordingEngine("alpha beta gamma delta", "alpha beta gamma delta")
    state = make_state(tmp_path, engine)
    body = {
        "messages": USER,
        "temperature": 0.7,
        "top_p": 0.5,
        "seed": 42,
        "max_tokens": 2,
        "top_k": 5,
        "repeat_penalty": 1.0,
    }
    r = call(state, "POST", "/v1/chat/completions", json=body).json()
    assert r["choices"][0]["finish_reason"] == "length"
    assert r["choices"][0]["message"]["content"] == "alpha beta"
    p = engine.params[-1]
    assert (p.temperature, p.top_p, p.seed, p.max_tokens, p.top_k, p.repeat_penalty) == (
        0.7,
        0.5,
        42,
        2,
        5,
        1.0,
    )
    r = call(
        state,
        "POST",
        "/v1/chat/completions",
        json={"messages": USER, "stop": " gamma", "max_completion_tokens": 9},
    ).json()
    assert r["choices"][0]["message"]["content"] == "alpha beta"
    assert r["choices"][0]["finish_reason"] == "stop" and engine.params[-1].max_tokens == 9


def test_messages_roles_and_text_parts_reach_the_template(tmp_path: Path) -> None:
    engine = RecordingEngine("ok")
    state = make_state(tmp_path, engine)
    messages = [
        {"role": "developer", "content": "Be brief."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "you"}],
        },
        {"role": "assistant", "content": None},
        {"role": "user", "content": "again"},
    ]
    assert (
        call(state, "POST", "/v1/chat/completions", json={"messages": messages}).status_code == 200
    )
    prompt = engine.prompts[-1]
    assert "<|im_start|>system\nBe brief." in prompt and "<|im_start|>user\nHi you" in prompt
    assert prompt.rstrip().endswith("<|im_start|>assistant")


def test_stream_chunks_usage_and_done(tmp_path: Path) -> None:
    engine = RecordingEngine("one two three")
    state = make_state(tmp_path, engine)
    r = call(
        state,
        "POST",
        "/v1/chat/completions",
        json={"messages": USER, "stream": True, "stream_options": {"include_usage": True}},
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    data = sse_data(r.text)
    assert data[-1] == "[DONE]"
    chunks = data[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "one two three"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3
    assert all(c["usage"] is None for c in chunks[:-1])
    plain = call(state, "POST", "/v1/chat/completions", json={"messages": USER, "stream": True})
    assert all("usage" not in c for c in sse_data(plain.text)[:-1])


def test_logprobs_and_json_response_format(tmp_path: Path) -> None:
    engine = RecordingEngine('{"a": 1}')
    state = make_state(tmp_path, engine)
    body = {
        "messages": USER,
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "x",
                "schema": {"type": "object", "properties": {"a": {"type": "integer"}}},
            },
        },
    }
    assert call(state, "POST", "/v1/chat/completions", json=body).status_code == 200
    assert engine.params[-1].json_schema == {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
    }
    call(
        state,
        "POST",
        "/v1/chat/completions",
        json={"messages": USER, "response_format": {"type": "json_object"}},
    )
    assert engine.params[-1].json_schema == {"type": "object"}
    call(
        state,
        "POST",
        "/v1/chat/completions",
        json={"messages": USER, "logprobs": True, "top_logprobs": 3},
    )
    assert engine.params[-1].logprobs == 3


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"messages": USER, "max_tokens": 101}, "over this server's limit of 100"),
        ({"messages": USER, "max_completion_tokens": 101}, "max_completion_tokens 101"),
        ({"messages": USER, "max_tokens": 0}, "max_tokens"),
        ({"messages": USER, "n": 3}, "only n=1"),
        ({"messages": USER, "temperature": 3}, "temperature"),
        ({"messages": USER, "top_p": 0}, "top_p"),
        ({"messages": USER, "stop": ["x"] * 17}, "at most 16"),
        ({"messages": USER, "frequency_penalty": 0.5}, "repeat_penalty"),
        ({"messages": USER, "tools": [{"type": "function"}]}, "not supported"),
        ({"messages": USER, "response_format": {"type": "json_schema"}}, "json_schema"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "role"),
        ({"messages": [{"role": "user"}]}, "needs content"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "text only"),
        ({"messages": []}, "messages"),
        ({"messages": "hello"}, "messages"),
        ({}, "messages"),
    ],
)
def test_bad_chat_requests_are_422_in_openais_shape(
    tmp_path: Path, body: dict[str, Any], words: str
) -> None:
    state = make_state(tmp_path, RecordingEngine(), server_max_tokens=100)
    for stream in (False, True):
        r = call(state, "POST", "/v1/chat/completions", json={**body, "stream": stream})
        assert r.status_code == 422, r.text
        got = r.json()
        assert words in got["detail"] and got["error"]["message"] == got["detail"]
        assert got["error"]["type"] == "invalid_request_error"


def test_context_overflow_is_422_with_the_engines_message(tmp_path: Path) -> None:
    engine = RecordingEngine(n_ctx=40)
    state = make_state(tmp_path, engine)
    long = [{"role": "user", "content": "word " * 60}]
    for extra in ({}, {"max_tokens": 5}, {"stream": True}, {"stream": True, "max_tokens": 5}):
        r = call(state, "POST", "/v1/chat/completions", json={"messages": long, **extra})
        assert r.status_code == 422, r.text
        assert "exceeds the context window of 40 tokens" in r.json()["error"]["message"]
    assert engine.runs == []  # nothing was generated


def test_error_after_the_stream_began_is_an_error_event(tmp_path: Path) -> None:
    state = make_state(tmp_path, RecordingEngine("a b c d e f", fail_after=2))
    r = call(state, "POST", "/v1/chat/completions", json={"messages": USER, "stream": True})
    assert r.status_code == 200
    data = sse_data(r.text)
    assert "[DONE]" not in data
    assert "llama_decode failed" in data[-1]["error"]["message"]
    texts = [c["choices"][0]["delta"].get("content") for c in data[:-1] if c.get("choices")]
    assert "a" in texts
    whole = call(
        make_state(tmp_path / "2", RecordingEngine("a b c", fail_after=1)),
        "POST",
        "/v1/chat/completions",
        json={"messages": USER},
    )
    assert whole.status_code == 503 and "llama_decode failed" in whole.json()["error"]["message"]


def test_token_is_required_in_openais_shape(tmp_path: Path) -> None:
    from pydantic import SecretStr

    state = make_state(tmp_path, RecordingEngine(), server_token=SecretStr("sekrit"))
    r = call(state, "GET", "/v1/models")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    ok = call(state, "GET", "/v1/models", headers={"Authorization": "Bearer sekrit"})
    assert ok.status_code == 200


# ---- embeddings and models -----------------------------------------------------------------


def test_embeddings_float_base64_and_usage(tmp_path: Path) -> None:
    state = make_state(tmp_path, RecordingEngine())
    fake = FakeEmbeddings()
    texts = ["red apples", "green pears, ripe"]
    r = call(state, "POST", "/v1/embeddings", json={"model": "ada", "input": texts}).json()
    assert r["object"] == "list" and r["model"] == "fake-embeddings-64"
    assert [d["index"] for d in r["data"]] == [0, 1]
    assert [d["embedding"] for d in r["data"]] == fake.embed_documents(texts)
    n = sum(len(fake.token_offsets(t)) for t in texts)
    assert r["usage"] == {"prompt_tokens": n, "total_tokens": n}
    b = call(state, "POST", "/v1/embeddings", json={"input": texts[0], "encoding_format": "base64"})
    raw = base64.b64decode(b.json()["data"][0]["embedding"])
    assert struct.unpack("<64f", raw) == pytest.approx(fake.embed_query(texts[0]), abs=1e-7)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"input": [1, 2, 3]}, "token arrays"),
        ({"input": [[1, 2]]}, "token arrays"),
        ({"input": []}, "empty list"),
        ({"input": ["ok", ""]}, "input[1] is empty"),
        ({"input": ["ok", {"a": 1}]}, "not a string"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "x", "dimensions": 32}, "64-dimensional"),
        ({"model": "x"}, "input"),
    ],
)
def test_bad_embedding_requests(tmp_path: Path, body: dict[str, Any], words: str) -> None:
    r = call(make_state(tmp_path, RecordingEngine()), "POST", "/v1/embeddings", json=body)
    assert r.status_code == 422 and words in r.json()["detail"], r.text


def test_models(tmp_path: Path) -> None:
    state = make_state(tmp_path, RecordingEngine())
    listed = call(state, "GET", "/v1/models").json()
    assert listed["object"] == "list"
    assert [m["id"] for m in listed["data"]] == ["fake-model", "fake-embeddings-64"]
    assert all(m["object"] == "model" and isinstance(m["created"], int) for m in listed["data"])
    assert call(state, "GET", "/v1/models/fake-model").json()["id"] == "fake-model"
    missing = call(state, "GET", "/v1/models/gpt-4")
    assert missing.status_code == 404 and "fake-embeddings-64" in missing.json()["error"]["message"]


# ---- /ask ----------------------------------------------------------------------------------


def test_ask_answer_citations_and_usage(tmp_path: Path) -> None:
    engine = RecordingEngine("Set WERKZEUG_DEBUG_PIN [1].")
    state = with_docs(make_state(tmp_path, engine), tmp_path)
    r = call(state, "POST", "/ask", json={"question": QUESTION, "max_tokens": 50})
    assert r.status_code == 200, r.text
    body = r.json()
    assert not body["abstained"] and "WERKZEUG_DEBUG_PIN" in body["answer"]
    (cite,) = body["citations"]
    assert (
        cite["n"] == 1
        and cite["file_name"] == "debug.md"
        and cite["chunk_id"] in {c["id"] for c in body["chunks"]}
    )
    assert body["sources"] == [cite["source"]]
    assert body["usage"]["completion_tokens"] == 3 and body["usage"]["prompt_tokens"] > 10
    assert engine.params[-1].max_tokens == 50 and body["model"] == "fake-model"


def test_ask_stream_and_empty_knowledge_base(tmp_path: Path) -> None:
    state = make_state(tmp_path, RecordingEngine())
    r = call(state, "POST", "/ask", json={"question": QUESTION, "stream": True})
    assert r.status_code == 200
    assert [ln for ln in r.text.splitlines() if ln.startswith("event:")] == [
        "event: result",
        "event: done",
    ]
    result = sse_data(r.text)[0]
    assert result["abstained"] and result["abstain_reason"] == "no_documents"

    engine = RecordingEngine("Set WERKZEUG_DEBUG_PIN [1].")
    state = with_docs(make_state(tmp_path / "2", engine), tmp_path)
    r = call(state, "POST", "/ask", json={"question": QUESTION, "stream": True})
    names = [ln[7:] for ln in r.text.splitlines() if ln.startswith("event: ")]
    assert names[-2:] == ["result", "done"] and names.count("token") >= 2
    data = sse_data(r.text)
    tokens = "".join(d["text"] for d in data[:-2])
    assert "WERKZEUG_DEBUG_PIN" in tokens and data[-2]["citations"][0]["n"] == 1


def test_ask_error_midway_is_an_error_event(tmp_path: Path) -> None:
    engine = RecordingEngine("Set WERKZEUG_DEBUG_PIN to a number", fail_after=2)
    state = with_docs(make_state(tmp_path, engine), tmp_path)
    r = call(state, "POST", "/ask", json={"question": QUESTION, "stream": True})
    names = [ln[7:] for ln in r.text.splitlines() if ln.startswith("event: ")]
    assert names[0] == "token" and names[-1] == "error" and "result" not in names
    assert "llama_decode failed" in sse_data(r.text)[-1]["detail"]


def test_ask_filter_is_a_chroma_where() -> None:
    from llamachain.server._ask import chroma_where
    from llamachain.server.schemas import DocumentMetadataFilter

    assert chroma_where(None) is None and chroma_where(DocumentMetadataFilter()) is None
    files = chroma_where(DocumentMetadataFilter(document_id="/a/b.md"))
    assert files == {
        "$or": [
            {"$and": [{"origin": "document"}, {"document_id": "/a/b.md"}]},
            {"$and": [{"origin": {"$ne": "document"}}, {"source": "/a/b.md"}]},
        ]
    }
    author = chroma_where(DocumentMetadataFilter(author="ann"))
    assert author == {"$and": [{"origin": "document"}, {"author": "ann"}]}


# ---- a client that goes away ---------------------------------------------------------------


async def _hang_up_after(app: Any, path: str, body: dict[str, Any], n_events: int) -> list[bytes]:
    """Drive the ASGI app like a server whose client disconnects after ``n_events`` events."""
    payload = json.dumps(body).encode()
    seen: list[bytes] = []
    gone = asyncio.Event()
    sent_body = False

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": payload, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            seen.append(message["body"])
            if sum(b.count(b"\n\n") for b in seen) >= n_events:
                gone.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "server": ("test", 80),
        "client": ("test", 1),
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
        ],
    }
    await asyncio.wait_for(app(scope, receive, send), timeout=30)
    return seen


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/ask"])
def test_disconnect_cancels_the_generation(tmp_path: Path, route: str) -> None:
    """The engine stalls after 3 tokens until its cancel event is set: the request only ends,
    and the stall only returns True, if hanging up cancels the generation."""
    words = "Set WERKZEUG_DEBUG_PIN " + "and more " * 500
    engine = RecordingEngine(words, stall_after=3)
    state = with_docs(make_state(tmp_path, engine), tmp_path)
    body = (
        {"question": QUESTION, "max_tokens": 1000, "stream": True}
        if route == "/ask"
        else {"messages": USER, "max_tokens": 1000, "stream": True}
    )
    seen = asyncio.run(_hang_up_after(create_app(state=state), route, body, n_events=2))
    assert seen and b"[DONE]" not in b"".join(seen) and b"event: result" not in b"".join(seen)
    (run,) = engine.runs
    # cancelled: before the stall, or out of it (a stall that timed out would say False)
    assert run["cancel"].is_set() and run["stalled"] in (None, True)
    assert run["tokens"] <= 4 and run["finish"] in (None, "cancelled")


def test_closing_the_event_generator_sets_the_engines_cancel(tmp_path: Path) -> None:
    from llamachain.server._openai import _Generation
    from llamachain.server._openai_schemas import ChatCompletionRequest

    engine = RecordingEngine("a " * 100, stall_after=2)
    state = make_state(tmp_path, engine)

    async def go() -> None:
        g = _Generation(state, ChatCompletionRequest(messages=USER, stream=True))  # type: ignore[arg-type]
        stream = await g.start()
        events = g.events(stream, None)
        assert '"role":"assistant"' in await events.__anext__()
        assert '"content":"a"' in await events.__anext__()
        await events.aclose()
        assert engine.runs[-1]["cancel"].is_set()  # at once, not when garbage is collected

    asyncio.run(go())
