"""Conversation memory for follow-up questions ("and how do I turn it off?").

A follow-up is rewritten into a standalone question before retrieval, by the chain's own model
with a short prompt.  Small models rewrite unreliably, so the rewrite is checked -- it must be
one line, not much longer than the question and the previous one together, and keep the
question's own content words -- and when it fails the retrieval query is the previous
standalone question followed by the new one, which finds the same topic's chunks.  Questions
that do not look like follow-ups (no pronoun or "what about"-style opening) are used as they
are, without a model call.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

from llamachain.qa.evidence import terms

_FOLLOW_UP = re.compile(
    r"\b(it|its|it's|this|that|these|those|they|them|their|there|he|she|him|her|one|ones|"
    r"same|former|latter|above|previous)\b|^\s*(and|or|but|also|what about|how about|then|"
    r"so|why|how come)\b",
    re.IGNORECASE,
)

REWRITE_SYSTEM = (
    "Rewrite the last question so that it can be understood without the conversation. "
    "Reply with the rewritten question only."
)


@dataclass(frozen=True)
class Turn:
    question: str  # as asked
    standalone: str  # as retrieved
    answer: str


class ConversationMemory:
    """The last ``max_turns`` questions and answers of a conversation."""

    def __init__(self, max_turns: int = 4) -> None:
        self.turns: deque[Turn] = deque(maxlen=max_turns)

    def add(self, question: str, standalone: str, answer: str) -> None:
        self.turns.append(Turn(question, standalone, answer))

    def clear(self) -> None:
        self.turns.clear()

    def __len__(self) -> int:
        return len(self.turns)

    def needs_rewrite(self, question: str) -> bool:
        return bool(self.turns) and bool(_FOLLOW_UP.search(question))

    def rewrite_messages(self, question: str) -> list[dict[str, str]]:
        """The prompt that asks the model for a standalone question."""
        lines = []
        for t in self.turns:
            lines.append(f"User: {t.question}")
            lines.append(f"Assistant: {_short(t.answer)}")
        history = "\n".join(lines)
        return [
            {"role": "system", "content": REWRITE_SYSTEM},
            {
                "role": "user",
                "content": f"Conversation:\n{history}\n\nLast question: {question}\n\n"
                "Standalone question:",
            },
        ]

    def accept(self, question: str, rewritten: str) -> str:
        """The rewrite if it is plausible, else the previous question plus this one."""
        candidate = rewritten.strip().strip('"').strip()
        candidate = re.sub(r"^(standalone question|question)\s*:\s*", "", candidate, flags=re.I)
        previous = self.turns[-1].standalone if self.turns else ""
        own = set(terms(question))
        ok = (
            bool(candidate)
            and "\n" not in candidate
            and len(candidate) <= 2 * (len(question) + len(previous)) + 20
            and own <= set(terms(candidate)) | set(terms(previous))
            and (not own or len(own & set(terms(candidate))) >= max(1, len(own) // 2))
        )
        if ok:
            return candidate
        return f"{previous} {question}".strip()


def _short(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit].rsplit(" ", 1)[0] + " …"
