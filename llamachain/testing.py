"""Fakes for tests -- yours and ours.  No model file, no llama.cpp.

``FakeEmbeddings`` stands in for the sentence-transformers embedder: a deterministic hashed
bag of words (texts sharing words are similar), with a word tokenizer for the chunker.

``FakeEngine`` stands in for :class:`~llamachain.engine.LlamaEngine` wherever an engine is
accepted (``ChatLlama(engine=FakeEngine())``).  Queue the replies it should give with
:meth:`FakeEngine.enqueue`; it records every prompt it receives.  It tokenizes by words,
renders chats with ChatML, and honours stop sequences, ``max_tokens`` and cancellation the
way the real engine does.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.embeddings import Embeddings

from llamachain.engine._async import aiter_in_thread
from llamachain.engine.generation import (
    Chunk,
    Completion,
    FinishReason,
    SamplingParams,
    StopMatcher,
    Usage,
)
from llamachain.engine.templates import ChatFormat, Message, get_format
from llamachain.errors import ContextOverflowError

_WORDS = re.compile(r"\s*\S+|\s+")


class FakeEngine:
    """A scripted engine: replies come from a queue, tokens are words."""

    def __init__(
        self,
        replies: Sequence[str] = (),
        *,
        n_ctx: int = 2048,
        model_name: str = "fake-model",
        default_reply: str = "ok",
    ) -> None:
        self.replies: deque[str] = deque(replies)
        self.prompts: list[str] = []
        self.params: list[SamplingParams] = []
        self.n_ctx = n_ctx
        self.model_name = model_name
        self.default_reply = default_reply
        self.chat_format: ChatFormat = get_format("chatml")
        self.closed = False
        self._vocab: dict[str, int] = {}
        self._lock = threading.Lock()

    def enqueue(self, *replies: str) -> FakeEngine:
        self.replies.extend(replies)
        return self

    # tokenizer: one token per word (with its leading space)
    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]:
        with self._lock:
            ids = [self._vocab.setdefault(w, len(self._vocab) + 1) for w in _WORDS.findall(text)]
        return ([0] if add_bos else []) + ids

    def detokenize(self, token_ids: Sequence[int], *, special: bool = False) -> str:
        inverse = {v: k for k, v in self._vocab.items()}
        return "".join(inverse.get(t, "") for t in token_ids)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def prompt_tokens(self, prompt: str) -> list[int]:
        return self.tokenize(prompt)

    def format_chat(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        return self.chat_format.render(messages, add_generation_prompt)

    def stream(
        self,
        prompt: str | Sequence[int],
        params: SamplingParams | None = None,
        *,
        overflow: str | None = None,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
    ) -> Iterator[Chunk]:
        params = params or SamplingParams()
        text = prompt if isinstance(prompt, str) else self.detokenize(prompt)
        n_prompt = self.count_tokens(text)
        want = params.max_tokens or 1
        if n_prompt + want > self.n_ctx and (overflow or "error") == "error":
            raise ContextOverflowError(n_prompt, want, self.n_ctx)
        self.prompts.append(text)
        self.params.append(params)
        reply = self.replies.popleft() if self.replies else self.default_reply
        return self._run(reply, n_prompt, params, cancel)

    def _run(
        self, reply: str, n_prompt: int, params: SamplingParams, cancel: threading.Event | None
    ) -> Iterator[Chunk]:
        matcher = StopMatcher(params.stop)
        n = 0
        finish: FinishReason = "stop"
        for word in _WORDS.findall(reply):
            if params.max_tokens is not None and n >= params.max_tokens:
                finish = "length"
                break
            if cancel is not None and cancel.is_set():
                finish = "cancelled"
                break
            n += 1
            out = matcher.feed(word)
            if out:
                yield Chunk(out, [self.tokenize(word)[0]])
            if matcher.stopped:
                break
        tail = matcher.flush()
        yield Chunk(tail, [], [], finish, Usage(n_prompt, n, 0), {})

    def complete(
        self, prompt: str | Sequence[int], params: SamplingParams | None = None, **kw: Any
    ) -> Completion:
        return Completion.from_chunks(self.stream(prompt, params, **kw))

    def chat_stream(
        self, messages: Sequence[Message], params: SamplingParams | None = None, **kw: Any
    ) -> Iterator[Chunk]:
        params = (params or SamplingParams()).with_stop(self.chat_format.stop)
        return self.stream(self.format_chat(messages), params, **kw)

    def chat(
        self, messages: Sequence[Message], params: SamplingParams | None = None, **kw: Any
    ) -> Completion:
        return Completion.from_chunks(self.chat_stream(messages, params, **kw))

    async def astream(
        self, prompt: str | Sequence[int], params: SamplingParams | None = None, **kw: Any
    ) -> AsyncIterator[Chunk]:
        async for c in aiter_in_thread(
            lambda cancel: self.stream(prompt, params, cancel=cancel, **kw)
        ):
            yield c

    async def achat_stream(
        self, messages: Sequence[Message], params: SamplingParams | None = None, **kw: Any
    ) -> AsyncIterator[Chunk]:
        async for c in aiter_in_thread(
            lambda cancel: self.chat_stream(messages, params, cancel=cancel, **kw)
        ):
            yield c

    def close(self) -> None:
        self.closed = True


_TOKENS = re.compile(r"\w+|[^\w\s]")


class FakeEmbeddings(Embeddings):
    """Deterministic embeddings without a model: a normalised hashed bag of lower-cased words.

    Implements LangChain's ``Embeddings`` interface (``embed_documents`` / ``embed_query`` and
    their async forms) plus what llamachain's chunker and knowledge bases use
    (``token_offsets``, ``max_chunk_tokens``, ``model_id``, ``dimension``).  Tokens are words and
    punctuation marks.  ``calls`` counts the texts embedded so far.
    """

    def __init__(self, dimension: int = 64, max_chunk_tokens: int = 64) -> None:
        self._dimension = dimension
        self._max_chunk_tokens = max_chunk_tokens
        self.calls = 0
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return f"fake-embeddings-{self._dimension}"

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def max_chunk_tokens(self) -> int:
        return self._max_chunk_tokens

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in _TOKENS.finditer(text)]

    def _vector(self, text: str) -> list[float]:
        vec = [0.0] * self._dimension
        for m in _TOKENS.finditer(text.lower()):
            digest = hashlib.blake2b(m.group().encode(), digest_size=8).digest()
            h = int.from_bytes(digest, "little")
            vec[h % self._dimension] += 1.0 if (h >> 32) & 1 else -1.0
        norm = math.sqrt(sum(v * v for v in vec))
        if norm == 0.0:
            vec[0] = 1.0
            return vec
        return [v / norm for v in vec]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        with self._lock:
            self.calls += len(texts)
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embed_documents(texts)

    async def aembed_query(self, text: str) -> list[float]:
        return self.embed_query(text)
