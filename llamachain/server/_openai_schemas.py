"""Request and response bodies of the OpenAI-compatible routes (``/v1/...``).

Requests accept fields they do not know (OpenAI clients send many, e.g. ``user``,
``metadata``) and ignore them; the fields the server acts on are checked strictly, and a
field whose meaning it cannot honour (``n`` > 1, tools, penalties) is refused with a 422 that
says so rather than silently ignored.  Responses have the shapes the official ``openai``
Python client parses.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    field_validator,
    model_validator,
)

_MAX_TEXT = 1_000_000  # characters in one message or embedding input
_MAX_STOP = 16


class _Permissive(BaseModel):
    model_config = ConfigDict(extra="allow")


def text_of(content: str | list[Any] | None, where: str = "content") -> str:
    """The text of a message's content: a string, or a list of ``{"type": "text"}`` parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for i, part in enumerate(content):
        if isinstance(part, str):
            parts.append(part)
            continue
        kind = part.get("type") if isinstance(part, dict) else type(part).__name__
        if kind != "text" or not isinstance(part.get("text"), str):
            raise ValueError(
                f"{where}[{i}] is a {kind!r} part; this server's model reads text only, "
                'send {"type": "text", "text": "..."} parts'
            )
        parts.append(part["text"])
    return "".join(parts)


class ChatMessage(_Permissive):
    role: Literal["system", "developer", "user", "assistant"] = Field(
        description="'developer' is read as 'system'. Tool messages are not supported."
    )
    content: str | list[Any] | None = Field(
        default=None,
        description="A string or a list of text parts; null only for an assistant message.",
    )
    name: str | None = Field(default=None, description="Accepted and ignored.")

    @model_validator(mode="after")
    def _check(self) -> ChatMessage:
        if self.content is None and self.role != "assistant":
            raise ValueError(f"a {self.role} message needs content")
        text = text_of(self.content)
        if len(text) > _MAX_TEXT:
            raise ValueError(f"content is longer than {_MAX_TEXT} characters")
        return self

    @property
    def text(self) -> str:
        return text_of(self.content)

    def engine_message(self) -> dict[str, str]:
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": self.text}


class StreamOptions(_Permissive):
    include_usage: StrictBool | None = Field(
        default=None, description="Send a last chunk with the usage (and no choices)."
    )


class JSONSchemaFormat(_Permissive):
    name: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: StrictBool | None = None


class ResponseFormat(_Permissive):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _check(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError('type "json_schema" needs json_schema: {"name": ..., "schema": {...}}')
        return self

    def schema_for_engine(self) -> dict[str, Any] | None:
        """The JSON schema the output is grammar-constrained to (None: free text)."""
        if self.type == "json_object":
            return {"type": "object"}
        if self.type == "json_schema":
            assert self.json_schema is not None
            return self.json_schema.schema_
        return None


class ChatCompletionRequest(_Permissive):
    model: str | None = Field(
        default=None,
        description="Any name is accepted; the response names the model that answered.",
    )
    messages: list[ChatMessage] = Field(min_length=1, max_length=1000)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(
        default=None, ge=1, description="Takes precedence over max_tokens."
    )
    temperature: float | None = Field(
        default=None, ge=0.0, le=2.0, description="Unset: the served model's (0, greedy)."
    )
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0, description="A llama.cpp sampling option.")
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repeat_penalty: float | None = Field(default=None, gt=0.0, le=10.0)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, description="Unset: the served model's (0).")
    n: int | None = Field(default=None, description="Only 1 is supported.")
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    logprobs: StrictBool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    frequency_penalty: float | None = Field(default=None, description="Only 0 is supported.")
    presence_penalty: float | None = Field(default=None, description="Only 0 is supported.")
    tools: list[Any] | None = Field(default=None, description="Not supported.")
    functions: list[Any] | None = Field(default=None, description="Not supported.")

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list):
            if len(v) > _MAX_STOP:
                raise ValueError(f"at most {_MAX_STOP} stop sequences")
            if any(len(s) > 1000 for s in v):
                raise ValueError("a stop sequence is longer than 1000 characters")
        elif isinstance(v, str) and len(v) > 1000:
            raise ValueError("the stop sequence is longer than 1000 characters")
        return v

    @field_validator("n")
    @classmethod
    def _n(cls, v: int | None) -> int | None:
        if v is not None and v != 1:
            raise ValueError(f"only n=1 is supported (one choice per request), got {v}")
        return v

    @field_validator("frequency_penalty", "presence_penalty")
    @classmethod
    def _penalty(cls, v: float | None) -> float | None:
        if v:
            raise ValueError("not supported (only 0); use repeat_penalty, llama.cpp's penalty")
        return v

    @field_validator("tools", "functions")
    @classmethod
    def _no_tools(cls, v: list[Any] | None) -> list[Any] | None:
        if v:
            raise ValueError("tool and function calling are not supported by this server")
        return v

    @property
    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: str | None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: dict[str, Any] | None = None
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[Choice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    logprobs: dict[str, Any] | None = None
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChunkChoice]
    usage: Usage | None = None


# ---- embeddings --------------------------------------------------------------------------


class EmbeddingRequest(_Permissive):
    input: str | list[Any] = Field(description="A text or a list of texts (not token arrays).")
    model: str | None = Field(
        default=None,
        description="Any name is accepted; the response names the embedder that answered.",
    )
    encoding_format: Literal["float", "base64"] = Field(
        default="float", description="base64: little-endian float32 bytes."
    )
    dimensions: int | None = Field(
        default=None, ge=1, description="Only the embedder's own dimension is supported."
    )

    @field_validator("input")
    @classmethod
    def _texts(cls, v: str | list[Any]) -> str | list[Any]:
        items = [v] if isinstance(v, str) else v
        if not items:
            raise ValueError("input is an empty list; send at least one text")
        if len(items) > 2048:
            raise ValueError(f"at most 2048 texts per request, got {len(items)}")
        for i, item in enumerate(items):
            if isinstance(item, int | list):
                raise ValueError(
                    "token arrays are not supported (the embedder has its own tokenizer); "
                    "send the text as a string or a list of strings"
                )
            if not isinstance(item, str):
                raise ValueError(f"input[{i}] is a {type(item).__name__}, not a string")
            if not item.strip():
                raise ValueError(f"input[{i}] is empty; every input must contain text")
            if len(item) > _MAX_TEXT:
                raise ValueError(f"input[{i}] is longer than {_MAX_TEXT} characters")
        return v

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else [str(t) for t in self.input]


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


# ---- models ------------------------------------------------------------------------------


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "llamachain"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]
