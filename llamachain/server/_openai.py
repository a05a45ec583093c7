"""OpenAI-compatible routes: ``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/models``.

The official ``openai`` client (and any other OpenAI-speaking tool) works against
``<server>/v1`` with the server's token as the API key.  Choices made here:

- ``model`` may name anything (clients always send one); the response's ``model`` names the
  model that really answered, which ``GET /v1/models`` lists.
- Sampling fields left out take the served model's settings -- greedy, seed 0, no repeat
  penalty -- so the same request gives the same answer.  ``max_tokens`` (or
  ``max_completion_tokens``) is capped by ``server_max_tokens``: over it is a 422; left out,
  it is the cap or what the context window leaves, whichever is smaller.
- A prompt that does not fit the context window is a 422 with the engine's message, as every
  :class:`~llamachain.errors.ContextOverflowError` is in this server.
- Usage counts are the engine's own (the prompt as the chat template renders it).

Generation runs in the engine's worker thread; a streamed request whose client goes away is
closed at once, which stops the model at its next token.
"""

from __future__ import annotations

import base64
import logging
import sys
import time
import uuid
from array import array
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from llamachain import __version__
from llamachain.errors import ConfigError, ContextOverflowError, LlamaChainError
from llamachain.server import _sse
from llamachain.server._openai_schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    Model,
    ModelList,
    PromptTokensDetails,
    Usage,
)

if TYPE_CHECKING:
    from llamachain.engine.generation import Chunk, SamplingParams
    from llamachain.server.state import ServerState

log = logging.getLogger(__name__)
_FINGERPRINT = f"llamachain-{__version__}"


def finish_reason(reason: str | None) -> Literal["stop", "length"]:
    """OpenAI's vocabulary: a generation cut short by a timeout counts as ``length``."""
    return "length" if reason in ("length", "timeout") else "stop"


def usage_of(chunk: Chunk | None) -> Usage:
    u = chunk.usage if chunk is not None else None
    if u is None:
        return Usage(prompt_tokens=0, completion_tokens=0, total_tokens=0)
    return Usage(
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        total_tokens=u.total_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=u.cached_tokens),
    )


def check_max_tokens(requested: int | None, cap: int, field: str = "max_tokens") -> None:
    if requested is not None and requested > cap:
        raise HTTPException(
            422,
            f"invalid request: {field} {requested} is over this server's limit of {cap} "
            "(server_max_tokens); ask for fewer tokens",
        )


