"""The chain's steps between retrieval and composing: relevance, packing, prompt, generation.

Kept apart from :mod:`llamachain.qa.chain` so that the Runnable plumbing and the pipeline's
logic each stay readable.  Works with any LangChain chat model or LLM: llamachain's own get
``max_tokens``/``temperature`` (and the structured-output JSON schema) per call; other models
keep their own settings and get the stop sequences.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import RunnableConfig

from llamachain.errors import ContextOverflowError
from llamachain.qa import relevance as rel
from llamachain.qa.citations import structured_schema
from llamachain.qa.config import QAConfig
from llamachain.qa.evidence import embedder_similarity
from llamachain.qa.packing import pack
from llamachain.qa.prompt import QAPrompt, render_source
from llamachain.qa.result import SourceChunk

if TYPE_CHECKING:
    from langchain_core.documents import Document

    from llamachain.qa.chain import GroundedQA

log = logging.getLogger(__name__)
_MARGIN = 8  # tokens kept free for the separators between sources


@dataclass
class Plan:
    question: str
    standalone: str
    chunks: list[SourceChunk]
    packed: list[SourceChunk]
    prompt: Any  # messages for a chat model, text for an LLM
    kwargs: dict[str, Any]
    relevance: rel.Relevance | None
    abstain: str | None
    timings: dict[str, float]
    started: float
    generate_started: float = 0.0
    first_token_at: float | None = None
    prompt_tokens: int = 0  # counted with the model's tokenizer
    count: Callable[[str], int] | None = None


def is_chat(llm: Any) -> bool:
    from langchain_core.language_models import BaseChatModel

    return isinstance(llm, BaseChatModel)


def is_ours(llm: Any) -> bool:
    from llamachain._lc_common import LlamaParams

    return isinstance(llm, LlamaParams)


# ---- retrieval ---------------------------------------------------------------------------
def _retrieve_kwargs(retriever: Any, cfg: QAConfig, options: dict[str, Any]) -> dict[str, Any]:
    from llamachain.retrievers import HybridRetriever

    if isinstance(retriever, HybridRetriever):
        kw: dict[str, Any] = {"k": options.get("k") or cfg.k}
        if options.get("filter") is not None:
            kw["filter"] = options["filter"]
        return kw
    return {}


def retrieve(
    retriever: Any, question: str, cfg: QAConfig, options: dict[str, Any], config: RunnableConfig
) -> list[Document]:
    return list(retriever.invoke(question, config, **_retrieve_kwargs(retriever, cfg, options)))


async def aretrieve(
    retriever: Any, question: str, cfg: QAConfig, options: dict[str, Any], config: RunnableConfig
) -> list[Document]:
    kw = _retrieve_kwargs(retriever, cfg, options)
    return list(await retriever.ainvoke(question, config, **kw))


def to_chunks(docs: Sequence[Document]) -> list[SourceChunk]:
    out = []
    for rank, d in enumerate(docs, start=1):
        m = d.metadata or {}
        source = str(m.get("source") or m.get("file_path") or "")
        out.append(
            SourceChunk(
                id=str(d.id or m.get("id") or f"chunk-{rank}"),
                text=d.page_content,
                source=source,
                file_name=str(m.get("file_name") or (Path(source).name if source else "")),
                section=str(m.get("heading") or ""),
                page=m.get("page") if isinstance(m.get("page"), int) else None,
                score=float(m.get("score", 0.0) or 0.0),
                rank=int(m.get("rank", rank) or rank),
                dense_score=m.get("dense_score"),
                bm25_score=m.get("bm25_score"),
                sources=tuple(str(x) for x in m.get("sources") or () if str(x) != source),
            )
        )
    return out


# ---- tokens ------------------------------------------------------------------------------
def context_window(llm: Any, cfg: QAConfig) -> int:
    if cfg.context_window:
        return cfg.context_window
    engine = getattr(llm, "engine", None)
    n_ctx = getattr(engine, "n_ctx", None)
    return int(n_ctx) if isinstance(n_ctx, int) and n_ctx > 0 else 4096


def token_counter(llm: Any) -> Callable[[str], int]:
    """The model's own ``get_num_tokens``; a length estimate when it cannot count offline."""
    try:
        llm.get_num_tokens("probe")
        return lambda text: int(llm.get_num_tokens(text))
    except Exception as e:  # e.g. tiktoken with no cached encoding on an offline machine
        log.warning(
            "%s cannot count tokens (%s); estimating 1 token per 3 characters",
            type(llm).__name__,
            e,
        )
        return lambda text: len(text) // 3 + 1


def prompt_tokens(llm: Any, prompt: Any, count: Callable[[str], int]) -> int:
    if isinstance(prompt, str):
        return count(prompt)
    try:
        return int(llm.get_num_tokens_from_messages(prompt))
    except Exception:
        return sum(count(str(m.content)) + 4 for m in prompt)


