"""Embeddings from a GGUF model through llama.cpp (LangChain-free).

The model is loaded with ``embedding=True`` through the shared model cache (a separate entry
from the same file loaded for chat).  Every text gives exactly one vector: llama.cpp's own
pooling when the model declares one, else the mean of the per-token vectors.  A text longer
than the context window is embedded in windows whose vectors are averaged (weighted by
tokens), or refused with ``long_text="error"`` -- never cut silently.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llamachain._windows import LongText, Piece, check_long_text, combine
from llamachain.engine.cache import LoadedModel, ModelCache
from llamachain.engine.engine import LlamaEngine
from llamachain.errors import EmbeddingError
from llamachain.settings import Settings

logger = logging.getLogger(__name__)

DEFAULT_WINDOW = 512
_POOLING_NAMES = {0: "none", 1: "mean", 2: "cls", 3: "last", 4: "rank"}


class LlamaEmbedder:
    """One vector per text from a GGUF model.  Thread-safe; loads on first use.

    ``n_ctx`` is the most tokens embedded in one pass (default: the model's training context,
    at most 512); longer texts are split into windows of that size.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        normalize: bool = True,
        long_text: LongText = "split",
        verbose: bool | None = None,
        settings: Settings | None = None,
        cache: ModelCache | None = None,
    ) -> None:
        if n_ctx is not None and n_ctx < 8:
            raise EmbeddingError(f"n_ctx must be at least 8 tokens, got {n_ctx}")
        self.model = model
        self.normalize = normalize
        self.long_text = check_long_text(long_text)
        self._n_ctx = n_ctx
        self._n_threads = n_threads
        self._verbose = verbose
        self._settings = settings or Settings()
        self._cache = cache
        self._engine: LlamaEngine | None = None
        self._lock = threading.Lock()
        self._specials: tuple[list[int], list[int]] | None = None

    @property
    def engine(self) -> LlamaEngine:
        """The embedding-mode engine (the file is validated, not loaded, on first access)."""
        with self._lock:
            if self._engine is None:
                probe = LlamaEngine(self.model, settings=self._settings)
                n_ctx = self._n_ctx or min(probe.info.context_length or 512, DEFAULT_WINDOW)
                self._engine = LlamaEngine(
                    self.model,
                    n_ctx=n_ctx,
                    n_batch=n_ctx,  # a whole sequence must fit in one micro-batch
                    n_threads=self._n_threads,
                    verbose=self._verbose,
                    embedding=True,
                    settings=self._settings,
                    cache=self._cache,
                )
            return self._engine

    @property
    def model_name(self) -> str:
        return self.engine.model_name

    @property
    def n_ctx(self) -> int:
        return self.engine.n_ctx

    @property
    def dimension(self) -> int:
        """Vector size, from the file's metadata (the model is not loaded for it)."""
        m = self.engine._loaded_model
        if m is not None and not m.closed:
            return int(m.llama.n_embd())
        n = self.engine.info.embedding_length
        return int(n) if n else int(self._loaded().llama.n_embd())

    @property
    def pooling(self) -> str:
        """llama.cpp's pooling for this model; ``none`` means we average token vectors."""
        return _POOLING_NAMES.get(self._loaded().llama._ctx.pooling_type(), "unknown")

    def _loaded(self) -> LoadedModel:
        return self.engine._loaded()

    def load(self) -> LlamaEmbedder:
        self._loaded()
        return self

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()

    # -- tokens -----------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        """Tokens of ``text`` without special tokens."""
        return self.engine.tokenize(text, add_bos=False)

    def special_tokens(self) -> tuple[list[int], list[int]]:
        """The special tokens the model puts before and after a text (BOS, CLS/SEP, EOS)."""
        if self._specials is None:
            plain = self.engine.tokenize("a", add_bos=False)
            full = self.engine.tokenize("a", add_bos=True)
            for i in range(len(full) - len(plain) + 1):
                if full[i : i + len(plain)] == plain:
                    self._specials = (full[:i], full[i + len(plain) :])
                    break
            else:
                self._specials = ([], [])
        return self._specials

    def sequences(self, texts: Sequence[str], prefix: str = "") -> list[Piece[list[int]]]:
        """Each text as one token sequence, or as windows that each fit the context."""
        head, tail = self.special_tokens()
        limit = self.n_ctx
        prefix_ids = self.tokenize(prefix) if prefix else []
        room = limit - len(head) - len(tail) - len(prefix_ids)
        if room < 1:
            raise EmbeddingError(
                f"the prefix {prefix!r} leaves no room for text in a context of {limit} tokens; "
                "shorten it or raise n_ctx"
            )
        pieces: list[Piece[list[int]]] = []
        for i, text in enumerate(texts):
            ids = self.engine.tokenize(prefix + text, add_bos=True)
            if len(ids) <= limit:
                pieces.append(Piece(i, ids, max(len(ids), 1)))
                continue
            if self.long_text == "error":
                raise EmbeddingError(
                    f"text {i} is {len(ids)} tokens long but the context window is {limit}; "
                    "split it before embedding, raise n_ctx, or pass long_text='split'"
                )
            body = self.tokenize(text)
            for start in range(0, len(body), room):
                window = head + prefix_ids + body[start : start + room] + tail
                pieces.append(Piece(i, window, len(body[start : start + room])))
        return pieces

    # -- embedding --------------------------------------------------------------------------

    def embed(self, texts: Sequence[str], prefix: str = "") -> list[list[float]]:
        """One vector per text (normalised unless ``normalize=False``)."""
        texts = list(texts)
        if not texts:
            return []
        pieces = self.sequences(texts, prefix)
        vectors = self._run([p.item for p in pieces])
        return combine(pieces, vectors, len(texts), self.normalize)

    def _run(self, seqs: list[list[int]]) -> Any:
        """Vectors for token sequences (each at most n_ctx long), packed into batches."""
        import numpy as np

        m = self._loaded()
        with m.lock:
            llama = m.llama
            ctx = llama._ctx
            pooling = ctx.pooling_type()
            if pooling == 4:
                raise EmbeddingError(
                    f"{m.params.path} is a reranker (rank pooling): it scores pairs of texts and "
                    "does not embed them; use an embedding model"
                )
            n_embd = int(llama.n_embd())
            capacity = min(m.params.n_ctx, llama.n_batch)
            max_seqs = max(1, int(llama.context_params.n_seq_max))
            out = np.zeros((len(seqs), n_embd), dtype=np.float32)
            group: list[int] = []
            used = 0
            for i, seq in enumerate(seqs):
                if group and (used + len(seq) > capacity or len(group) >= max_seqs):
                    self._decode(m, [seqs[j] for j in group], out, group, pooling, n_embd)
                    group, used = [], 0
                group.append(i)
                used += len(seq)
            if group:
                self._decode(m, [seqs[j] for j in group], out, group, pooling, n_embd)
        if not self.normalize:
            return out
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0.0, 1.0, norms)

    @staticmethod
    def _decode(
        m: LoadedModel, seqs: list[list[int]], out: Any, rows: list[int], pooling: int, n_embd: int
    ) -> None:
        import llama_cpp
        import numpy as np

        llama = m.llama
        batch = llama._batch
        ctx = llama._ctx
        ctx.kv_cache_clear()
        batch.reset()
        for seq_id, seq in enumerate(seqs):
            batch.add_sequence(seq if seq else [llama.token_bos()], seq_id, True)
        try:
            ctx.decode(batch)
            if pooling == 0:  # per-token vectors: average each sequence's
                total = sum(max(len(s), 1) for s in seqs)
                ptr = llama_cpp.llama_get_embeddings(ctx.ctx)
                flat = np.ctypeslib.as_array(ptr, shape=(total, n_embd))
                pos = 0
                for row, seq in zip(rows, seqs, strict=True):
                    n = max(len(seq), 1)
                    out[row] = flat[pos : pos + n].mean(axis=0)
                    pos += n
            else:
                for seq_id, row in enumerate(rows):
                    ptr = llama_cpp.llama_get_embeddings_seq(ctx.ctx, seq_id)
                    out[row] = np.ctypeslib.as_array(ptr, shape=(n_embd,))
        except RuntimeError as e:
            raise EmbeddingError(f"llama.cpp failed to embed with {m.params.path}: {e}") from e
        finally:
            batch.reset()
            ctx.kv_cache_clear()
