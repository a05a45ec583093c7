"""Values passed into and out of generation, and the incremental stop-sequence matcher."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from llamachain.errors import ConfigError

FinishReason = Literal["stop", "length", "cancelled", "timeout"]

# A draft is checked in a batch of 1 + draft tokens.  llama.cpp switches to other kernels
# for batches of 64 tokens or more, whose logits differ from one-token decoding; staying
# well below keeps prompt lookup exact.
MAX_PROMPT_LOOKUP = 32


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens.  ``temperature=0`` is greedy and fully deterministic."""

    max_tokens: int | None = 512
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: int | None = None  # None: off; 0: the chosen token only; n: plus the top n
    grammar: str | None = None  # GBNF
    json_schema: dict[str, Any] | None = None
    # Prompt-lookup speculative decoding: draft up to this many tokens per step by copying
    # what followed the latest n-gram earlier in the prompt or answer, and let the model check
    # them in one batch.  0: off.  Only used when decoding is greedy (temperature 0,
    # repeat_penalty 1.0) with no grammar, JSON schema or logprobs; ignored otherwise.
    prompt_lookup: int = 0

    def __post_init__(self) -> None:
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ConfigError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 <= self.min_p <= 1.0:
            raise ConfigError(f"min_p must be in [0, 1], got {self.min_p}")
        if self.logprobs is not None and not 0 <= self.logprobs <= 20:
            raise ConfigError(f"logprobs must be between 0 and 20, got {self.logprobs}")
        if (
            isinstance(self.prompt_lookup, bool)
            or not isinstance(self.prompt_lookup, int)
            or not 0 <= self.prompt_lookup <= MAX_PROMPT_LOOKUP
        ):
            raise ConfigError(
                f"prompt_lookup is the most draft tokens per step, an integer from 0 (off) to "
                f"{MAX_PROMPT_LOOKUP}; got {self.prompt_lookup!r} (try 6)"
            )
        if self.grammar is not None and self.json_schema is not None:
            raise ConfigError("pass either grammar or json_schema, not both")

    def with_stop(self, extra: Iterable[str]) -> SamplingParams:
        merged = tuple(dict.fromkeys([*self.stop, *(s for s in extra if s)]))
        return replace(self, stop=merged)


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    token_id: int
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Chunk:
    """A piece of streamed output.  The last chunk of a stream has ``finish_reason`` set."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    timings: dict[str, float] | None = None


@dataclass
class Completion:
    """A whole generation."""

    text: str
    finish_reason: FinishReason
    usage: Usage
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    prompt: str | None = None

    @classmethod
    def from_chunks(cls, chunks: Iterable[Chunk], prompt: str | None = None) -> Completion:
        text: list[str] = []
        ids: list[int] = []
        lps: list[TokenLogprob] = []
        last: Chunk | None = None
        for c in chunks:
            text.append(c.text)
            ids.extend(c.token_ids)
            lps.extend(c.logprobs)
            last = c
        assert last is not None and last.finish_reason is not None
        return cls(
            text="".join(text),
            finish_reason=last.finish_reason,
            usage=last.usage or Usage(),
            token_ids=ids,
            logprobs=lps,
            timings=last.timings or {},
            prompt=prompt,
        )


class StopMatcher:
    """Finds stop sequences in streamed text without emitting any part of them.

    Text that could be the start of a stop sequence is held back until it can be decided.
    """

    def __init__(self, stops: Iterable[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._buf = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Add text; return what can be emitted now.  Sets ``stopped`` on a match."""
        if self.stopped:
            return ""
        if not self.stops:
            return text
        self._buf += text
        return self._drain(final=False)

    def flush(self) -> str:
        """The text held back, at the end of the stream (cut at a stop found in it)."""
        if self.stopped or not self._buf:
            return ""
        return self._drain(final=True)

    def _drain(self, final: bool) -> str:
        buf = self._buf
        found = [i for i in (buf.find(s) for s in self.stops) if i != -1]
        first = min(found) if found else -1
        # the earliest position from which the rest of the buffer could still grow into a
        # stop: a longer stop starting there would win over a match found further on
        pending = -1 if final else self._pending_start(buf)
        if first != -1 and (pending == -1 or first <= pending):
            self._buf = ""
            self.stopped = True
            return buf[:first]
        cut = len(buf) if pending == -1 else pending
        self._buf = buf[cut:]
        return buf[:cut]

    def _pending_start(self, buf: str) -> int:
        longest = max(len(s) for s in self.stops)
        for j in range(max(0, len(buf) - longest + 1), len(buf)):
            tail = buf[j:]
            if any(len(tail) < len(s) and s.startswith(tail) for s in self.stops):
                return j
        return -1