# ---- the plan ----------------------------------------------------------------------------
def similarity(chain: GroundedQA) -> Callable[[str, Sequence[str]], Sequence[float]] | None:
    if not chain.config.evidence_embeddings:
        return None
    emb = chain.embeddings
    if emb is None:
        store = getattr(chain.retriever, "vectorstore", None)
        emb = getattr(store, "embeddings", None)
    return embedder_similarity(emb) if emb is not None else None


def _statistics(retriever: Any, question: str) -> tuple[int, dict[str, int]] | None:
    stats = getattr(retriever, "term_statistics", None)
    if stats is None:
        return None
    try:
        return stats(question)
    except Exception as e:
        log.debug("no term statistics from the retriever: %s", e)
        return None


def make(
    chain: GroundedQA,
    question: str,
    standalone: str,
    docs: Sequence[Document],
    timings: dict[str, float],
    started: float,
) -> Plan:
    """Relevance, packing and the prompt; ``abstain`` is set when the model need not run."""
    cfg, llm = chain.config, chain.llm
    t = time.perf_counter()
    chunks = to_chunks(docs)
    prompt_builder = QAPrompt(system=cfg.system_prompt)
    chat = is_chat(llm)

    def build(sources: Sequence[str]) -> Any:
        if chat:
            return prompt_builder.messages(sources, standalone)
        return prompt_builder.text(sources, standalone)

    if not chunks:
        timings["pack"] = time.perf_counter() - t
        return Plan(question, standalone, [], [], None, {}, None, "no_documents", timings, started)

    count = token_counter(llm)
    n_ctx = context_window(llm, cfg)
    base = prompt_tokens(llm, build([""]), count)
    budget = n_ctx - base - cfg.answer_tokens - _MARGIN
    if cfg.max_source_tokens is not None:
        budget = min(budget, cfg.max_source_tokens)
    if budget <= 0:
        raise ContextOverflowError(base, cfg.answer_tokens, n_ctx)

    def label(c: SourceChunk) -> str | None:
        if not cfg.show_sections:
            return None
        return f"{c.file_name} § {c.section}" if c.section else c.file_name or None

    rendered = [render_source(i + 1, c.text, label(c)) for i, c in enumerate(chunks)]
    packed = pack(rendered, budget, count, max_chunks=cfg.max_sources)
    chosen = [chunks[i] for i in packed.indices]
    if packed.truncated:
        first = chosen[0]
        body = packed.texts[0].split("\n", 1)[1] if "\n" in packed.texts[0] else packed.texts[0]
        chosen = [_replace_text(first, body.removesuffix(" …"))]
    sources = []
    for n, (c, tokens) in enumerate(zip(chosen, packed.tokens, strict=True), start=1):
        c.n, c.tokens = n, tokens
        sources.append(render_source(n, c.text, label(c)))
    if packed.truncated:
        chunks[packed.indices[0]] = chosen[0]
    # retrieved chunks that did not go in are numbered after the packed ones
    rest = [c for i, c in enumerate(chunks) if i not in packed.indices]
    for n, c in enumerate(rest, start=len(chosen) + 1):
        c.n, c.tokens = n, 0
    timings["pack"] = time.perf_counter() - t

    t = time.perf_counter()
    relevance = rel.assess(
        standalone,
        [c.text + " " + c.section for c in chosen],
        _statistics(chain.retriever, standalone),
        [c.text + " " + c.section for c in chunks],
    )
    unknown = cfg.abstain_on_unknown_names and bool(relevance.unknown_names)
    abstain = "weak_retrieval" if unknown or relevance.coverage < cfg.min_coverage else None
    timings["relevance"] = time.perf_counter() - t

    t = time.perf_counter()
    prompt = build(sources)
    size = prompt_tokens(llm, prompt, count)
    while sources and size + cfg.answer_tokens > n_ctx:
        chosen.pop().tokens = 0
        sources.pop()
        prompt = build(sources)
        size = prompt_tokens(llm, prompt, count)
    kwargs = _call_kwargs(llm, cfg, [c.n for c in chosen if c.n is not None])
    timings["prompt"] = time.perf_counter() - t
    plan = Plan(
        question, standalone, chunks, chosen, prompt, kwargs, relevance, abstain, timings, started
    )
    plan.prompt_tokens, plan.count = size, count
    return plan


def _replace_text(chunk: SourceChunk, text: str) -> SourceChunk:
    from dataclasses import replace

    return replace(chunk, text=text)


def _call_kwargs(llm: Any, cfg: QAConfig, valid: list[int]) -> dict[str, Any]:
    kw: dict[str, Any] = {"stop": list(cfg.stop)}
    if is_ours(llm):
        kw.update(max_tokens=cfg.answer_tokens, temperature=cfg.temperature, repeat_penalty=1.0)
        if cfg.prompt_lookup and "prompt_lookup" in _our_call_kwargs():
            kw["prompt_lookup"] = cfg.prompt_lookup
        if cfg.structured:
            kw["json_schema"] = structured_schema(valid)
            kw.pop("stop")
    else:
        if cfg.structured:
            kw = {"structured": structured_schema(valid)}
        kw.update(_length_kwargs(llm, cfg.answer_tokens))
    return kw


