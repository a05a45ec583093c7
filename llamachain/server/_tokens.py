"""``/tokenize``, ``/detokenize`` and ``/props``: the served model's own tokenizer over HTTP.

The request and response shapes are llama.cpp server's, so a client that counts tokens against
either works with both.  A remote client (``ChatOpenAI`` pointed at ``/v1``) counts prompt
tokens exactly with them instead of guessing -- see :class:`llamachain.remote.RemoteTokenizer`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from starlette.concurrency import run_in_threadpool

if TYPE_CHECKING:
    from llamachain.server.state import ServerState

_MAX_TEXT = 1_000_000


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    content: str = Field(max_length=_MAX_TEXT)
    add_special: StrictBool = Field(default=False, description="Add the model's BOS token.")
    parse_special: StrictBool = Field(
        default=False, description="Read special-token text (e.g. <|im_start|>) as one token."
    )


class TokenizeResponse(BaseModel):
    tokens: list[int]


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    tokens: list[int] = Field(max_length=_MAX_TEXT)


class DetokenizeResponse(BaseModel):
    content: str


class Props(BaseModel):
    model: str
    n_ctx: int = Field(description="The served model's context window, in tokens.")
    embedding_model: str
    knowledge_base: str
    max_tokens: int = Field(description="The largest max_tokens a request may ask for.")


def router(state: ServerState) -> APIRouter:
    r = APIRouter(tags=["tokens"])

    @r.post("/tokenize", response_model=TokenizeResponse)
    async def tokenize(request: TokenizeRequest) -> TokenizeResponse:
        """The served model's token ids for ``content`` (loads the model on first use)."""
        engine = state.chat_model.engine
        ids = await run_in_threadpool(
            engine.tokenize,
            request.content,
            add_bos=request.add_special,
            special=request.parse_special,
        )
        return TokenizeResponse(tokens=list(ids))

    @r.post("/detokenize", response_model=DetokenizeResponse)
    async def detokenize(request: DetokenizeRequest) -> DetokenizeResponse:
        """The text of token ids; ids outside the vocabulary are a 422."""
        from llamachain.errors import ConfigError

        engine = state.chat_model.engine
        info = await run_in_threadpool(lambda: getattr(engine, "info", None))
        vocab = int(getattr(info, "vocab_size", None) or 0)
        bad = [t for t in request.tokens if t < 0 or (vocab and t >= vocab)]
        if bad:
            raise ConfigError(
                f"token ids {bad[:5]} are outside the model's vocabulary (0..{vocab - 1})"
            )
        text = await run_in_threadpool(engine.detokenize, request.tokens)
        return DetokenizeResponse(content=text)

    @r.get("/props", response_model=Props)
    async def props() -> Props:
        """What a remote client needs to plan prompts: the model and its context window."""
        engine = state.chat_model.engine
        n_ctx = await run_in_threadpool(lambda: engine.n_ctx)
        from llamachain.server._openai import embedder_id

        embedding_model = await run_in_threadpool(embedder_id, state)
        return Props(
            model=state.model_id,
            n_ctx=int(n_ctx),
            embedding_model=embedding_model,
            knowledge_base=state.kb_name,
            max_tokens=state.settings.server_max_tokens,
        )

    return r
