"""``LlamaLLM``: a LangChain text-completion LLM over a local GGUF model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseLLM
from langchain_core.language_models.base import LangSmithParams
from langchain_core.outputs import Generation, GenerationChunk, LLMResult

from llamachain._lc_common import LlamaParams, logprobs_payload, usage_dict
from llamachain.engine.generation import Chunk
from llamachain.errors import ConfigError

_CALL_KWARGS = {
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
}


class LlamaLLM(LlamaParams, BaseLLM):
    """Complete text with a local GGUF model through llama.cpp.

    By default the prompt goes to the model as it is.  With ``use_chat_template=True`` it is
    sent as one user message wrapped in the model's chat template (or ``chat_format``), which
    is what instruction-tuned models expect.
    """

    use_chat_template: bool = False
    system_prompt: str | None = None

    @property
    def _llm_type(self) -> str:
        return "llamachain-llm"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "n_ctx": self.n_ctx,
            "use_chat_template": self.use_chat_template,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "repeat_penalty": self.repeat_penalty,
            "seed": self.seed,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="llamachain",
            ls_model_name=kwargs.get("model") or self.model_name,
            ls_model_type="llm",
            ls_temperature=kwargs.get("temperature", self.temperature),
        )
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        ls_stop = stop or self.stop
        if ls_stop:
            params["ls_stop"] = list(ls_stop)
        return params

    def get_token_ids(self, text: str) -> list[int]:
        return self.engine.tokenize(text)

    def get_num_tokens(self, text: str) -> int:
        return self.engine.count_tokens(text)

    def _source(self, prompt: str, stop: list[str] | None, kwargs: dict[str, Any]) -> Any:
        unknown = set(kwargs) - _CALL_KWARGS
        if unknown:
            raise ConfigError(
                f"unknown argument(s) {', '.join(sorted(unknown))}; LlamaLLM accepts: "
                f"{', '.join(sorted(_CALL_KWARGS))}"
            )
        params = self.sampling_params(stop, kwargs)
        timeout = kwargs.get("timeout", self.timeout)
        if self.use_chat_template:
            messages = []
            if self.system_prompt:
                messages.append({"role": "system", "content": self.system_prompt})
            messages.append({"role": "user", "content": prompt})
            return lambda cancel=None: self.engine.chat_stream(
                messages, params, cancel=cancel, timeout=timeout
            ), (messages, params, timeout)
        return lambda cancel=None: self.engine.stream(
            prompt, params, cancel=cancel, timeout=timeout
        ), None

    def _chunk(self, chunk: Chunk) -> GenerationChunk:
        info: dict[str, Any] = {}
        if chunk.logprobs:
            info["logprobs"] = logprobs_payload(chunk.logprobs)
        if chunk.finish_reason is not None:
            info.update(
                finish_reason=chunk.finish_reason,
                model_name=self.model_name,
                usage=usage_dict(chunk),
            )
        return GenerationChunk(text=chunk.text, generation_info=info or None)

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        make, _ = self._source(prompt, stop, kwargs)
        for chunk in make():
            out = self._chunk(chunk)
            if run_manager and out.text:
                run_manager.on_llm_new_token(out.text, chunk=out)
            yield out

    async def _astream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[GenerationChunk]:
        from llamachain.engine._async import aiter_in_thread

        make, _ = self._source(prompt, stop, kwargs)
        async for chunk in aiter_in_thread(lambda cancel: make(cancel)):
            out = self._chunk(chunk)
            if run_manager and out.text:
                await run_manager.on_llm_new_token(out.text, chunk=out)
            yield out

    @staticmethod
    def _merge(chunks: list[GenerationChunk]) -> tuple[Generation, dict[str, int]]:
        total: GenerationChunk | None = None
        for c in chunks:
            total = c if total is None else total + c
        assert total is not None
        info = dict(total.generation_info or {})
        usage = info.get("usage") or {}
        return Generation(text=total.text, generation_info=info), usage

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        generations = []
        totals = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
        for prompt in prompts:
            gen, usage = self._merge(list(self._stream(prompt, stop, run_manager, **kwargs)))
            generations.append([gen])
            for k in totals:
                totals[k] += int(usage.get(k, 0))
        return LLMResult(
            generations=generations,
            llm_output={"token_usage": totals, "model_name": self.model_name},
        )

    async def _agenerate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        generations = []
        totals = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
        for prompt in prompts:
            chunks = [c async for c in self._astream(prompt, stop, run_manager, **kwargs)]
            gen, usage = self._merge(chunks)
            generations.append([gen])
            for k in totals:
                totals[k] += int(usage.get(k, 0))
        return LLMResult(
            generations=generations,
            llm_output={"token_usage": totals, "model_name": self.model_name},
        )
