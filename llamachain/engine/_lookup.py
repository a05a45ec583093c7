"""Prompt-lookup drafting: guess the next tokens by finding the recent tokens earlier on.

Extractive answers (quote the passage, repeat a name, fill in code) copy long runs of the
prompt.  When the last few tokens generated also occur earlier in the prompt or the answer,
the tokens that followed them there are a cheap guess for what comes next; the model then
checks the whole guess in one forward pass (see :mod:`llamachain.engine._speculative`).

Pure Python and model-free, so it is unit-tested on its own.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_NGRAM = 3
MIN_NGRAM = 2  # a single matching token predicts the next ones too poorly to pay for checking


class NgramDrafter:
    """An incrementally built index from n-grams to where they last occurred.

    ``draft(limit)`` looks up the longest suffix of the sequence (``max_ngram`` tokens down to
    ``min_ngram``) that also occurs earlier, and returns tokens that followed its most recent
    earlier occurrence: ``limit`` of them for a full ``max_ngram`` match, proportionally fewer
    for a shorter one (a shorter match is a weaker guess, and every drafted token costs a
    share of a forward pass to check).  Each call is O(``max_ngram``); :meth:`extend` costs
    O(``max_ngram``) per token added.
    """

    def __init__(
        self,
        tokens: Iterable[int] = (),
        *,
        max_ngram: int = MAX_NGRAM,
        min_ngram: int = MIN_NGRAM,
    ) -> None:
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError(f"need 1 <= min_ngram <= max_ngram, got {min_ngram}, {max_ngram}")
        self.max_ngram = max_ngram
        self.min_ngram = min_ngram
        self.tokens: list[int] = []
        # n-gram -> index of its last token, for occurrences that have a successor (so the
        # suffix being looked up never finds itself and a hit always proposes >= 1 token)
        self._last: dict[tuple[int, ...], int] = {}
        self.extend(tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    def extend(self, tokens: Iterable[int]) -> None:
        seq = self.tokens
        for tok in tokens:
            end = len(seq) - 1  # the n-grams ending here get their successor now
            seq.append(int(tok))
            for n in range(1, self.max_ngram + 1):
                if end - n + 1 < 0:
                    break
                self._last[tuple(seq[end - n + 1 : end + 1])] = end

    def append(self, token: int) -> None:
        self.extend((token,))

    def draft(self, limit: int) -> list[int]:
        """What followed the longest matching recent n-gram (<= ``limit`` tokens); [] if none."""
        seq = self.tokens
        if limit <= 0 or not seq:
            return []
        for n in range(min(self.max_ngram, len(seq)), self.min_ngram - 1, -1):
            end = self._last.get(tuple(seq[len(seq) - n :]))
            if end is not None:
                take = max(1, limit * n // self.max_ngram)
                return seq[end + 1 : end + 1 + take]
        return []
