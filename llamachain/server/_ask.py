"""``POST /ask``: a grounded answer with citations from the knowledge base, whole or streamed.

The route runs :class:`~llamachain.qa.GroundedQA` over the served knowledge base and the shared
model, through the chain's async stream, so retrieval and generation never hold up the event
loop.  ``stream: true`` answers with server-sent events::

    event: token     data: {"text": "..."}        (the reply as it is generated)
    event: result    data: {AskResponse}          (once: the answer, citations resolved)
    event: done      data: {}
    event: error     data: {"detail": "..."}      (instead of the rest, if it fails midway)

Errors found before the first event (an empty question, a bad filter, a prompt that cannot
fit) are ordinary 4xx responses.  A client that disconnects stops its generation.  An empty
knowledge base is not an error: the answer is the chain's abstention (``no_documents``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from starlette.concurrency import run_in_threadpool

from llamachain.errors import LlamaChainError
from llamachain.server import _sse
from llamachain.server._openai import check_max_tokens
from llamachain.server.schemas import DocumentMetadataFilter

if TYPE_CHECKING:
    from llamachain.qa import QAChunk, QAResult
    from llamachain.server.state import ServerState

log = logging.getLogger(__name__)


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=10_000)
    stream: StrictBool = Field(default=False, description="Server-sent events instead of one JSON.")
    k: int | None = Field(default=None, ge=1, le=100, description="Chunks retrieved.")
    max_tokens: int | None = Field(
        default=None, ge=1, description="The answer's token limit (at most server_max_tokens)."
    )
    filter: DocumentMetadataFilter | None = Field(
        default=None, description="Search only the documents whose metadata match."
    )


class AskCitation(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    n: int = Field(description="The [n] marker in the answer.")
    chunk_id: str
    source: str
    file_name: str
    section: str
    page: int | None
    snippet: str


class AskChunk(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # SourceChunk, its ``packed`` included

    n: int | None = Field(description="The number the chunk is cited by.")
    id: str
    text: str
    source: str
    file_name: str
    section: str
    page: int | None
    score: float = Field(description="Fused retrieval score: higher is more relevant.")
    rank: int
    dense_score: float | None = None
    bm25_score: float | None = None
    packed: bool = Field(description="Whether the model saw it (else only quoted as evidence).")


class AskUsage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0


class AskResponse(BaseModel):
    question: str
    answer: str = Field(description="What to show: the reply and the quoted supporting passage.")
    abstained: bool
    abstain_reason: str | None = Field(
        description="no_documents, weak_retrieval, model or unsupported (when abstained)."
    )
    citations: list[AskCitation]
    sources: list[str] = Field(description="The distinct sources cited, in citation order.")
    chunks: list[AskChunk] = Field(description="Every retrieved chunk, best first.")
    model_answer: str = Field(description="The model's reply alone.")
    quote: str
    support: float | None
    standalone_question: str | None = None
    usage: AskUsage
    timings: dict[str, float] = Field(description="Seconds per stage.")
    finish_reason: str | None
    model: str

    @classmethod
    def from_result(cls, r: QAResult, model: str) -> AskResponse:
        u = r.usage or {}
        prompt, completion = int(u.get("input_tokens", 0)), int(u.get("output_tokens", 0))
        return cls(
            question=r.question,
            answer=r.answer,
            abstained=r.abstained,
            abstain_reason=r.abstain_reason,
            citations=[AskCitation.model_validate(c) for c in r.citations],
            sources=r.sources,
            chunks=[AskChunk.model_validate(c) for c in r.chunks],
            model_answer=r.model_answer,
            quote=r.quote,
            support=r.support,
            standalone_question=r.standalone_question,
            usage=AskUsage(
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=prompt + completion,
                cached_tokens=int(u.get("cache_read", 0)),
            ),
            timings=r.timings,
            finish_reason=r.finish_reason,
            model=model,
        )


def chroma_where(f: DocumentMetadataFilter | None) -> dict[str, Any] | None:
    """The Chroma ``where`` that selects what ``/query`` would return for this filter: plugin
    documents whose metadata match, and ingested files for a filter on nothing but
    ``document_id`` (their path) and/or ``source: "file"``."""
    from llamachain.server._plugin import _filter

    doc_filter = _filter(f)
    return None if doc_filter is None else doc_filter.where()


def _chain_input(request: AskRequest) -> dict[str, Any]:
    data: dict[str, Any] = {"question": request.question}
    where = chroma_where(request.filter)
    if where is not None:
        data["filter"] = where
    if request.k is not None:
        data["k"] = request.k
    return data


async def answer_events(
    stream: AsyncIterator[QAChunk], first: QAChunk | None, model: str
) -> AsyncIterator[str]:
    """The SSE events of a streamed answer (``first`` is the chunk already read)."""
    try:
        result = None
        if first is not None:
            result = first.result
            if first.text:
                yield _sse.event({"text": first.text}, "token")
        async for chunk in stream:
            if chunk.text:
                yield _sse.event({"text": chunk.text}, "token")
            if chunk.result is not None:
                result = chunk.result
        if result is None:  # the chain always ends with its result; never leave it unsaid
            raise LlamaChainError("the answer ended without a result")
        body = AskResponse.from_result(result, model).model_dump(mode="json")
        yield _sse.event(body, "result")
        yield _sse.event({}, "done")
    except Exception as e:
        if isinstance(e, LlamaChainError):
            log.warning("/ask stream failed: %s", e)
            detail = str(e)
        else:
            log.exception("/ask stream failed")
            detail = f"internal error ({type(e).__name__}); see the server log"
        yield _sse.event({"detail": detail}, "error")
    finally:
        await _sse.aclose(stream)


def router(state: ServerState) -> APIRouter:
    r = APIRouter(tags=["answers"])

    @r.post(
        "/ask",
        response_model=AskResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def ask(request: AskRequest) -> Any:
        """A grounded answer from the knowledge base, citing the chunks it relies on, or an
        abstention when the documents do not answer the question.  ``stream: true``: server-sent
        events ``token`` (``{"text"}``), then ``result`` (this response), then ``done``."""
        check_max_tokens(request.max_tokens, state.settings.server_max_tokens)
        data = _chain_input(request)
        qa = await run_in_threadpool(lambda: state.qa(answer_tokens=request.max_tokens))
        model = await run_in_threadpool(lambda: state.model_id)
        if not request.stream:
            result = await qa.ainvoke(data)
            return AskResponse.from_result(result, model)
        stream = qa.astream(data)
        first, empty = await _sse.primed(stream)
        return _sse.EventStream(answer_events(stream, None if empty else first, model))

    return r
