"""Request and response bodies of the retrieval-plugin API.

The plugin models have the field names and JSON shapes of openai/chatgpt-retrieval-plugin's
``/upsert``, ``/query`` and ``/delete``, so its clients work unchanged.  Limits (lengths, counts,
``top_k``) are part of the models, so a request outside them is a 422 that says which field.
"""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationInfo, field_validator

_MAX_TEXT = 1_000_000  # characters in one document (a large book chapter)
_MAX_ID = 512


class Source(str, Enum):
    email = "email"
    file = "file"
    chat = "chat"


def _check_date(value: str | None, what: str) -> str | None:
    """The library's own ISO 8601 rule (a ConfigError is a ValueError, so pydantic reports it
    under the field), so what the schema accepts is what the DocumentStore accepts."""
    if value is None:
        return None
    from llamachain._doc_filter import parse_time

    parse_time(value, what)
    return value.strip()


class DocumentMetadata(BaseModel):
    model_config = ConfigDict(extra="ignore")

    source: Source | None = None
    source_id: str | None = Field(default=None, max_length=_MAX_ID)
    url: str | None = Field(default=None, max_length=4096)
    created_at: str | None = Field(default=None, max_length=64, description="ISO 8601.")
    author: str | None = Field(default=None, max_length=_MAX_ID)

    @field_validator("created_at")
    @classmethod
    def _date(cls, v: str | None, info: ValidationInfo) -> str | None:
        return _check_date(v, str(info.field_name))


class DocumentChunkMetadata(DocumentMetadata):
    document_id: str | None = None


class Document(BaseModel):
    id: str | None = Field(default=None, min_length=1, max_length=_MAX_ID)
    text: str = Field(min_length=1, max_length=_MAX_TEXT)
    metadata: DocumentMetadata | None = None

    @field_validator("text")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("text is empty or only whitespace")
        return v


class DocumentChunk(BaseModel):
    id: str | None = None
    text: str
    metadata: DocumentChunkMetadata
    embedding: list[float] | None = None


class DocumentChunkWithScore(DocumentChunk):
    score: float


class DocumentMetadataFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    document_id: str | None = Field(default=None, max_length=_MAX_ID)
    source: Source | None = None
    source_id: str | None = Field(default=None, max_length=_MAX_ID)
    author: str | None = Field(default=None, max_length=_MAX_ID)
    start_date: str | None = Field(default=None, max_length=64, description="ISO 8601.")
    end_date: str | None = Field(default=None, max_length=64, description="ISO 8601.")

    @field_validator("start_date", "end_date")
    @classmethod
    def _date(cls, v: str | None, info: ValidationInfo) -> str | None:
        return _check_date(v, str(info.field_name))


class Query(BaseModel):
    query: str = Field(min_length=1, max_length=10_000)
    filter: DocumentMetadataFilter | None = None
    top_k: int | None = Field(default=3, ge=1, le=100)


class QueryResult(BaseModel):
    query: str
    results: list[DocumentChunkWithScore]


class UpsertRequest(BaseModel):
    documents: list[Document] = Field(min_length=1, max_length=1000)


class UpsertResponse(BaseModel):
    ids: list[str]


class QueryRequest(BaseModel):
    queries: list[Query] = Field(min_length=1, max_length=100)


class QueryResponse(BaseModel):
    results: list[QueryResult]


class DeleteRequest(BaseModel):
    ids: list[str] | None = Field(default=None, max_length=10_000)
    filter: DocumentMetadataFilter | None = None
    delete_all: StrictBool | None = False


class DeleteResponse(BaseModel):
    success: bool
    deleted: int = Field(default=0, description="Documents removed (a llamachain addition).")


# ---- the server's own ----------------------------------------------------------------------


class ErrorResponse(BaseModel):
    detail: str


class Health(BaseModel):
    status: str
    version: str
    knowledge_base: str
    model_loaded: bool
