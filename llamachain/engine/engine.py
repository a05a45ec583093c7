"""``LlamaEngine``: the LangChain-free owner of a loaded llama.cpp model.

One engine = one model file + load parameters + prompt format.  Construction touches no file;
the model is validated and loaded on first use and shared through :data:`model_cache`.
Every generation holds the model's lock, so any number of threads can share one engine.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from collections.abc import AsyncIterator, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from llamachain.engine import _encoder
from llamachain.engine._async import aiter_in_thread
from llamachain.engine._native import detokenize, physical_cores
from llamachain.engine._prefill_copy import check_setting, choose
from llamachain.engine.cache import LoadedModel, LoadParams, ModelCache, model_cache
from llamachain.engine.generation import (
    Chunk,
    Completion,
    SamplingParams,
)
from llamachain.engine.templates import (
    DEFAULT_FALLBACK,
    ChatFormat,
    Message,
    from_jinja,
    get_format,
)
from llamachain.errors import ConfigError, ContextOverflowError
from llamachain.models.gguf_info import ModelInfo, read_model_info
from llamachain.models.registry import resolve_model_path
from llamachain.settings import Settings

logger = logging.getLogger(__name__)

Overflow = Literal["error", "truncate"]


class ContextTruncatedWarning(UserWarning):
    """The prompt was cut to fit the context window (``overflow='truncate'``)."""


@lru_cache(maxsize=64)
def _compile_grammar(kind: str, text: str) -> Any:
    from llama_cpp.llama_grammar import LlamaGrammar

    try:
        if kind == "json_schema":
            return LlamaGrammar.from_json_schema(text, verbose=False)
        return LlamaGrammar.from_string(text, verbose=False)
    except Exception as e:
        raise ConfigError(f"invalid {kind.replace('_', ' ')}: {e}") from e


class LlamaEngine:
    """A llama.cpp model with its tokenizer, prompt format and generation loop."""

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        n_batch: int | None = None,
        chat_format: str | None = None,
        overflow: Overflow | None = None,
        verbose: bool | None = None,
        embedding: bool = False,
        lora: Sequence[tuple[str, float]] = (),
        flash_attn: bool = False,
        prefix_cache: bool | None = None,
        prefill_block: int | None = None,
        prefix_snapshots: int | None = None,
        prefix_snapshot_bytes: int | None = None,
        prefill_copy: str | None = None,
        settings: Settings | None = None,
        cache: ModelCache | None = None,
    ) -> None:
        s = settings or Settings()
        self.settings = s
        self.model = model if model is not None else s.model
        self._n_ctx = n_ctx if n_ctx is not None else s.n_ctx
        self.n_threads = n_threads or s.n_threads or physical_cores()
        self.n_batch = n_batch or s.n_batch
        self.chat_format_name = chat_format if chat_format is not None else s.chat_format
        if self.chat_format_name not in (None, "auto", "gguf"):
            get_format(self.chat_format_name)  # fail fast, listing valid names
        self.overflow: Overflow = overflow or s.overflow
        if self.overflow not in ("error", "truncate"):
            raise ConfigError(f"overflow must be 'error' or 'truncate', got {self.overflow!r}")
        self.verbose = s.verbose if verbose is None else verbose
        self.embedding = embedding
        # Reusing the KV cache of a shared prompt prefix skips re-evaluating it, but llama.cpp's
        # logits are not bit-identical across batch splits, so a greedy answer can depend on
        # what was asked before.  prefix_cache=False trades that speed for exact repeatability.
        self.prefix_cache = s.prefix_cache if prefix_cache is None else prefix_cache
        # Prompts are evaluated in blocks of this size at fixed positions (see _decode.prefill):
        # smaller blocks reuse more of a shared prefix, larger ones prefill faster.
        self.prefill_block = s.prefill_block if prefill_block is None else prefill_block
        if isinstance(self.prefill_block, bool) or not (
            isinstance(self.prefill_block, int) and self.prefill_block >= 1
        ):
            raise ConfigError(f"prefill_block must be an integer >= 1, got {prefill_block!r}")
        # Saved KV states of shared prompt prefixes, kept by the loaded model (so shared by
        # every engine on it): at most this many snapshots / bytes.  None keeps the model's
        # bounds (8 / 256 MiB unless another engine set them); 0 snapshots turns them off.
        for name, value in (
            ("prefix_snapshots", prefix_snapshots),
            ("prefix_snapshot_bytes", prefix_snapshot_bytes),
        ):
            if value is not None and (isinstance(value, bool) or value < 0):
                raise ConfigError(f"{name} must be an integer >= 0 (0: off), got {value!r}")
        self.prefix_snapshots = prefix_snapshots
        self.prefix_snapshot_bytes = prefix_snapshot_bytes
        # Prompts of Q4_1/Q5_1 files are evaluated on a Q8_0 copy ("auto"): see _prefill_copy.
        self.prefill_copy = check_setting(
            prefill_copy if prefill_copy is not None else s.prefill_copy
        )
        from llamachain.engine._lora import check_scale

        # absolute paths: the same adapter named two ways is one cached model, not two
        self.lora = tuple((str(Path(p).expanduser().absolute()), check_scale(sc)) for p, sc in lora)
        # llama.cpp's flash-attention kernel gives the same logits for a token whatever batch
        # it is evaluated in, so prompt-lookup drafts checked in one batch leave greedy answers
        # exactly as they are; the default kernel does not (differences up to ~1 logit).  But
        # on a CPU the flash kernel decodes more slowly once the context grows: 1.27x slower
        # at 2,000 tokens and 1.56x at 4,000 on the bundled model (benchmarks/README.md,
        # bench_batch.py).  Off unless asked for (llama-cpp-python's default too); the
        # LangChain classes ask for it when they are built with prompt_lookup.
        self.flash_attn = flash_attn
        self._cache = cache if cache is not None else model_cache
        self._loaded_model: LoadedModel | None = None
        self._format: ChatFormat | None = None
        self._lock = threading.Lock()

    # -- model file and loading -------------------------------------------------------------

    @property
    def model_path(self) -> Path:
        return resolve_model_path(self.model, self.settings.home)

    @property
    def info(self) -> ModelInfo:
        """GGUF metadata (validates the file; does not load it)."""
        return read_model_info(self.model_path)

    @property
    def model_name(self) -> str:
        if self.model is None:
            from llamachain.models.registry import DEFAULT_MODEL

            return DEFAULT_MODEL
        return Path(str(self.model)).name

    def load_params(self) -> LoadParams:
        info = self.info
        trained = info.context_length or 4096
        if self._n_ctx:
            n_ctx = self._n_ctx
            if n_ctx > trained:
                logger.warning(
                    "n_ctx=%d is larger than the %d tokens %s was trained on; quality may drop",
                    n_ctx,
                    trained,
                    info.path,
                )
        else:
            n_ctx = min(trained, self.settings.context_cap)
        return LoadParams(
            path=info.path,
            n_ctx=n_ctx,
            n_threads=self.n_threads,
            n_batch=self.n_batch,
            embedding=self.embedding,
            verbose=self.verbose,
            lora=self.lora,
            flash_attn=self.flash_attn,
            prefill_type="" if self.embedding or self.lora else choose(self.prefill_copy, info),
        )

    def _loaded(self) -> LoadedModel:
        with self._lock:
            m = self._loaded_model
            if m is None or m.closed:
                if m is not None:
                    self._cache.release(m)
                m = self._cache.acquire(self.load_params())
                self._loaded_model = m
                if self.prefix_snapshots is not None or self.prefix_snapshot_bytes is not None:
                    snaps = m.snapshots
                    snaps.configure(
                        snaps.max_count if self.prefix_snapshots is None else self.prefix_snapshots,
                        snaps.max_bytes
                        if self.prefix_snapshot_bytes is None
                        else self.prefix_snapshot_bytes,
                    )
            return m

    def load(self) -> LlamaEngine:
        """Load now rather than on first use."""
        self._loaded()
        return self

    @property
    def is_loaded(self) -> bool:
        m = self._loaded_model
        return m is not None and not m.closed

    def close(self) -> None:
        """Release this engine's reference; the model is freed when nobody else holds it."""
        with self._lock:
            m, self._loaded_model = self._loaded_model, None
        if m is not None:
            self._cache.release(m)

    def __enter__(self) -> LlamaEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - interpreter shutdown order varies
        with contextlib.suppress(Exception):
            self.close()

    def snapshot_stats(self) -> dict[str, int]:
        """Counters of the loaded model's prefix snapshots (count, bytes, hits, ...)."""
        return self._loaded().snapshots.stats()

    def clear_snapshots(self) -> None:
        """Drop the loaded model's prefix snapshots (shared with engines on the same model)."""
        m = self._loaded_model
        if m is not None:
            m.snapshots.clear()

    @property
    def n_ctx(self) -> int:
        m = self._loaded_model
        return m.params.n_ctx if m is not None and not m.closed else self.load_params().n_ctx

    # -- tokenizer --------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]:
        """Token ids of ``text`` with the model's own tokenizer."""
        llama = self._loaded().llama
        return list(llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special))

    def detokenize(self, token_ids: Sequence[int], *, special: bool = False) -> str:
        llama = self._loaded().llama
        data = detokenize(llama._model.vocab, list(token_ids), special=special)
        return data.decode("utf-8", errors="replace")

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def prompt_tokens(self, prompt: str) -> list[int]:
        """Tokens for a full prompt: BOS as the model wants it, special tokens parsed."""
        m = self._loaded()
        llama = m.llama
        add_bos = bool(llama._model.add_bos_token())
        ids = list(llama.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True))
        bos = llama.token_bos()
        if len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
            ids = ids[1:]  # the template wrote BOS itself
        return ids

    # -- prompt format ----------------------------------------------------------------------

    @property
    def chat_format(self) -> ChatFormat:
        """The model's own template, or the named fallback (alpaca by default)."""
        if self._format is None:
            name = self.chat_format_name
            if name in (None, "auto", "gguf"):
                template = self.info.chat_template
                if template:
                    llama = self._loaded().llama
                    model = llama._model
                    bos = model.token_get_text(llama.token_bos()) if llama.token_bos() >= 0 else ""
                    eos = model.token_get_text(llama.token_eos()) if llama.token_eos() >= 0 else ""
                    self._format = from_jinja(template, bos, eos)
                elif name == "gguf":
                    raise ConfigError(
                        f"{self.info.path} has no chat template; pass chat_format= one of "
                        "alpaca, chatml, gemma, llama-2, llama-3, vicuna"
                    )
                else:
                    logger.info(
                        "%s has no chat template; using %s", self.info.path, DEFAULT_FALLBACK
                    )
                    self._format = get_format(DEFAULT_FALLBACK)
            else:
                self._format = get_format(name)
        return self._format

    def format_chat(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        return self.chat_format.render(messages, add_generation_prompt)

    # -- generation -------------------------------------------------------------------------

    def fit_prompt(
        self, tokens: list[int], max_tokens: int | None, overflow: Overflow | None = None
    ) -> tuple[list[int], int]:
        """Apply the overflow policy; return (tokens, how many new tokens may be generated)."""
        n_ctx = self.n_ctx
        policy = overflow or self.overflow
        want = max_tokens if max_tokens is not None else 1
        if len(tokens) + want <= n_ctx:
            return tokens, (max_tokens if max_tokens is not None else n_ctx - len(tokens))
        if policy == "error" or want >= n_ctx:
            raise ContextOverflowError(len(tokens), want, n_ctx)
        keep = n_ctx - want
        bos = self._loaded().llama.token_bos()
        head = tokens[:1] if tokens and tokens[0] == bos else []
        cut = tokens[len(tokens) - (keep - len(head)) :]
        msg = (
            f"prompt of {len(tokens)} tokens + max_tokens {want} exceeds the context window of "
            f"{n_ctx}; kept the newest {len(head) + len(cut)} prompt tokens"
        )
        logger.warning(msg)
        warnings.warn(msg, ContextTruncatedWarning, stacklevel=3)
        return head + cut, (max_tokens if max_tokens is not None else n_ctx - keep)

    def stream(
        self,
        prompt: str | Sequence[int],
        params: SamplingParams | None = None,
        *,
        overflow: Overflow | None = None,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
    ) -> Iterator[Chunk]:
        """Generate from a raw prompt; yields text chunks, the last one with usage.

        ``cancel`` (set from any thread) and ``timeout`` (seconds) end the generation at the
        next token with finish reason ``cancelled`` / ``timeout``.
        """
        params = params or SamplingParams()
        tokens = self.prompt_tokens(prompt) if isinstance(prompt, str) else list(prompt)
        if not tokens:
            raise ConfigError("the prompt is empty")
        tokens, max_new = self.fit_prompt(tokens, params.max_tokens, overflow)
        grammar = None
        if params.grammar is not None:
            grammar = _compile_grammar("gbnf", params.grammar)
        elif params.json_schema is not None:
            import json

            grammar = _compile_grammar("json_schema", json.dumps(params.json_schema))
        return _encoder.generate(
            self._loaded(),
            tokens,
            max_new,
            params,
            grammar,
            cancel,
            timeout,
            prefix_cache=self.prefix_cache,
            block=min(self.prefill_block, self.n_batch),
        )

    def complete(
        self,
        prompt: str | Sequence[int],
        params: SamplingParams | None = None,
        *,
        overflow: Overflow | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion:
        text = prompt if isinstance(prompt, str) else None
        return Completion.from_chunks(
            self.stream(prompt, params, overflow=overflow, cancel=cancel), prompt=text
        )

    def chat_prompt(
        self, messages: Sequence[Message], max_tokens: int | None, overflow: Overflow | None
    ) -> list[int]:
        """Render messages and fit them into the context; drops the oldest turns if allowed."""
        msgs = list(messages)
        tokens = self.prompt_tokens(self.format_chat(msgs))
        want = max_tokens if max_tokens is not None else 1
        if (overflow or self.overflow) == "truncate":
            dropped = 0
            while len(tokens) + want > self.n_ctx:
                idx = next((i for i, m in enumerate(msgs[:-1]) if m["role"] != "system"), None)
                if idx is None:
                    break
                del msgs[idx]
                dropped += 1
                tokens = self.prompt_tokens(self.format_chat(msgs))
            if dropped:
                msg = f"dropped the {dropped} oldest message(s) to fit the context window"
                logger.warning(msg)
                warnings.warn(msg, ContextTruncatedWarning, stacklevel=3)
        return tokens

    def chat_stream(
        self,
        messages: Sequence[Message],
        params: SamplingParams | None = None,
        *,
        overflow: Overflow | None = None,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
    ) -> Iterator[Chunk]:
        """Generate the assistant's reply to ``messages`` with the model's prompt format."""
        params = (params or SamplingParams()).with_stop(self.chat_format.stop)
        tokens = self.chat_prompt(messages, params.max_tokens, overflow)
        return self.stream(tokens, params, overflow=overflow, cancel=cancel, timeout=timeout)

    def chat(
        self,
        messages: Sequence[Message],
        params: SamplingParams | None = None,
        *,
        overflow: Overflow | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion:
        return Completion.from_chunks(
            self.chat_stream(messages, params, overflow=overflow, cancel=cancel)
        )

    async def astream(
        self,
        prompt: str | Sequence[int],
        params: SamplingParams | None = None,
        *,
        overflow: Overflow | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Chunk]:
        """Async :meth:`stream`: runs in a worker thread; stopping early stops generation."""
        async for chunk in aiter_in_thread(
            lambda cancel: self.stream(
                prompt, params, overflow=overflow, cancel=cancel, timeout=timeout
            )
        ):
            yield chunk

    async def achat_stream(
        self,
        messages: Sequence[Message],
        params: SamplingParams | None = None,
        *,
        overflow: Overflow | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Chunk]:
        async for chunk in aiter_in_thread(
            lambda cancel: self.chat_stream(
                messages, params, overflow=overflow, cancel=cancel, timeout=timeout
            )
        ):
            yield chunk
