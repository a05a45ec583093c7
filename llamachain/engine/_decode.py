"""The generation loop over a loaded llama.cpp model: prefill, sample, decode text, stop.

Called by :class:`~llamachain.engine.LlamaEngine` with the model's lock not yet held; the
loop holds it for the whole generation, so one model serves any number of threads.
"""

from __future__ import annotations

import codecs
import logging
import threading
import time
from collections.abc import Generator, Iterator
from typing import Any

from llamachain.engine._native import token_piece
from llamachain.engine._snapshots import capture, common_blocks, restore
from llamachain.engine._speculative import LookupDecoder, lookup_blocker
from llamachain.engine.cache import LoadedModel
from llamachain.engine.generation import (
    Chunk,
    FinishReason,
    SamplingParams,
    StopMatcher,
    TokenLogprob,
    Usage,
)
from llamachain.errors import GenerationError
from llamachain.settings import Settings

logger = logging.getLogger(__name__)

# The default block (Settings.prefill_block); an engine may use another.
PREFILL_BLOCK: int = Settings.model_fields["prefill_block"].default


def generate(
    m: LoadedModel,
    tokens: list[int],
    max_new: int,
    params: SamplingParams,
    grammar: Any,
    cancel: threading.Event | None,
    timeout: float | None,
    *,
    prefix_cache: bool,
    block: int,
) -> Iterator[Chunk]:
    """Yield text chunks; the last one carries the finish reason, usage and timings."""
    import llama_cpp

    with m.lock:
        if m.closed:
            raise GenerationError("the model was freed while a generation was starting")
        llama = m.llama
        vocab = llama_cpp.llama_model_get_vocab(llama.model)
        llama.set_seed(params.seed if params.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED)
        start = time.perf_counter()
        cached = prefill(m, tokens, prefix_cache=prefix_cache, block=block)
        deadline = start + timeout if timeout else None
        first_at: float | None = None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        matcher = StopMatcher(params.stop)
        n = 0
        finish: FinishReason = "length"
        pending_ids: list[int] = []
        pending_lps: list[TokenLogprob] = []
        lookup: LookupDecoder | None = None
        gen: Generator[int, Any, None] | None = None
        steps: Generator[list[int], None, None]
        if params.prompt_lookup:
            blocker = lookup_blocker(params, grammar, llama)
            if blocker is None:
                lookup = LookupDecoder(llama, tokens, params.prompt_lookup, max_new)
            else:
                logger.debug("prompt lookup off for this call: %s", blocker)
        if lookup is not None:
            steps = lookup.steps()
        else:
            gen = llama.generate(
                tokens,
                top_k=params.top_k,
                top_p=params.top_p,
                min_p=params.min_p,
                temp=params.temperature,
                repeat_penalty=params.repeat_penalty,
                grammar=grammar,
            )
            steps = ([tok] for tok in gen)
        try:
            # A step is one forward pass: a single token, or several with prompt lookup.
            # Every token goes through the same checks either way.
            for step in steps:
                if first_at is None:
                    first_at = time.perf_counter()
                ended = False
                out = ""
                for tok in step[: max_new - n]:
                    if llama_cpp.llama_vocab_is_eog(vocab, tok):
                        finish, ended = "stop", True
                        break
                    n += 1
                    pending_ids.append(tok)
                    if params.logprobs is not None:
                        pending_lps.append(logprob(llama, vocab, tok, params.logprobs))
                    out += matcher.feed(decoder.decode(token_piece(vocab, tok)))
                    if matcher.stopped:
                        finish, ended = "stop", True
                        break
                if out:
                    yield Chunk(out, pending_ids, pending_lps)
                    pending_ids, pending_lps = [], []
                if ended:
                    break
                if cancel is not None and cancel.is_set():
                    finish = "cancelled"
                    break
                if n >= max_new:
                    finish = "length"
                    break
                if deadline is not None and time.perf_counter() > deadline:
                    finish = "timeout"
                    break
        except RuntimeError as e:
            raise GenerationError(f"llama.cpp failed while generating: {e}") from e
        finally:
            steps.close()
            if gen is not None:
                gen.close()
        end = time.perf_counter()
        tail = "" if matcher.stopped else matcher.feed(decoder.decode(b"", final=True))
        tail += matcher.flush()
        first = first_at or end
        timings = {
            "prompt_seconds": first - start,
            "decode_seconds": end - first,
            "total_seconds": end - start,
            "prompt_tokens_per_second": (len(tokens) - cached) / max(first - start, 1e-9),
            "decode_tokens_per_second": max(n - 1, 0) / max(end - first, 1e-9),
        }
        if lookup is not None:
            timings["draft_tokens"] = float(lookup.drafted)
            timings["accepted_tokens"] = float(lookup.accepted)
            timings["lookup_steps"] = float(lookup.passes)
        usage = Usage(prompt_tokens=len(tokens), completion_tokens=n, cached_tokens=cached)
        yield Chunk(tail, pending_ids, pending_lps, finish, usage, timings)