class _Generation:
    """One chat completion: the prompt tokens, the sampling parameters, the engine stream."""

    def __init__(self, state: ServerState, request: ChatCompletionRequest) -> None:
        self.state = state
        self.request = request
        self.model = state.chat_model
        self.engine = self.model.engine
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model_id = state.model_id

    def prepare(self) -> tuple[list[int], SamplingParams]:
        """Render and count the prompt, fix max_tokens (blocking: loads the model once)."""
        req = self.request
        cap = self.state.settings.server_max_tokens
        messages = [m.engine_message() for m in req.messages]
        tokens = list(self.engine.prompt_tokens(self.engine.format_chat(messages)))
        n_ctx = int(self.engine.n_ctx)
        max_tokens = req.requested_max_tokens
        if max_tokens is None:
            room = n_ctx - len(tokens)
            if room < 1 and self.engine_overflow() == "error":
                raise ContextOverflowError(len(tokens), 1, n_ctx)
            max_tokens = min(cap, room) if room >= 1 else cap
        kwargs: dict[str, Any] = {"max_tokens": max_tokens}
        for name in ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed"):
            value = getattr(req, name)
            if value is not None:
                kwargs[name] = value
        if req.logprobs:  # top_logprobs alone is ignored, as OpenAI needs logprobs: true
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = req.top_logprobs or 0
        if req.response_format is not None:
            schema = req.response_format.schema_for_engine()
            if schema is not None:
                kwargs["json_schema"] = schema
        params = self.model.sampling_params(req.stops, kwargs)
        return tokens, params.with_stop(self.engine.chat_format.stop)

    def engine_overflow(self) -> str:
        return str(getattr(self.engine, "overflow", "error"))

    async def start(self) -> AsyncIterator[Chunk]:
        from llamachain.engine._async import aiter_in_thread

        tokens, params = await run_in_threadpool(self.prepare)
        # The engine's astream, without its extra generator layer: closing this one sets the
        # cancel event at once rather than when the garbage collector finalizes the inner one.
        engine, timeout = self.engine, self.model.timeout
        stream: AsyncIterator[Chunk] = aiter_in_thread(
            lambda cancel: engine.stream(tokens, params, cancel=cancel, timeout=timeout)
        )
        return stream

    def _logprobs(self, chunk: Chunk) -> dict[str, Any] | None:
        if not self.request.logprobs or not chunk.logprobs:
            return None
        from llamachain._lc_common import logprobs_payload

        return {**logprobs_payload(chunk.logprobs), "refusal": None}

    async def complete(self) -> ChatCompletion:
        stream = await self.start()
        parts: list[str] = []
        logprobs: list[Any] = []
        last: Chunk | None = None
        try:
            async for chunk in stream:
                parts.append(chunk.text)
                if self.request.logprobs:
                    logprobs.extend(chunk.logprobs)
                last = chunk
        finally:
            await _sse.aclose(stream)
        payload = None
        if self.request.logprobs:
            from llamachain._lc_common import logprobs_payload

            payload = {**logprobs_payload(logprobs), "refusal": None}
        return ChatCompletion(
            id=self.id,
            created=self.created,
            model=self.model_id,
            system_fingerprint=_FINGERPRINT,
            choices=[
                Choice(
                    message=AssistantMessage(content="".join(parts)),
                    logprobs=payload,
                    finish_reason=finish_reason(last.finish_reason if last else None),
                )
            ],
            usage=usage_of(last),
        )

    def _piece(self, chunk: Chunk) -> str | None:
        logprobs = self._logprobs(chunk)
        if not chunk.text and logprobs is None:
            return None
        return self._chunk(Delta(content=chunk.text), logprobs=logprobs)

    def _chunk(self, delta: Delta, **fields: Any) -> str:
        include_usage = bool(
            self.request.stream_options and self.request.stream_options.include_usage
        )
        usage = fields.pop("usage", None)
        choices = fields.pop("choices", None)
        if choices is None:
            choices = [ChunkChoice(delta=delta, **fields)]
        body = ChatCompletionChunk(
            id=self.id,
            created=self.created,
            model=self.model_id,
            system_fingerprint=_FINGERPRINT,
            choices=choices,
            usage=usage,
        ).model_dump()
        for choice in body["choices"]:
            choice["delta"] = {k: v for k, v in choice["delta"].items() if v is not None}
        if not include_usage:
            body.pop("usage")
        return _sse.event(body)

    async def events(self, stream: AsyncIterator[Chunk], first: Chunk | None) -> AsyncIterator[str]:
        """``data: {chat.completion.chunk}`` events, then ``data: [DONE]``."""
        last: Chunk | None = None
        try:
            yield self._chunk(Delta(role="assistant", content=""))
            if first is not None:
                last = first
                if piece := self._piece(first):
                    yield piece
            async for chunk in stream:
                last = chunk
                if piece := self._piece(chunk):
                    yield piece
            reason = finish_reason(last.finish_reason if last else None)
            yield self._chunk(Delta(), finish_reason=reason)
            if self.request.stream_options and self.request.stream_options.include_usage:
                yield self._chunk(Delta(), choices=[], usage=usage_of(last))
            yield _sse.event("[DONE]")
        except Exception as e:
            yield _sse.event(_stream_error(e))
        finally:
            await _sse.aclose(stream)


def _stream_error(e: Exception) -> dict[str, Any]:
    """An error after the stream began, in the shape OpenAI clients raise from."""
    if isinstance(e, LlamaChainError):
        log.warning("chat completion stream failed: %s", e)
        return error_body(400 if isinstance(e, ConfigError) else 503, str(e))
    log.exception("chat completion stream failed")
    return error_body(500, f"internal error ({type(e).__name__}); see the server log")


def error_body(status: int, message: str) -> dict[str, Any]:
    """OpenAI's error shape (what its clients show) plus this server's ``detail``."""
    kind = "server_error" if status >= 500 else "invalid_request_error"
    code = "invalid_api_key" if status == 401 else None
    return {
        "error": {"message": message, "type": kind, "param": None, "code": code},
        "detail": message,
    }


