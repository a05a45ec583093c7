"""``ChatLlama``: a LangChain chat model over a local GGUF model, via :class:`LlamaEngine`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from operator import itemgetter
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.language_models.chat_models import agenerate_from_stream, generate_from_stream
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import BaseModel

from llamachain import _tools
from llamachain._lc_common import CALL_KWARGS, LlamaParams, logprobs_payload, usage_dict
from llamachain.engine.generation import Chunk
from llamachain.errors import ConfigError

_CALL_KWARGS = CALL_KWARGS | {"tools", "tool_choice"}


def _text(content: str | list[Any]) -> str:
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") in ("text", "text-plain"):
            parts.append(str(block.get("text", "")))
        elif isinstance(block, dict) and block.get("type") in ("tool_use", "tool_call"):
            continue  # shown from message.tool_calls instead
        else:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise ConfigError(
                f"ChatLlama runs text-only models; a {kind!r} content block cannot be sent"
            )
    return "".join(parts)


def to_engine_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages -> ``{"role", "content"}`` dicts for the chat template."""
    out: list[dict[str, Any]] = []
    for m in messages:
        content = _text(m.content)
        if isinstance(m, SystemMessage):
            role = "system"
        elif isinstance(m, HumanMessage):
            role = "user"
        elif isinstance(m, AIMessage):
            role = "assistant"
            if m.tool_calls:
                calls = _tools.render_calls(m.tool_calls)
                content = f"{content}\n{calls}".strip()
        elif isinstance(m, (ToolMessage, FunctionMessage)):
            out.append({"role": "tool", "content": content, "name": getattr(m, "name", None)})
            continue
        elif isinstance(m, ChatMessage):
            role = m.role
        else:
            raise ConfigError(f"unsupported message type {type(m).__name__}")
        out.append({"role": role, "content": content})
    return out


def _check_complete(msg: AIMessage) -> None:
    reason = msg.response_metadata.get("finish_reason")
    if reason not in ("stop", "tool_calls"):
        raise OutputParserException(
            f"the structured reply ended early (finish_reason={reason!r}) before the JSON was "
            "complete; raise max_tokens or the timeout",
            llm_output=_text(msg.content),
        )


class _Reply:
    """Turns engine chunks into message chunks; holds text back while it may be a tool call."""

    def __init__(self, model_name: str, tools: list[dict[str, Any]], mode: str | None) -> None:
        self.model_name = model_name
        self.tools = tools
        self.mode = mode  # None: plain text; "auto": maybe a call; "forced": always a call
        self.held = ""
        self.releasing = mode is None

    def feed(self, chunk: Chunk) -> list[ChatGenerationChunk]:
        out: list[ChatGenerationChunk] = []
        meta: dict[str, Any] = {}
        if chunk.logprobs:
            meta["logprobs"] = logprobs_payload(chunk.logprobs)
        text = chunk.text
        if not self.releasing and text:
            self.held += text
            text = ""
            if self.mode == "auto" and not _tools.could_be_call(self.held):
                self.releasing, text, self.held = True, self.held, ""
        if text or meta:
            out.append(self._chunk(text, meta))
        if chunk.finish_reason is not None:
            calls: list[Any] = []
            if self.held:
                call = _tools.parse_call(self.held, self.tools)
                if call is not None:
                    calls.append(
                        tool_call_chunk(
                            name=call["name"],
                            args=json.dumps(call["args"]),
                            id=call["id"],
                            index=0,
                        )
                    )
                else:
                    out.append(self._chunk(self.held, {}))
                self.held = ""
            final_meta = {
                "finish_reason": "tool_calls" if calls else chunk.finish_reason,
                "model_name": self.model_name,
                "model_provider": "llamachain",
            }
            msg = AIMessageChunk(
                content="",
                tool_call_chunks=calls,
                usage_metadata=usage_dict(chunk),  # type: ignore[arg-type]
                response_metadata=final_meta,
                chunk_position="last",
            )
            out.append(ChatGenerationChunk(message=msg, generation_info=dict(final_meta)))
        return out

    def _chunk(self, text: str, meta: dict[str, Any]) -> ChatGenerationChunk:
        return ChatGenerationChunk(
            message=AIMessageChunk(content=text, response_metadata=meta),
            generation_info=meta or None,
        )


