"""``GroundedQA``: question -> retrieve -> pack -> prompt -> generate -> cite -> validate.

A LangChain Runnable over any retriever and any LangChain chat model or LLM (``ChatLlama`` /
``LlamaLLM`` by default; ``ChatOpenAI`` pointed at a llama.cpp server works too).  ``invoke``
returns a :class:`~llamachain.qa.QAResult`; ``stream`` yields :class:`~llamachain.qa.QAChunk`
pieces of the model's reply as it is generated, the last one carrying the result.

>>> qa = GroundedQA.from_knowledge_base("docs")            # doctest: +SKIP
>>> r = qa.invoke("How do I reset the device?")            # doctest: +SKIP
>>> r.answer, [c.label for c in r.citations]                # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import run_in_executor
from pydantic import ConfigDict, Field

from llamachain.errors import ConfigError
from llamachain.qa import _plan
from llamachain.qa._compose import compose
from llamachain.qa._plan import Plan
from llamachain.qa.citations import ReplyView
from llamachain.qa.config import QAConfig
from llamachain.qa.memory import ConversationMemory
from llamachain.qa.result import QAChunk, QAResult

if TYPE_CHECKING:
    from llamachain.knowledge import KnowledgeBase
    from llamachain.settings import Settings

log = logging.getLogger(__name__)


def _question_of(value: Any) -> tuple[str, dict[str, Any]]:
    """``(question, options)`` from a string or a ``{"question": ..., "filter": ...}`` dict."""
    if isinstance(value, str):
        question, options = value, {}
    elif isinstance(value, dict):
        question = value.get("question") or value.get("query") or value.get("input") or ""
        options = {k: v for k, v in value.items() if k in ("filter", "k")}
    else:
        content = getattr(value, "content", None)
        if not isinstance(content, str):
            raise ConfigError(
                "GroundedQA takes a question string or a dict with a 'question' key, "
                f"not {type(value).__name__}"
            )
        question, options = content, {}
    if not str(question).strip():
        raise ConfigError("the question is empty")
    return str(question).strip(), options


class GroundedQA(RunnableSerializable[Any, QAResult]):
    """Answers questions from retrieved chunks, citing them, or says the documents do not.

    ``llm`` is any LangChain chat model or LLM; ``retriever`` any LangChain retriever
    (:class:`~llamachain.retrievers.HybridRetriever` adds filters and abstention statistics).
    ``memory`` (a :class:`ConversationMemory`) makes follow-up questions work.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: Any
    llm: Any
    config: QAConfig = Field(default_factory=QAConfig)
    memory: ConversationMemory | None = None
    embeddings: Any = Field(
        default=None,
        description="For evidence scoring; default: the retriever's vector store's embeddings.",
    )

    @classmethod
    def from_knowledge_base(
        cls,
        kb: str | KnowledgeBase,
        *,
        llm: Any = None,
        settings: Settings | None = None,
        memory: ConversationMemory | None = None,
        **options: Any,
    ) -> GroundedQA:
        """A chain over a knowledge base (by name or object) and ``llm`` (default:
        :class:`~llamachain.ChatLlama` on the settings' model, greedy)."""
        from llamachain.knowledge import KnowledgeBase
        from llamachain.settings import Settings

        if isinstance(kb, str):
            settings = settings or Settings()
            kb = KnowledgeBase(kb, settings=settings, create=False)
        settings = settings or kb.settings
        config = QAConfig.from_settings(settings, **options)
        if llm is None:
            from llamachain.chat_models import ChatLlama

            llm = ChatLlama(
                settings=settings,
                temperature=config.temperature,
                seed=0,
                flash_attn=config.prompt_lookup > 0,  # checked drafts stay exact
            )
        retriever = kb.retriever(k=config.k)
        return cls(
            retriever=retriever, llm=llm, config=config, memory=memory, embeddings=kb.embeddings
        )

    # ---- the Runnable interface -----------------------------------------------------------
    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> QAResult:
        result: QAResult | None = None
        for chunk in self.stream(input, config, **kwargs):
            if chunk.result is not None:
                result = chunk.result
        assert result is not None
        return result

    async def ainvoke(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> QAResult:
        result: QAResult | None = None
        async for chunk in self.astream(input, config, **kwargs):
            if chunk.result is not None:
                result = chunk.result
        assert result is not None
        return result

    # The stream's pieces are QAChunks, not partial QAResults: the reply's text as it is
    # generated, then one chunk carrying the whole result (QAChunk + QAChunk adds up).
    def stream(  # type: ignore[override]
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[QAChunk]:
        yield from self._transform_stream_with_config(  # type: ignore[misc]
            iter([input]),
            self._run,  # type: ignore[arg-type]
            config,
            **kwargs,
        )

    async def astream(  # type: ignore[override]
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[QAChunk]:
        async for chunk in self._atransform_stream_with_config(
            _aiter_one(input),
            self._arun,  # type: ignore[arg-type]
            config,
            **kwargs,
        ):
            yield chunk  # type: ignore[misc]

    def __call__(self, question: str, **options: Any) -> QAResult:
        """Plain-function use: ``qa("question")``."""
        return self.invoke({"question": question, **options})

    # ---- the pipeline ---------------------------------------------------------------------
    @property
    def _stop_after(self) -> int:
        """Sentences after which the model is stopped (never inside a structured reply)."""
        return 0 if self.config.structured else self.config.reply_sentences

    def _view(self, plan: Plan) -> ReplyView:
        """The streamed text: the reply as it will be shown (see :class:`ReplyView`)."""
        return ReplyView(self._stop_after, [c.n for c in plan.packed if c.n is not None])

    def _take(
        self, reply: _plan.Reply, view: ReplyView, piece: Any, plan: Plan
    ) -> tuple[str, bool]:
        """Add a piece of the model's reply: the text to stream now, and whether to stop."""
        reply.add(piece, plan)
        return view.update(reply.text), reply.enough(self._stop_after)

    def _run(self, inputs: Iterator[Any], config: RunnableConfig) -> Iterator[QAChunk]:
        started = time.perf_counter()
        question, options = _question_of(next(iter(inputs)))
        timings: dict[str, float] = {}
        standalone = self._standalone(question, config, timings)
        t = time.perf_counter()
        docs = _plan.retrieve(self.retriever, standalone, self.config, options, config)
        timings["retrieve"] = time.perf_counter() - t
        plan = _plan.make(self, question, standalone, docs, timings, started)
        if plan.abstain is not None:
            yield QAChunk("", self._result(plan, "", None))
            return
        reply, view = _plan.Reply(), self._view(plan)
        pieces = _plan.generate(self.llm, plan, config)
        try:
            for piece in pieces:
                text, stop = self._take(reply, view, piece, plan)
                if text:
                    yield QAChunk(text)
                if stop:
                    break
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()  # stops the model's generation at once
        rest = view.update(reply.text, final=True)
        if rest:
            yield QAChunk(rest)
        yield QAChunk("", self._finish(plan, reply))

    async def _arun(
        self, inputs: AsyncIterator[Any], config: RunnableConfig
    ) -> AsyncIterator[QAChunk]:
        started = time.perf_counter()
        first = None
        async for value in inputs:
            first = value
            break
        question, options = _question_of(first)
        timings: dict[str, float] = {}
        standalone = await self._astandalone(question, config, timings)
        t = time.perf_counter()
        docs = await _plan.aretrieve(self.retriever, standalone, self.config, options, config)
        timings["retrieve"] = time.perf_counter() - t
        plan = await run_in_executor(
            None, _plan.make, self, question, standalone, docs, timings, started
        )
        if plan.abstain is not None:
            yield QAChunk("", self._result(plan, "", None))
            return
        reply, view = _plan.Reply(), self._view(plan)
        apieces = _plan.agenerate(self.llm, plan, config)
        try:
            async for piece in apieces:
                text, stop = self._take(reply, view, piece, plan)
                if text:
                    yield QAChunk(text)
                if stop:
                    break
        finally:
            await apieces.aclose()
        rest = view.update(reply.text, final=True)
        if rest:
            yield QAChunk(rest)
        result = await run_in_executor(None, self._finish, plan, reply)
        yield QAChunk("", result)

    def _standalone(self, question: str, config: RunnableConfig, timings: dict[str, float]) -> str:
        memory = self.memory
        if memory is None or not memory.needs_rewrite(question):
            return question
        t = time.perf_counter()
        messages = memory.rewrite_messages(question)
        text = _plan.complete(self.llm, messages, config, max_tokens=48)
        timings["rewrite"] = time.perf_counter() - t
        return memory.accept(question, text)

    async def _astandalone(
        self, question: str, config: RunnableConfig, timings: dict[str, float]
    ) -> str:
        memory = self.memory
        if memory is None or not memory.needs_rewrite(question):
            return question
        t = time.perf_counter()
        messages = memory.rewrite_messages(question)
        text = await _plan.acomplete(self.llm, messages, config, max_tokens=48)
        timings["rewrite"] = time.perf_counter() - t
        return memory.accept(question, text)

    def _finish(self, plan: Plan, reply: _plan.Reply) -> QAResult:
        if plan.first_token_at is None and reply.first_at is not None:
            plan.first_token_at = reply.first_at
        if not reply.usage:  # the model reports none, or the stream was cut short
            count = plan.count or (lambda text: len(text) // 3 + 1)
            reply.usage = {
                "input_tokens": plan.prompt_tokens,
                "output_tokens": count(reply.text) if reply.text else 0,
                "cache_read": 0,
            }
        plan.timings["generate"] = time.perf_counter() - plan.generate_started
        return self._result(plan, reply.text, reply)

    def _result(self, plan: Plan, text: str, reply: _plan.Reply | None) -> QAResult:
        t = time.perf_counter()
        if plan.abstain is not None:
            from llamachain.qa._compose import abstention

            composed = abstention(plan.abstain)
        else:
            composed = compose(
                plan.standalone,
                text,
                plan.packed,
                plan.chunks,
                self.config,
                _plan.similarity(self),
            )
        timings = plan.timings
        timings["cite"] = time.perf_counter() - t
        if reply is not None and reply.first_at is not None:
            timings["first_token"] = reply.first_at - plan.started
        timings["total"] = time.perf_counter() - plan.started
        result = QAResult(
            question=plan.question,
            answer=composed.answer,
            citations=composed.citations,
            chunks=plan.chunks,
            abstained=composed.abstained,
            abstain_reason=composed.reason,
            model_answer=composed.model_answer,
            reply_shown=composed.reply_shown,
            support=composed.support,
            quote=composed.quote,
            standalone_question=plan.standalone if plan.standalone != plan.question else None,
            relevance=plan.relevance.coverage if plan.relevance is not None else None,
            usage=reply.usage if reply is not None else {},
            timings=dict(timings),
            finish_reason=reply.finish_reason if reply is not None else None,
        )
        if self.memory is not None:
            self.memory.add(plan.question, plan.standalone, result.answer)
        return result


async def _aiter_one(value: Any) -> AsyncIterator[Any]:
    yield value
