"""Evaluating a QA chain on a question file: retrieval, answers, citations, abstention, latency.

A question file has one JSON object per line::

    {"id": "q01", "question": "...", "answers": ["acceptable", "forms"], "source": "dir/page.rst"}

``answers`` empty (and ``source`` null) marks a question the documents cannot answer.
``source`` is the page that answers it, matched against the end of each chunk's path.

Metrics (answerable questions unless said otherwise):

* ``hit@1`` / ``hit@k`` -- the source page is the first / among the retrieved chunks;
* ``accuracy`` -- an acceptable answer string occurs in the answer (case and whitespace
  ignored); ``model_accuracy`` -- the same for the model's reply alone (without the quote);
* ``citation_precision`` -- share of the citations of answered questions that point at the
  source page;
* ``abstention_rate`` -- share of the *unanswerable* questions the chain declined;
  ``false_abstention_rate`` -- share of the answerable ones it declined;
* latency -- total seconds and time to the first answer token per question, p50 and p95.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llamachain.errors import ConfigError
from llamachain.qa.result import QAResult, SourceChunk


@dataclass(frozen=True)
class QAItem:
    id: str
    question: str
    answers: tuple[str, ...]
    source: str | None

    @property
    def answerable(self) -> bool:
        return bool(self.answers)


def load_questions(path: str | Path) -> list[QAItem]:
    """Read a question file; a malformed line is a :class:`ConfigError` naming it."""
    p = Path(path).expanduser()
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ConfigError(f"cannot read the question file {p}: {e.strerror or e}") from e
    out: list[QAItem] = []
    seen: set[str] = set()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            item = QAItem(
                id=str(obj.get("id") or f"line{n}"),
                question=str(obj["question"]),
                answers=tuple(str(a) for a in obj.get("answers") or ()),
                source=obj.get("source") or None,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ConfigError(
                f'{p}:{n}: not a question record (expected {{"id", "question", '
                f'"answers", "source"}}): {e}'
            ) from e
        if not item.question.strip():
            raise ConfigError(f"{p}:{n}: the question is empty")
        if item.id in seen:
            raise ConfigError(f"{p}:{n}: the id {item.id!r} is used twice")
        seen.add(item.id)
        out.append(item)
    if not out:
        raise ConfigError(f"{p} holds no questions")
    return out


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("``", "`").lower()).strip()


def matches(answer: str, acceptable: Iterable[str]) -> bool:
    a = _norm(answer)
    return any(_norm(x) and _norm(x) in a for x in acceptable)


def from_source(chunk_sources: Sequence[str], source: str | None) -> bool:
    if not source:
        return False
    want = source.replace("\\", "/").lstrip("/")
    for s in chunk_sources:
        s = s.replace("\\", "/")
        if s == want or s.endswith("/" + want):
            return True
    return False


def _chunk_sources(c: SourceChunk) -> list[str]:
    return [c.source, *c.sources]


@dataclass
class ItemResult:
    id: str
    question: str
    answerable: bool
    answer: str
    model_answer: str
    correct: bool | None
    model_correct: bool | None
    abstained: bool
    abstain_reason: str | None
    hit_rank: int | None  # rank of the first retrieved chunk from the source page
    citations: int
    citation_hits: int
    seconds: float
    first_token: float
    relevance: float | None
    error: str | None = None


def score(item: QAItem, result: QAResult, seconds: float) -> ItemResult:
    hit = next((c.rank for c in result.chunks if from_source(_chunk_sources(c), item.source)), None)
    by_id = {c.id: c for c in result.chunks}
    hits = sum(
        1
        for cit in result.citations
        if from_source(
            _chunk_sources(by_id[cit.chunk_id]) if cit.chunk_id in by_id else [cit.source],
            item.source,
        )
    )
    correct = model_correct = None
    if item.answerable:
        correct = not result.abstained and matches(result.answer, item.answers)
        model_correct = not result.abstained and matches(result.model_answer, item.answers)
    return ItemResult(
        id=item.id,
        question=item.question,
        answerable=item.answerable,
        answer=result.answer,
        model_answer=result.model_answer,
        correct=correct,
        model_correct=model_correct,
        abstained=result.abstained,
        abstain_reason=result.abstain_reason,
        hit_rank=hit,
        citations=len(result.citations),
        citation_hits=hits,
        seconds=seconds,
        first_token=result.timings.get("first_token", seconds),
        relevance=result.relevance,
    )


def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    i = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[i]


def _share(n: int, d: int) -> float | None:
    return n / d if d else None


@dataclass
class EvalReport:
    items: list[ItemResult]
    k: int
    seconds: float
    meta: dict[str, Any] = field(default_factory=dict)

    def metrics(self) -> dict[str, Any]:
        ans = [r for r in self.items if r.answerable and r.error is None]
        una = [r for r in self.items if not r.answerable and r.error is None]
        answered = [r for r in ans if not r.abstained]
        cites = sum(r.citations for r in answered)
        secs = [r.seconds for r in self.items if r.error is None]
        ttft = [r.first_token for r in self.items if r.error is None and not r.abstained]
        return {
            "questions": len(self.items),
            "answerable": len(ans),
            "unanswerable": len(una),
            "errors": sum(r.error is not None for r in self.items),
            "hit@1": _share(sum(r.hit_rank == 1 for r in ans), len(ans)),
            f"hit@{self.k}": _share(sum(r.hit_rank is not None for r in ans), len(ans)),
            "accuracy": _share(sum(bool(r.correct) for r in ans), len(ans)),
            "model_accuracy": _share(sum(bool(r.model_correct) for r in ans), len(ans)),
            "citation_precision": _share(sum(r.citation_hits for r in answered), cites),
            "abstention_rate": _share(sum(r.abstained for r in una), len(una)),
            "false_abstention_rate": _share(sum(r.abstained for r in ans), len(ans)),
            "latency_p50": _pct(secs, 0.5),
            "latency_p95": _pct(secs, 0.95),
            "first_token_p50": _pct(ttft, 0.5),
            "first_token_p95": _pct(ttft, 0.95),
            "mean_seconds": statistics.fmean(secs) if secs else 0.0,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics(),
            "k": self.k,
            "seconds": self.seconds,
            "meta": self.meta,
            "items": [asdict(r) for r in self.items],
        }

    def table(self) -> str:
        m = self.metrics()
        rows = [
            (
                "questions",
                f"{m['questions']} ({m['answerable']} answerable, "
                f"{m['unanswerable']} unanswerable)",
            ),
            ("retrieval hit@1", _fmt(m["hit@1"])),
            (f"retrieval hit@{self.k}", _fmt(m[f"hit@{self.k}"])),
            ("answer accuracy", _fmt(m["accuracy"])),
            ("  the model's reply alone", _fmt(m["model_accuracy"])),
            ("citation precision", _fmt(m["citation_precision"])),
            ("abstention on unanswerable", _fmt(m["abstention_rate"])),
            ("abstention on answerable", _fmt(m["false_abstention_rate"])),
            ("latency p50 / p95", f"{m['latency_p50']:.2f} s / {m['latency_p95']:.2f} s"),
            (
                "first token p50 / p95",
                f"{m['first_token_p50']:.2f} s / {m['first_token_p95']:.2f} s",
            ),
        ]
        if m["errors"]:
            rows.append(("errors", str(m["errors"])))
        width = max(len(a) for a, _ in rows)
        return "\n".join(f"{a.ljust(width)}  {b}" for a, b in rows)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


Progress = Callable[[int, int, ItemResult], None]


def evaluate(
    chain: Any, items: Sequence[QAItem], *, progress: Progress | None = None
) -> EvalReport:
    """Ask every question (one at a time, in order) and score the answers."""
    from llamachain.errors import LlamaChainError

    started = time.perf_counter()
    out: list[ItemResult] = []
    for i, item in enumerate(items, 1):
        t = time.perf_counter()
        try:
            result = chain.invoke(item.question)
            row = score(item, result, time.perf_counter() - t)
        except LlamaChainError as e:
            row = ItemResult(
                item.id,
                item.question,
                item.answerable,
                "",
                "",
                False if item.answerable else None,
                None,
                False,
                None,
                None,
                0,
                0,
                time.perf_counter() - t,
                0.0,
                None,
                error=str(e),
            )
        out.append(row)
        if progress is not None:
            progress(i, len(items), row)
    k = getattr(getattr(chain, "config", None), "k", 4)
    return EvalReport(out, int(k), time.perf_counter() - started)