def prefill(m: LoadedModel, tokens: list[int], *, prefix_cache: bool, block: int) -> int:
    """Evaluate all but the last block of the prompt in fixed, position-aligned blocks.

    llama.cpp's results depend slightly on how a prompt is split into batches.  Evaluating
    every prompt in the same aligned blocks -- and reusing cached state only at block
    boundaries that were themselves evaluated that way -- makes the prefix cache exact: the
    answer at temperature 0 is the same whatever was asked before.  ``llama.generate`` then
    evaluates the rest (at most one block) and samples.  The reused state is the live one
    or, when it offers more, a saved prefix snapshot (see :mod:`._snapshots`).

    With a prompt copy (``m.prefill``, see :mod:`._prefill_copy`) the blocks -- and the rest
    of the prompt but its last token -- are evaluated on the copy, whose KV cells then move
    into ``m.llama``; ``llama.generate`` evaluates the last token there.  Returns the tokens
    reused.
    """
    copy = m.prefill
    llama = copy if copy is not None else m.llama
    if m.block != block:  # engines with another block size share this model: start afresh
        m.snapshots.clear()
        m.aligned = 0
        m.block = block
    boundary = (len(tokens) - 1) // block * block
    reuse = 0
    recurrent = getattr(llama, "_is_recurrent", False) or getattr(llama, "_is_hybrid", False)
    if prefix_cache and not recurrent:
        live = min(m.aligned, llama.n_tokens)
        reuse = common_blocks(llama._input_ids, tokens, min(live, boundary), block)
        if m.snapshots.enabled:
            reuse = _use_snapshots(m, llama, tokens, live, reuse, boundary, block)
    if reuse == 0:
        llama.reset()
    else:
        llama.n_tokens = reuse  # eval() drops the KV cells from here on
    m.aligned = reuse
    for i in range(reuse, boundary, block):
        llama.eval(tokens[i : i + block])
        m.aligned = i + block
    if copy is not None and not _hand_over(m, copy, tokens):
        m.drop_prefill("llama.cpp refused to load the copy's KV state into the model")
        return prefill(m, tokens, prefix_cache=prefix_cache, block=block)  # on the file
    return reuse


def _hand_over(m: LoadedModel, copy: Any, tokens: list[int]) -> bool:
    """Finish the prompt but its last token on the copy and move the KV cells to m.llama."""
    from llamachain.engine._prefill_copy import transfer

    n = len(tokens) - 1
    if copy.n_tokens < n:
        copy.eval(tokens[copy.n_tokens : n])
    return transfer(copy, m.llama, n, m.transfer_buffer)


def _use_snapshots(
    m: LoadedModel,
    llama: Any,
    tokens: list[int],
    live: int,
    reuse: int,
    boundary: int,
    block: int,
) -> int:
    """Save what ``llama``'s live state is about to lose; restore a snapshot that beats it.

    A prefix the new prompt shares with the live state (>= one block) has proved to be
    shared, so it is kept.  When the two share nothing, the whole aligned live prompt is
    kept instead: a later prompt may continue it after this one (A, B, A' interleaved).
    Either way nothing is saved that a snapshot already starts with.  Returns the new reuse.
    """
    snaps = m.snapshots
    keep = reuse if reuse >= block else (live if live >= block else 0)
    saved = llama._input_ids[:keep].tolist()
    if keep and not snaps.covers(saved):
        llama._ctx.kv_cache_seq_rm(-1, keep, -1)  # this tail is dropped below anyway
        llama.n_tokens = keep
        snap = capture(llama, saved, snaps.max_bytes)
        if snap is not None and snaps.add(snap):
            logger.debug("kept a snapshot of a %d-token prefix (%d bytes)", keep, snap.size)
    best, offered = snaps.best(tokens, boundary, block)
    if best is None or offered <= reuse:
        return reuse
    if not restore(llama, best, offered):
        logger.debug("llama.cpp refused a %d-token prefix snapshot; dropped it", offered)
        snaps.discard(best)
        return 0
    snaps.used(best, offered)
    logger.debug("restored %d prompt tokens from a prefix snapshot", offered)
    return offered


def logprob(llama: Any, vocab: Any, token: int, top: int) -> TokenLogprob:
    """Log-probability of ``token`` under the logits that produced it (before sampling)."""
    import llama_cpp
    import numpy as np

    n_vocab = llama.n_vocab()
    ptr = llama_cpp.llama_get_logits_ith(llama.ctx, -1)
    logits = np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float64)
    mx = logits.max()
    lp = logits - (mx + np.log(np.exp(logits - mx).sum()))

    def text(t: int) -> str:
        return token_piece(vocab, int(t), True).decode("utf-8", "replace")

    best: tuple[tuple[str, float], ...] = ()
    if top > 0:
        idx = np.argpartition(-lp, top)[:top]
        idx = idx[np.argsort(-lp[idx])]
        best = tuple((text(int(i)), float(lp[i])) for i in idx)
    return TokenLogprob(text(token), int(token), float(lp[token]), best)
