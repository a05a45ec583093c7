"""Encoder-decoder models (T5, Flan-T5): run the encoder over the prompt, then decode.

llama.cpp keeps the encoder's output in the context after ``llama_encode``; the decoder then
starts from the model's decoder start token and attends to it through cross-attention.
llama-cpp-python's ``Llama`` only calls ``llama_decode``, which on such a model aborts the
process (``GGML_ASSERT(... "llama_encode must be called first")``), so the engine must route
these models through :func:`generate` here -- a drop-in for :func:`._decode.generate`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from llamachain.engine import _decode
from llamachain.engine.cache import LoadedModel
from llamachain.engine.generation import Chunk, SamplingParams
from llamachain.errors import ContextOverflowError, GenerationError


def has_encoder(llama: Any) -> bool:
    """Whether the loaded model needs ``llama_encode`` before it can decode."""
    import llama_cpp

    return bool(llama_cpp.llama_model_has_encoder(llama.model))


def encode(m: LoadedModel, tokens: list[int]) -> int:
    """Run the encoder over ``tokens`` (EOS appended when the vocab asks for it).

    Returns the token the decoder starts from.  Call with ``m.lock`` held.
    """
    import llama_cpp

    llama = m.llama
    vocab = llama_cpp.llama_model_get_vocab(llama.model)
    eos = llama_cpp.llama_vocab_eos(vocab)
    if llama_cpp.llama_vocab_get_add_eos(vocab) and eos >= 0 and (not tokens or tokens[-1] != eos):
        tokens = [*tokens, eos]
    n_ubatch = int(llama_cpp.llama_n_ubatch(llama.ctx))
    if len(tokens) > n_ubatch:
        # llama.cpp asserts (aborts the process) rather than returning an error for this.
        err = ContextOverflowError(len(tokens), 0, n_ubatch)
        err.args = (
            f"the encoder reads the whole prompt in one batch, but the prompt has {len(tokens)} "
            f"tokens and the batch holds {n_ubatch}; raise n_batch (and n_ctx) or shorten it",
        )
        raise err
    arr = (llama_cpp.llama_token * len(tokens))(*tokens)
    rc = llama_cpp.llama_encode(llama.ctx, llama_cpp.llama_batch_get_one(arr, len(tokens)))
    if rc != 0:
        raise GenerationError(f"llama.cpp's encoder failed (llama_encode returned {rc})")
    llama.reset()  # the decoder's own cache starts empty for each prompt
    m.aligned = 0
    start = int(llama_cpp.llama_model_decoder_start_token(llama.model))
    return start if start >= 0 else int(llama.token_bos())


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
    """:func:`._decode.generate` for every model; encodes the prompt first when needed."""
    if not has_encoder(m.llama):
        yield from _decode.generate(
            m,
            tokens,
            max_new,
            params,
            grammar,
            cancel,
            timeout,
            prefix_cache=prefix_cache,
            block=block,
        )
        return
    with m.lock:  # re-entrant: _decode.generate takes it again for the decoding
        if m.closed:
            raise GenerationError("the model was freed while a generation was starting")
        begin = time.perf_counter()
        start = encode(m, tokens)
        encode_seconds = time.perf_counter() - begin
        for chunk in _decode.generate(
            m,
            [start],
            max_new,
            params,
            grammar,
            cancel,
            timeout,
            prefix_cache=False,
            block=block,
        ):
            if chunk.usage is not None:
                chunk.usage.prompt_tokens = len(tokens)
                chunk.usage.cached_tokens = 0
            if chunk.timings is not None:
                chunk.timings["encode_seconds"] = encode_seconds
                chunk.timings["prompt_seconds"] += encode_seconds
                chunk.timings["prompt_tokens_per_second"] = len(tokens) / max(
                    chunk.timings["prompt_seconds"], 1e-9
                )
                chunk.timings["total_seconds"] += encode_seconds
            yield chunk
