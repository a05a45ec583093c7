"""Greedy decoding with prompt-lookup drafts, verified in one batch per step.

Each step evaluates ``[last token] + draft`` in a single ``llama_decode`` with logits for
every position, keeps the longest prefix of the draft that matches the model's own argmax,
adds the model's next token after it, and removes the KV cells of the rejected tail.  The
result is the greedy answer, produced several tokens per forward pass when the answer
copies text that came before.

One caveat: the text equals the one-token-at-a-time path only as far as llama.cpp's logits
for a token do not depend on the batch it is evaluated in.  With flash attention (which
``ChatLlama(prompt_lookup=N)`` loads, or ``LlamaEngine(flash_attn=True)``) they were
bit-identical on the bundled model for every batch of up to 63 tokens, with or without
rolled-back cells in the cache (from 64 tokens on llama.cpp switches kernels, hence
``MAX_PROMPT_LOOKUP``); with the default attention kernel they differ by up to ~1 logit and
greedy answers do diverge.  Other builds (another
CPU's kernels, a GPU) make no such promise, so where two candidates are within rounding of
each other an answer could in theory differ -- the same kind of difference the prefix
cache can make.

``llama.input_ids`` / ``llama.n_tokens`` always describe the KV cache between steps, so the
prefix cache sees the same state it would after :meth:`llama_cpp.Llama.generate`.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any

from llamachain.engine._lookup import NgramDrafter
from llamachain.engine.generation import SamplingParams

logger = logging.getLogger(__name__)


def lookup_blocker(params: SamplingParams, grammar: Any, llama: Any) -> str | None:
    """Why prompt lookup cannot run with these parameters (None: it can)."""
    if params.temperature != 0:
        return f"temperature is {params.temperature}, lookup needs greedy decoding (0)"
    if grammar is not None:
        return "a grammar or JSON schema constrains the tokens"
    if params.logprobs is not None:
        return "logprobs were requested"
    if params.repeat_penalty != 1.0:
        return f"repeat_penalty is {params.repeat_penalty}, lookup needs 1.0"
    if getattr(llama, "_is_recurrent", False) or getattr(llama, "_is_hybrid", False):
        return "the model is recurrent or hybrid: rejected drafts cannot be removed from its state"
    if llama.n_batch < 2:
        return "n_batch is 1: a draft cannot be checked in one batch"
    return None


def next_limit(limit: int, drafted: int, agreed: int, max_draft: int) -> int:
    """The next draft's length after ``agreed`` of ``drafted`` tokens were accepted.

    A rejected token still costs its share of the forward pass, so after a miss the next
    draft is only one token longer than what was accepted; a fully accepted draft lets the
    length grow back by two, up to ``max_draft``.  On the quote tasks of
    ``benchmarks/bench_lookup.py`` this keeps the long runs of copied text while spending
    fewer rejected tokens where the model paraphrases.
    """
    if agreed >= drafted:
        return min(max_draft, limit + 2)
    return agreed + 1  # < drafted <= max_draft


class LookupDecoder:
    """Yields the greedy continuation of a prefilled prompt as lists of tokens, one per step.

    The caller has evaluated all but the tail of ``tokens`` (``llama.n_tokens`` of them);
    the first step evaluates the tail and yields the first token.  ``max_new`` caps the
    tokens yielded in total, so a step never overshoots the caller's limit.
    """

    def __init__(self, llama: Any, tokens: list[int], max_draft: int, max_new: int) -> None:
        self.llama = llama
        self.tokens = tokens
        self.max_draft = max(0, min(max_draft, llama.n_batch - 1))
        self.max_new = max_new
        self.drafted = 0  # draft tokens proposed
        self.accepted = 0  # draft tokens the model agreed with
        self.passes = 0  # forward passes after the prompt

    def steps(self) -> Generator[list[int], None, None]:
        import llama_cpp
        import numpy as np
        from llama_cpp._internals import LlamaBatch

        llama = self.llama
        ctx = llama.ctx
        n_vocab = llama.n_vocab()
        n_ctx = llama.n_ctx()

        def argmax(i: int) -> int:
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, i), shape=(n_vocab,))
            return int(logits.argmax())

        # The prompt tail, exactly as Llama.generate() evaluates it, so the first token is
        # the same on both paths.
        llama.eval(self.tokens[llama.n_tokens :])
        tok = argmax(-1)
        made = 1
        drafter = NgramDrafter(self.tokens)
        drafter.append(tok)
        batch = LlamaBatch(n_tokens=self.max_draft + 1, embd=0, n_seq_max=1, verbose=False)
        limit = self.max_draft  # the draft length, adapted to how well drafts are doing
        try:
            yield [tok]
            while True:
                n_past = llama.n_tokens
                room = min(limit, self.max_new - made - 1, n_ctx - n_past - 1)
                draft = drafter.draft(room)
                seq = [tok, *draft]
                batch.set_batch(batch=seq, n_past=n_past, logits_all=True)
                try:
                    llama._ctx.decode(batch)
                except RuntimeError:
                    llama._ctx.kv_cache_seq_rm(-1, n_past, -1)  # drop a half-written batch
                    raise
                llama.input_ids[n_past : n_past + len(seq)] = seq
                out: list[int] = []
                for i in range(len(seq)):
                    out.append(argmax(i))
                    if i == len(draft) or out[-1] != draft[i]:
                        break
                agreed = len(out) - 1
                keep = n_past + 1 + agreed  # the last token + the accepted draft
                if keep < n_past + len(seq):
                    llama._ctx.kv_cache_seq_rm(-1, keep, -1)
                llama.n_tokens = keep
                self.passes += 1
                self.drafted += len(draft)
                self.accepted += agreed
                if draft:
                    limit = next_limit(limit, len(draft), agreed, self.max_draft)
                tok = out[-1]
                made += len(out)
                drafter.extend(out)
                yield out
        finally:
            batch.close()
            # the logits left behind may be a rejected position's; never sample from them
            llama._requires_eval = True
            logger.debug(
                "prompt lookup: %d steps, %d/%d draft tokens accepted",
                self.passes,
                self.accepted,
                self.drafted,
            )