class ChatLlama(LlamaParams, BaseChatModel):
    """Chat with a local GGUF model through llama.cpp.

    Example:
        .. code-block:: python

            from llamachain import ChatLlama

            chat = ChatLlama(temperature=0, max_tokens=64)   # the bundled SmolLM2 model
            chat.invoke("Name three colours.").content

    The model's own chat template (from the GGUF file) builds the prompt; models without one
    use ``chat_format`` ("alpaca" by default).  The model is loaded on first use and shared
    with every other object using the same file and load parameters.
    """

    @property
    def _llm_type(self) -> str:
        return "llamachain-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return self._identifying_params_common()

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return self._ls_params("chat", stop, kwargs)

    # -- tokens -----------------------------------------------------------------------------

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Sequence[Any] | None = None
    ) -> int:
        """Exact prompt size: the messages rendered with the model's chat template."""
        msgs = to_engine_messages(messages)
        if tools:
            specs = [convert_to_openai_tool(t) for t in tools]
            msgs = self._with_system(msgs, _tools.instructions(specs, "auto"))
        return len(self.engine.prompt_tokens(self.engine.format_chat(msgs)))

    # -- generation -------------------------------------------------------------------------

    @staticmethod
    def _with_system(msgs: list[dict[str, Any]], extra: str) -> list[dict[str, Any]]:
        if msgs and msgs[0]["role"] == "system":
            return [{"role": "system", "content": f"{msgs[0]['content']}\n\n{extra}"}, *msgs[1:]]
        return [{"role": "system", "content": extra}, *msgs]

    def _prepare(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], Any, _Reply, float | None]:
        self._check_call_kwargs(kwargs, _CALL_KWARGS, "ChatLlama")
        msgs = to_engine_messages(messages)
        tools: list[dict[str, Any]] = list(kwargs.get("tools") or [])
        mode: str | None = None
        call_kwargs = dict(kwargs)
        if tools:
            choice = _tools.resolve_choice(tools, kwargs.get("tool_choice"))
            if choice is not None:
                msgs = self._with_system(msgs, _tools.instructions(tools, choice))
                if choice == "auto":
                    mode = "auto"
                else:
                    mode = "forced"
                    call_kwargs["json_schema"] = _tools.call_schema(tools, choice)
                    call_kwargs.pop("grammar", None)
        if mode is None and kwargs.get("json_schema") is not None:
            # Constrained decoding guarantees the shape; telling the model the schema keeps
            # the content sensible (small models otherwise loop inside a string).
            schema_text = json.dumps(kwargs["json_schema"])
            msgs = self._with_system(
                msgs, f"Reply with only a JSON object that follows this JSON schema: {schema_text}"
            )
        params = self.sampling_params(stop, call_kwargs)
        timeout = kwargs.get("timeout", self.timeout)
        return msgs, params, _Reply(self.model_name, tools, mode), timeout

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        msgs, params, reply, timeout = self._prepare(messages, stop, kwargs)
        for chunk in self.engine.chat_stream(msgs, params, timeout=timeout):
            for out in reply.feed(chunk):
                if run_manager and out.text:
                    run_manager.on_llm_new_token(out.text, chunk=out)
                yield out

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        msgs, params, reply, timeout = self._prepare(messages, stop, kwargs)
        async for chunk in self.engine.achat_stream(msgs, params, timeout=timeout):
            for out in reply.feed(chunk):
                if run_manager and out.text:
                    await run_manager.on_llm_new_token(out.text, chunk=out)
                yield out

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await agenerate_from_stream(self._astream(messages, stop, run_manager, **kwargs))

    # -- tools and structured output --------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: dict[str, Any] | str | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools.  ``tool_choice``: "auto" (default), "any"/"required", a tool name, "none".

        Forced choices are grammar-constrained to the tool's argument schema.
        """
        specs = [convert_to_openai_tool(t) for t in tools]
        _tools.resolve_choice(specs, tool_choice)  # validate now, not at invoke time
        return super().bind(tools=specs, tool_choice=tool_choice, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type | None = None,
        *,
        method: Literal["json_schema", "function_calling", "json_mode"] = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """Output that matches ``schema`` (pydantic class, TypedDict or JSON schema).

        ``json_schema`` (default) and ``function_calling`` constrain decoding with a grammar
        compiled from the schema, so the output is always schema-valid (``strict`` is accepted
        for compatibility and changes nothing); ``json_mode`` only guarantees a JSON object.
        """
        if kwargs:
            raise ConfigError(f"unexpected argument(s): {', '.join(kwargs)}")
        if schema is None and method != "json_mode":
            raise ConfigError(f"schema is required for method={method!r}")
        is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)

        def build(data: Any) -> Any:
            if not is_pydantic:
                return data
            if hasattr(schema, "model_validate"):
                return schema.model_validate(data)  # type: ignore[union-attr]
            return schema.parse_obj(data)  # type: ignore[union-attr]  # pydantic.v1 model

        ls_format = {"kwargs": {"method": method}, "schema": schema}
        llm: Runnable[Any, Any]
        if method == "function_calling":
            assert schema is not None
            name = convert_to_openai_tool(schema)["function"]["name"]
            llm = self.bind_tools([schema], tool_choice=name, ls_structured_output_format=ls_format)

            def parse(msg: AIMessage) -> Any:
                _check_complete(msg)
                args = msg.tool_calls[0]["args"]
                return build(args)

        elif method in ("json_schema", "json_mode"):
            json_schema = (
                convert_to_json_schema(schema) if schema is not None else {"type": "object"}
            )
            if method == "json_mode":
                json_schema = {"type": "object"}
            llm = self.bind(json_schema=json_schema, ls_structured_output_format=ls_format)

            def parse(msg: AIMessage) -> Any:
                _check_complete(msg)
                data = json.loads(_text(msg.content))
                return build(data)

        else:
            raise ConfigError(
                f"unknown method {method!r}; choose json_schema, function_calling or json_mode"
            )
        # A plain function: the stream yields one complete, validated object.
        parser = RunnableLambda(parse, name="parse_structured_output")
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(
            parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
        ).with_fallbacks(
            [RunnablePassthrough.assign(parsed=lambda _: None)],
            exception_key="parsing_error",
        )
        return RunnableMap(raw=llm) | parsed
