"""``QAConfig``: every knob of the grounded QA chain, with defaults measured on the eval sets."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llamachain.qa.prompt import DEFAULT_SYSTEM

if TYPE_CHECKING:
    from llamachain.settings import Settings


class QAConfig(BaseModel):
    """Options of :class:`~llamachain.qa.GroundedQA` (``Settings`` gives the defaults)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    k: int = Field(default=4, ge=1, description="Chunks retrieved per question.")
    max_sources: int = Field(
        default=2,
        ge=1,
        description="Chunks packed into the prompt at most (the small default model answers "
        "worse from more).",
    )
    max_source_tokens: int | None = Field(
        default=1024,
        ge=16,
        description="Cap on the sources' tokens; None: whatever the context window leaves.",
    )
    answer_tokens: int = Field(default=96, ge=1, description="The answer's max_tokens.")
    reply_sentences: int = Field(
        default=2,
        ge=0,
        description="Sentences of the model's reply that are kept (and generated: the model "
        "is stopped after them); 0: the whole reply.",
    )
    temperature: float = Field(default=0.0, ge=0.0)
    stop: list[str] = Field(
        default_factory=lambda: ["\n\n\n", "\nQuestion:", "\nSources:"],
        description="Stop sequences besides the chat template's own.",
    )
    min_coverage: float = Field(
        default=0.4,
        ge=0.0,
        le=1.0,
        description="Abstain without asking the model when the packed sources hold less than "
        "this share of the question's (IDF-weighted) words; 0 turns it off.",
    )
    abstain_on_unknown_names: bool = Field(
        default=True,
        description="Abstain when the question names something (Kubernetes, OAuth2) that no "
        "document mentions.",
    )
    trust_model_abstention: bool = Field(
        default=True,
        description="When the model says the sources do not answer, abstain.",
    )
    min_support: float = Field(
        default=0.6,
        ge=0.0,
        le=1.0,
        description="A model answer with less of its specifics and words found in the "
        "sources is treated as invented and not shown.",
    )
    quote: bool = Field(
        default=True,
        description="Add the supporting passage, quoted from the cited source, to the answer.",
    )
    quote_from: Literal["packed", "retrieved"] = Field(
        default="retrieved",
        description="Where the quoted passage may come from: the packed chunks only, or every "
        "retrieved chunk (the model sees fewer chunks than are retrieved).",
    )
    quote_before: int = Field(
        default=1, ge=0, le=5, description="Sentences quoted before the best-matching one."
    )
    quote_after: int = Field(
        default=1, ge=0, le=5, description="Sentences quoted after the best-matching one."
    )
    evidence_embeddings: bool = Field(
        default=True,
        description="Score evidence sentences with the embedder too (else by words and rank).",
    )
    structured: bool = Field(
        default=False,
        description="Ask for JSON {answer, citations}; with llamachain models the citation "
        "values are grammar-limited to the packed sources' numbers.",
    )
    prompt_lookup: int = Field(
        default=0,
        ge=0,
        description="Prompt-lookup draft tokens for llamachain models (0: off).",
    )
    context_window: int | None = Field(
        default=None,
        ge=64,
        description="The model's context window for models that do not report one.",
    )
    system_prompt: str = Field(default=DEFAULT_SYSTEM, description="The stable instructions.")
    show_sections: bool = Field(
        default=True, description="Label each source with its file and section in the prompt."
    )

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> QAConfig:
        base: dict[str, Any] = {
            "k": settings.retrieval_k,
            "max_sources": settings.qa_max_sources,
            "answer_tokens": settings.qa_answer_tokens,
            "min_coverage": settings.qa_min_coverage,
            "quote": settings.qa_quote,
        }
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)
