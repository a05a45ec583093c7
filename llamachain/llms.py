"""``LlamaLLM``: a LangChain text-completion LLM over a local GGUF model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseLLM
from langchain_core.language_models.base import LangSmithParams
from langchain_core.outputs import Generation, GenerationChunk, LLMResult

from llamachain._lc_common import CALL_KWARGS, LlamaParams, logprobs_payload, usage_dict
from llamachain.engine.generation import Chunk


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
        return {**self._identifying_params_common(), "use_chat_template": self.use_chat_template}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return self._ls_params("llm", stop, kwargs)

    def _source(self, prompt: str, stop: list[str] | None, kwargs: dict[str, Any]) -> Any:
        self._check_call_kwargs(kwargs, CALL_KWARGS, "LlamaLLM")
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

    def _result(self, merged: list[tuple[Generation, dict[str, int]]]) -> LLMResult:
        totals = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
        for _, usage in merged:
            for k in totals:
                totals[k] += int(usage.get(k, 0))
        return LLMResult(
            generations=[[gen] for gen, _ in merged],
            llm_output={"token_usage": totals, "model_name": self.model_name},
        )

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        return self._result(
            [self._merge(list(self._stream(p, stop, run_manager, **kwargs))) for p in prompts]
        )

    async def _agenerate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        merged = []
        for prompt in prompts:
            chunks = [c async for c in self._astream(prompt, stop, run_manager, **kwargs)]
            merged.append(self._merge(chunks))
        return self._result(merged)
