"""What ``ChatLlama`` and ``LlamaLLM`` share: their fields, the engine, and message conversion."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.language_models.base import LangSmithParams
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from llamachain.engine import LlamaEngine, SamplingParams
from llamachain.engine.generation import Chunk, TokenLogprob
from llamachain.errors import ConfigError
from llamachain.settings import Settings

# Per-call keyword arguments that both classes accept (ChatLlama adds tools / tool_choice).
CALL_KWARGS = frozenset(
    {
        "json_schema",
        "grammar",
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "repeat_penalty",
        "seed",
        "logprobs",
        "top_logprobs",
        "timeout",
        "prompt_lookup",
    }
)


class LlamaParams(BaseModel):
    """Fields common to the LangChain classes.  Construction never touches the model file."""

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

    model: str | None = Field(
        default=None,
        alias="model_path",
        description="GGUF file path or known model name; None: the bundled default model.",
    )
    n_ctx: int | None = Field(default=None, description="Context window; None: the model's.")
    n_threads: int | None = None
    n_batch: int | None = None
    chat_format: str | None = Field(
        default=None, description="Prompt format; None: the model's own chat template."
    )
    overflow: Literal["error", "truncate"] | None = None
    llama_verbose: bool | None = Field(
        default=None, description="Show llama.cpp's own log; None: the settings' value."
    )
    lora: list[tuple[str, float]] = Field(default_factory=list)
    prefix_cache: bool | None = Field(
        default=None,
        description="Reuse the KV cache of a shared prompt prefix; None: the settings' value.",
    )
    prefill_block: int | None = Field(
        default=None,
        description="Prompt evaluation block (tokens): larger prefills faster, reuses shared "
        "prefixes more coarsely; None: the settings' value (64).",
    )
    prefill_copy: str | None = Field(
        default=None,
        description="Evaluate prompts on a faster copy of the model: 'auto' (a Q8_0 copy of "
        "Q4_1/Q5_1 files), 'off', or a quantization type; None: the settings' value (auto).",
    )
    flash_attn: bool | None = Field(
        default=None,
        description="llama.cpp's flash-attention kernel: batch-invariant, so prompt lookup "
        "leaves greedy answers exactly as they are, but slower to decode at long contexts on "
        "a CPU; None: on when prompt_lookup is set, else off.",
    )

    max_tokens: int | None = Field(default=512, description="None: until the context is full.")
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    seed: int | None = None
    prompt_lookup: int = Field(
        default=0,
        description=(
            "Prompt-lookup decoding: draft up to this many tokens per step from text that "
            "already occurred (fast on answers that quote the prompt); 0: off.  Only at "
            "temperature=0 with repeat_penalty=1.0, no grammar, JSON schema or logprobs."
        ),
    )
    stop: list[str] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    timeout: float | None = Field(
        default=None, description="Stop generating after this many seconds (finish 'timeout')."
    )
    max_retries: int = Field(
        default=0, description="Accepted for API compatibility; local calls are not retried."
    )
    streaming: bool = False

    # A LlamaEngine, or any object with the same methods (see llamachain.testing.FakeEngine).
    engine_: Any = Field(default=None, alias="engine", exclude=True)
    settings_: Settings | None = Field(default=None, alias="settings", exclude=True)
    _engine_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def engine(self) -> Any:
        """The engine (created on first use; the model itself loads on first generation)."""
        with self._engine_lock:
            if self.engine_ is None:
                self.engine_ = LlamaEngine(
                    self.model,
                    n_ctx=self.n_ctx,
                    n_threads=self.n_threads,
                    n_batch=self.n_batch,
                    chat_format=self.chat_format,
                    overflow=self.overflow,
                    verbose=self.llama_verbose,
                    lora=self.lora,
                    prefix_cache=self.prefix_cache,
                    prefill_block=self.prefill_block,
                    prefill_copy=self.prefill_copy,
                    flash_attn=(
                        self.prompt_lookup > 0 if self.flash_attn is None else self.flash_attn
                    ),
                    settings=self.settings_,
                )
            return self.engine_

    @property
    def model_name(self) -> str:
        if self.engine_ is not None:
            return self.engine_.model_name
        if self.model is None:
            from llamachain.models.registry import DEFAULT_MODEL

            return DEFAULT_MODEL
        return str(self.model).rsplit("/", 1)[-1]

    def _identifying_params_common(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "n_ctx": self.n_ctx,
            "chat_format": self.chat_format,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "repeat_penalty": self.repeat_penalty,
            "seed": self.seed,
        }

    def _ls_params(
        self, model_type: Literal["chat", "llm"], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="llamachain",
            ls_model_name=kwargs.get("model") or self.model_name,
            ls_model_type=model_type,
            ls_temperature=kwargs.get("temperature", self.temperature),
        )
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        ls_stop = stop or kwargs.get("stop") or self.stop
        if ls_stop:
            params["ls_stop"] = list(ls_stop)
        return params

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids with the model's own tokenizer."""
        return list(self.engine.tokenize(text))

    def get_num_tokens(self, text: str) -> int:
        return int(self.engine.count_tokens(text))

    @staticmethod
    def _check_call_kwargs(kwargs: dict[str, Any], allowed: frozenset[str], who: str) -> None:
        unknown = set(kwargs) - allowed
        if unknown:
            raise ConfigError(
                f"unknown argument(s) {', '.join(sorted(unknown))}; {who} accepts: "
                f"{', '.join(sorted(allowed))}"
            )

    def sampling_params(self, stop: Sequence[str] | None, kwargs: dict[str, Any]) -> SamplingParams:
        """Construction-time parameters overridden by per-call keyword arguments."""

        def pick(name: str) -> Any:
            return kwargs[name] if name in kwargs else getattr(self, name)

        logprobs = pick("logprobs")
        top = pick("top_logprobs")
        base = SamplingParams(
            max_tokens=pick("max_tokens"),
            temperature=pick("temperature"),
            top_p=pick("top_p"),
            top_k=pick("top_k"),
            min_p=pick("min_p"),
            repeat_penalty=pick("repeat_penalty"),
            seed=pick("seed"),
            prompt_lookup=pick("prompt_lookup"),
            stop=tuple(self.stop or ()),
            logprobs=(top or 0) if (logprobs or top) else None,
            grammar=kwargs.get("grammar"),
            json_schema=kwargs.get("json_schema"),
        )
        return base.with_stop(stop or ())

    def close(self) -> None:
        """Release the model (it stays loaded while other objects share it)."""
        if self.engine_ is not None:
            self.engine_.close()


def logprobs_payload(lps: Sequence[TokenLogprob]) -> dict[str, Any]:
    """OpenAI-shaped logprobs, the form LangChain users already parse."""
    return {
        "content": [
            {
                "token": lp.token,
                "logprob": lp.logprob,
                "bytes": list(lp.token.encode("utf-8")),
                "top_logprobs": [
                    {"token": t, "logprob": v, "bytes": list(t.encode("utf-8"))} for t, v in lp.top
                ],
            }
            for lp in lps
        ]
    }


def usage_dict(chunk: Chunk) -> dict[str, Any] | None:
    if chunk.usage is None:
        return None
    u = chunk.usage
    return {
        "input_tokens": u.prompt_tokens,
        "output_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "input_token_details": {"cache_read": u.cached_tokens},
    }
