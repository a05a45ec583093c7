"""The QA prompt: stable instructions first (so the engine's prefix cache keeps them), then
the numbered sources, then the question.

Chat models get ``[system, user]`` messages rendered by their own chat template; plain LLMs
get the same parts as one text ending in ``Answer:``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_SYSTEM = (
    "Answer the question using only the sources. Give a short answer and cite the source "
    "you used as [1] or [2]. If the sources do not contain the answer, say that the "
    "documents do not say."
)
ABSTAIN_TEXT = "The documents do not say."


def render_source(n: int, text: str, label: str | None) -> str:
    """``[n] label`` on the first line (when there is one), then the chunk's text."""
    head = f"[{n}]" if not label else f"[{n}] ({label})"
    return f"{head}\n{text.strip()}"


@dataclass(frozen=True)
class QAPrompt:
    """Builds the prompt for one question."""

    system: str = DEFAULT_SYSTEM
    sources_heading: str = "Sources:"
    question_label: str = "Question:"

    def user_text(self, sources: Sequence[str], question: str) -> str:
        body = "\n\n".join(sources) if sources else "(no sources)"
        return f"{self.sources_heading}\n{body}\n\n{self.question_label} {question.strip()}"

    def messages(self, sources: Sequence[str], question: str) -> list[Any]:
        from langchain_core.messages import HumanMessage, SystemMessage

        return [
            SystemMessage(content=self.system),
            HumanMessage(content=self.user_text(sources, question)),
        ]

    def text(self, sources: Sequence[str], question: str) -> str:
        """The prompt for a plain (non-chat) LLM."""
        return f"{self.system}\n\n{self.user_text(sources, question)}\n\nAnswer:"