class OpenAIRoute(APIRoute):
    """Errors as OpenAI clients expect them: ``{"error": {"message": ...}}`` (and ``detail``,
    with the same status and text as the rest of the server)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            from llamachain.server.app import _status_for, http_error, validation_message

            try:
                return await handler(request)
            except RequestValidationError as e:
                message = f"invalid request: {validation_message(e.errors())}"
                status, headers = 422, None
            except StarletteHTTPException as e:
                (status, message), headers = http_error(e), e.headers
            except LlamaChainError as e:
                status, message, headers = _status_for(e), str(e), None
                if status >= 500:
                    log.warning("%s %s: %s", request.method, request.url.path, e)
            return JSONResponse(error_body(status, message), status_code=status, headers=headers)

        return route


def _count_tokens(embeddings: Any, texts: list[str]) -> int:
    """Tokens of the texts with the embedder's own tokenizer (no special tokens)."""
    count = getattr(embeddings, "count_tokens", None)
    if callable(count):
        return int(sum(count(texts)))
    offsets = getattr(embeddings, "token_offsets", None)
    if callable(offsets):
        return sum(len(offsets(t)) for t in texts)
    return sum(len(t.split()) for t in texts)


def _base64(vector: list[float]) -> str:
    data = array("f", vector)
    if sys.byteorder != "little":
        data.byteswap()
    return base64.b64encode(data.tobytes()).decode("ascii")


def _created(path_of: Any) -> int:
    """A model's ``created``: its file's modification time (0 when it has none)."""
    try:
        return int(path_of().stat().st_mtime)
    except Exception:
        return 0


def router(state: ServerState) -> APIRouter:
    r = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)

    @r.post(
        "/chat/completions",
        response_model=ChatCompletion,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def chat_completions(request: ChatCompletionRequest) -> Any:
        """Chat with the served model; ``stream: true`` sends ``chat.completion.chunk``
        server-sent events ending with ``data: [DONE]``."""
        check_max_tokens(request.max_tokens, state.settings.server_max_tokens)
        check_max_tokens(
            request.max_completion_tokens,
            state.settings.server_max_tokens,
            "max_completion_tokens",
        )
        generation = _Generation(state, request)
        if not request.stream:
            return await generation.complete()
        stream = await generation.start()
        first, empty = await _sse.primed(stream)
        return _sse.EventStream(generation.events(stream, None if empty else first))

    @r.post("/embeddings", response_model=EmbeddingResponse)
    def embeddings(request: EmbeddingRequest) -> EmbeddingResponse:
        """Embed texts with the knowledge base's embedder (the vectors ``/query`` searches)."""
        embedder = state.embeddings
        dimension = int(getattr(embedder, "dimension", 0) or 0)
        if request.dimensions is not None and dimension and request.dimensions != dimension:
            raise HTTPException(
                422,
                f"invalid request: dimensions {request.dimensions} is not supported; "
                f"{embedder_id(state)} gives {dimension}-dimensional vectors (leave it out)",
            )
        texts = request.texts
        vectors = embedder.embed_documents(texts)
        n_tokens = _count_tokens(embedder, texts)
        data = [
            Embedding(
                index=i,
                embedding=_base64(v)
                if request.encoding_format == "base64"
                else [float(x) for x in v],
            )
            for i, v in enumerate(vectors)
        ]
        return EmbeddingResponse(
            data=data,
            model=embedder_id(state),
            usage=EmbeddingUsage(prompt_tokens=n_tokens, total_tokens=n_tokens),
        )

    def models() -> list[Model]:
        chat = state.chat_model
        return [
            Model(id=state.model_id, created=_created(lambda: chat.engine.model_path)),
            Model(
                id=embedder_id(state),
                created=_created(lambda: state.embeddings.model_dir),  # type: ignore[attr-defined]
            ),
        ]

    @r.get("/models", response_model=ModelList)
    def list_models() -> ModelList:
        """The chat model (``/v1/chat/completions``) and the embedder (``/v1/embeddings``)."""
        return ModelList(data=models())

    @r.get("/models/{model_id:path}", response_model=Model)
    def get_model(model_id: str) -> Model:
        """One of the models ``/v1/models`` lists."""
        known = models()
        for m in known:
            if m.id == model_id:
                return m
        raise HTTPException(
            404,
            f"model {model_id!r} not found; this server has: {', '.join(m.id for m in known)}",
        )

    return r


def embedder_id(state: ServerState) -> str:
    """The name the embedder is listed under (``/v1/models``, ``/props``)."""
    return str(getattr(state.embeddings, "model_id", type(state.embeddings).__name__))
