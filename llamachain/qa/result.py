"""What a grounded answer is made of: the answer, its citations, the chunks it saw, the costs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


def source_label(name: str, section: str, page: int | None) -> str:
    """``name § section (page p)``, leaving out what is empty."""
    out = name
    if section:
        out += f" § {section}"
    if page is not None:
        out += f" (page {page})"
    return out


@dataclass
class SourceChunk:
    """A retrieved chunk and the number ``[n]`` it is cited by.

    The chunks packed into the prompt are numbered first, 1..m, as the model saw them
    (``tokens`` > 0); the other retrieved chunks follow, m+1..k, and can be quoted as
    evidence but not cited by the model.
    """

    id: str
    text: str
    source: str
    file_name: str
    section: str
    page: int | None
    score: float
    rank: int
    dense_score: float | None = None
    bm25_score: float | None = None
    n: int | None = None
    tokens: int = 0  # model tokens it took in the prompt (0 when it was not packed)
    sources: tuple[str, ...] = ()  # every path holding this same content

    @property
    def packed(self) -> bool:
        """Whether the model saw this chunk."""
        return self.tokens > 0

    @property
    def label(self) -> str:
        """``file name § section`` (and page), the way citations show it."""
        return source_label(self.file_name or self.source, self.section, self.page)


@dataclass
class Citation:
    """A source the answer relies on; only chunks that were retrieved can be cited."""

    n: int
    chunk_id: str
    source: str
    file_name: str
    section: str
    page: int | None
    snippet: str

    @property
    def label(self) -> str:
        return source_label(self.file_name or self.source, self.section, self.page)


@dataclass
class QAResult:
    """A grounded answer.

    ``answer`` is what to show: the model's reply (``[n]`` markers that name no packed source
    removed) and, with ``quote=True``, the supporting passage quoted from the cited source.
    ``model_answer`` is the model's reply alone.  ``abstained`` is true when the answer says
    the documents do not contain it; ``abstain_reason`` says why (``"no_documents"``,
    ``"weak_retrieval"``, ``"model"`` or ``"unsupported"``).
    """

    question: str
    answer: str
    citations: list[Citation] = field(default_factory=list)
    chunks: list[SourceChunk] = field(default_factory=list)
    abstained: bool = False
    abstain_reason: str | None = None
    model_answer: str = ""
    reply_shown: bool = False  # whether ``answer`` includes the model's reply
    support: float | None = None  # share of the reply's specifics/words found in the sources
    quote: str = ""
    standalone_question: str | None = None
    relevance: float | None = None
    usage: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    finish_reason: str | None = None

    @property
    def sources(self) -> list[str]:
        """The distinct source files cited, in citation order."""
        return list(dict.fromkeys(c.source for c in self.citations))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["sources"] = self.sources
        return data


@dataclass
class QAChunk:
    """A piece of a streamed answer.  The last one carries the whole :class:`QAResult`."""

    text: str
    result: QAResult | None = None

    def __add__(self, other: QAChunk) -> QAChunk:
        return QAChunk(self.text + other.text, other.result or self.result)