def _length_kwargs(llm: Any, max_tokens: int) -> dict[str, Any]:
    """``max_tokens`` for another model that has such a field (ChatOpenAI, ChatAnthropic, ...:
    they send call keywords with the request), so the answer budget the packing reserved is
    the one the model keeps to; nothing for a model that would reject the keyword."""
    fields = getattr(type(llm), "model_fields", None) or {}
    return {"max_tokens": max_tokens} if "max_tokens" in fields else {}


def _our_call_kwargs() -> frozenset[str]:
    from llamachain._lc_common import CALL_KWARGS

    return CALL_KWARGS


# ---- generation --------------------------------------------------------------------------
@dataclass
class Reply:
    """The model's reply as it streams: text, usage, finish reason, first-token time."""

    parts: list[str] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    finish_reason: str | None = None
    first_at: float | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def enough(self, sentences: int) -> bool:
        """Stop reading: the reply holds the sentences that will be shown, or it loops."""
        from llamachain.qa.citations import reply_complete

        if sentences and reply_complete(self.text, sentences=sentences):
            self.finish_reason = "stop"
            return True
        if self.looping():
            self.trim_loop()
            self.finish_reason = "repetition"
            return True
        return False

    def looping(self) -> bool:
        """Whether the reply started repeating a line (small models loop): stop reading."""
        text = self.text
        if "\n" not in text:
            return False
        lines = [ln.strip() for ln in text.split("\n")[:-1] if ln.strip()]
        return len(lines) != len(set(lines))

    def trim_loop(self) -> None:
        """Drop everything from the first repeated line on."""
        seen: set[str] = set()
        kept: list[str] = []
        for ln in self.text.split("\n"):
            key = ln.strip()
            if key and key in seen:
                break
            if key:
                seen.add(key)
            kept.append(ln)
        self.parts = ["\n".join(kept).rstrip()]

    def add(self, piece: Any, plan: Plan) -> None:
        if isinstance(piece, dict):  # a structured reply, whole
            text = json.dumps(piece)
        elif isinstance(piece, str):
            text = piece
        else:
            content = getattr(piece, "content", "")
            text = content if isinstance(content, str) else ""
            usage = getattr(piece, "usage_metadata", None)
            if usage:
                cache = (usage.get("input_token_details") or {}).get("cache_read", 0)
                self.usage = {
                    "input_tokens": int(usage.get("input_tokens", 0)),
                    "output_tokens": int(usage.get("output_tokens", 0)),
                    "cache_read": int(cache or 0),
                }
            meta = getattr(piece, "response_metadata", None) or {}
            if meta.get("finish_reason"):
                self.finish_reason = str(meta["finish_reason"])
        if text and self.first_at is None:
            self.first_at = time.perf_counter()
            plan.first_token_at = self.first_at
        self.parts.append(text)


def _stream_args(llm: Any, plan: Plan) -> tuple[Any, dict[str, Any]]:
    kw = dict(plan.kwargs)
    schema = kw.pop("structured", None)
    if schema is not None:  # another provider's structured output: no token stream
        return llm.with_structured_output(schema, method="json_schema"), kw
    return llm, kw


def generate(llm: Any, plan: Plan, config: RunnableConfig) -> Iterator[Any]:
    plan.generate_started = time.perf_counter()
    runnable, kw = _stream_args(llm, plan)
    yield from runnable.stream(plan.prompt, config, **kw)


async def agenerate(llm: Any, plan: Plan, config: RunnableConfig) -> AsyncGenerator[Any, None]:
    plan.generate_started = time.perf_counter()
    runnable, kw = _stream_args(llm, plan)
    async for piece in runnable.astream(plan.prompt, config, **kw):
        yield piece


def _rewrite_input(llm: Any, messages: list[dict[str, str]]) -> Any:
    if is_chat(llm):
        return [(m["role"] if m["role"] != "user" else "human", m["content"]) for m in messages]
    return "\n\n".join(m["content"] for m in messages)


def _rewrite_kwargs(llm: Any, max_tokens: int) -> dict[str, Any]:
    kw: dict[str, Any] = {"stop": ["\n"]}
    if is_ours(llm):
        kw.update(max_tokens=max_tokens, temperature=0.0)
    else:
        kw.update(_length_kwargs(llm, max_tokens))
    return kw


def _text(out: Any) -> str:
    content = getattr(out, "content", out)
    return content if isinstance(content, str) else str(content)


def complete(
    llm: Any, messages: list[dict[str, str]], config: RunnableConfig, max_tokens: int
) -> str:
    return _text(
        llm.invoke(_rewrite_input(llm, messages), config, **_rewrite_kwargs(llm, max_tokens))
    )


async def acomplete(
    llm: Any, messages: list[dict[str, str]], config: RunnableConfig, max_tokens: int
) -> str:
    out = await llm.ainvoke(
        _rewrite_input(llm, messages), config, **_rewrite_kwargs(llm, max_tokens)
    )
    return _text(out)
