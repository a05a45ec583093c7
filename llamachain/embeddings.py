"""LangChain embeddings that run on this machine: sentence-transformers and GGUF models.

``LocalEmbeddings()`` needs no argument: it embeds with the bundled all-MiniLM-L6-v2 (384
dimensions), offline.  Any sentence-transformers model directory works (``model=``).  Weights
load on first use and are shared by every instance through :data:`embedder_cache`.

``LlamaEmbeddings`` embeds with a GGUF model through llama.cpp.

Both give exactly one vector per text and never cut a text silently: a text longer than the
model reads is embedded in windows whose vectors are averaged (``long_text="split"``, the
default), or refused (``long_text="error"``).  Both also tell a knowledge base what they are
(``model_id``, ``dimension``); ``LocalEmbeddings`` also gives the chunker its tokenizer
(``token_offsets``, ``max_chunk_tokens``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from pathlib import Path
from typing import Any, Literal

from langchain_core.embeddings import Embeddings
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from llamachain._st_loader import (
    EmbedderCache,
    Encoder,
    ModelDir,
    embedder_cache,
    inspect_model_dir,
    load_tokenizer,
    load_torch_encoder,
    native_bf16,
    resolve_model_dir,
)
from llamachain._windows import LongText, plan
from llamachain._windows import combine as combine_windows
from llamachain.engine.cache import ModelCache
from llamachain.engine.embed import LlamaEmbedder
from llamachain.errors import EmbeddingError
from llamachain.settings import Settings

Backend = Literal["torch", "onnx", "onnx-int8"]
Precision = Literal["auto", "fp32", "bf16"]

__all__ = ["EmbedderCache", "LlamaEmbeddings", "LocalEmbeddings", "embedder_cache"]


def _prefix_tag(query_prefix: str, document_prefix: str) -> str:
    if not (query_prefix or document_prefix):
        return ""
    digest = hashlib.sha256(json.dumps([query_prefix, document_prefix]).encode()).hexdigest()
    return f"+p{digest[:8]}"


class LocalEmbeddings(BaseModel, Embeddings):
    """sentence-transformers embeddings, offline; the default model needs no configuration.

    Backends: ``torch`` (sentence-transformers itself), ``onnx`` (the same model exported once
    to ONNX Runtime, same vectors) and ``onnx-int8`` (int8 weights, vectors within cosine 0.99
    of full precision; its ``model_id`` differs).  ``None`` fields take the settings' values
    (``embedding_model``, ``embedding_backend``, ``embedding_batch_size``).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

    model: str | None = Field(
        default=None,
        alias="model_name",
        description="sentence-transformers model directory (or a hub name already in the local "
        "Hugging Face cache); None: the settings' embedding_model, else all-MiniLM-L6-v2.",
    )
    backend: Backend | None = Field(default=None, description="None: the settings' backend.")
    device: str | None = Field(
        default=None, description="torch device; None: cuda when available, else cpu."
    )
    batch_size: int | None = Field(default=None, ge=1, description="Texts per forward pass.")
    precision: Precision | None = Field(
        default=None,
        description="torch backend: 'bf16' runs the model in bfloat16 (about 2x faster where "
        "the CPU has native bf16, vectors within cosine 0.9999 of float32), 'fp32' in float32, "
        "'auto' picks bf16 exactly when the CPU computes it natively; None: the settings' value.",
    )
    normalize: bool = Field(default=True, description="Unit-length vectors (cosine = dot).")
    query_prefix: str = Field(default="", description="Prepended to queries (e5: 'query: ').")
    document_prefix: str = Field(
        default="", description="Prepended to documents (e5: 'passage: ')."
    )
    long_text: LongText = Field(
        default="split",
        description="A text longer than the model reads: 'split' embeds it in windows and "
        "averages them (token-weighted); 'error' raises EmbeddingError.",
    )
    settings_: Settings | None = Field(default=None, alias="settings", exclude=True)
    cache_: EmbedderCache | None = Field(default=None, alias="cache", exclude=True)

    _info: ModelDir | None = PrivateAttr(default=None)
    _dimension: int | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @model_validator(mode="after")
    def _defaults_from_settings(self) -> LocalEmbeddings:
        s = self.settings_ or Settings()
        self.settings_ = s
        if self.model is None and s.embedding_model:
            self.model = s.embedding_model
        self.backend = self.backend or s.embedding_backend
        self.batch_size = self.batch_size or s.embedding_batch_size
        self.precision = self.precision or s.embedding_precision
        return self

    # -- the model directory (no torch needed) ---------------------------------------------

    @property
    def info(self) -> ModelDir:
        """What the model directory's files say; raises EmbeddingError if it is unusable."""
        with self._lock:
            if self._info is None:
                self._info = inspect_model_dir(resolve_model_dir(self.model))
            return self._info

    @property
    def model_dir(self) -> Path:
        return self.info.path

    @property
    def model_id(self) -> str:
        """Stable name for these vectors: the model's name plus what changes them."""
        tag = self.info.name + _prefix_tag(self.query_prefix, self.document_prefix)
        if self.backend == "onnx-int8":
            tag += "+int8"
        if not self.normalize and not self.info.normalized:
            tag += "+unnormalized"
        return tag

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            dim = self.info.dimension
            if dim is None:  # a module after pooling may resize: ask the model
                dim = len(self._encoder().encode([""], 1, self.normalize)[0])
            self._dimension = int(dim)
        return self._dimension

    @property
    def max_seq_length(self) -> int:
        """Tokens the model reads, special tokens included."""
        return self.info.max_seq_length

    # -- tokenizer (ChunkTokenizer) --------------------------------------------------------

    @property
    def _cache(self) -> EmbedderCache:
        return self.cache_ if self.cache_ is not None else embedder_cache

    def _tokenizer(self) -> Any:
        info = self.info
        return self._cache.get((str(info.path), "tokenizer", ""), lambda: load_tokenizer(info))

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of each token of ``text`` (no special tokens, no truncation)."""
        return [(a, b) for a, b in self._tokenizer().encode(text, add_special_tokens=False).offsets]

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens in each text, without special tokens or prefixes."""
        encodings = self._tokenizer().encode_batch(list(texts), add_special_tokens=False)
        return [len(e.ids) for e in encodings]

    def _special_count(self) -> int:
        tok = self._tokenizer()
        return len(tok.encode("a", add_special_tokens=True).ids) - len(
            tok.encode("a", add_special_tokens=False).ids
        )

    def _room(self, prefix: str) -> int:
        """Text tokens that fit in one pass after the special tokens and ``prefix``."""
        n_prefix = len(self._tokenizer().encode(prefix, add_special_tokens=False).ids)
        return self.info.max_seq_length - self._special_count() - n_prefix

    @property
    def max_chunk_tokens(self) -> int:
        """The most tokens of a document text the model reads without cutting it."""
        return self._room(self.document_prefix)

    # -- encoder ----------------------------------------------------------------------------

    def _device(self) -> str:
        if self.backend != "torch":
            return "cpu"
        if self.device:
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def _encoder(self) -> Encoder:
        info = self.info
        backend = self.backend or "torch"
        device = self._device()
        bf16 = backend == "torch" and device == "cpu" and self._bf16()
        return self._cache.get(
            (str(info.path), backend + ("-bf16" if bf16 else ""), device),
            lambda: self._load(info, backend, device, bf16),
        )

    def _bf16(self) -> bool:
        if self.precision == "bf16":
            return True
        return self.precision == "auto" and native_bf16()

    def _load(self, info: ModelDir, backend: str, device: str, bf16: bool = False) -> Encoder:
        if backend == "torch":
            return load_torch_encoder(info, device, bf16=bf16)
        from llamachain._onnx_encoder import OnnxEncoder, ensure_onnx

        assert self.settings_ is not None
        file, meta = ensure_onnx(info, self.settings_.home, quantized=backend == "onnx-int8")
        return OnnxEncoder(file, info, self._tokenizer(), meta, n_threads=None)

    def load(self) -> LocalEmbeddings:
        """Load the model now rather than on first use."""
        self._encoder()
        return self

    # -- embedding --------------------------------------------------------------------------

    def _embed(self, texts: list[str], prefix: str) -> list[list[float]]:
        texts = list(texts)
        if not texts:
            return []
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise EmbeddingError(f"text {i} is a {type(t).__name__}, not a str")
        tok = self._tokenizer()
        limit = self.info.max_seq_length
        room = self._room(prefix)
        if room < 1:
            raise EmbeddingError(
                f"the prefix {prefix!r} leaves no room for text in the {limit} tokens "
                f"{self.info.name} reads; shorten it"
            )
        full = [prefix + t for t in texts]
        counts = [len(e.ids) for e in tok.encode_batch(full, add_special_tokens=True)]
        pieces = plan(
            texts,
            counts,
            limit,
            long_text=self.long_text,
            offsets=self.token_offsets,
            window=room,
            fits=lambda s: len(tok.encode(prefix + s, add_special_tokens=True).ids) <= limit,
            what=self.info.name,
        )
        assert self.batch_size is not None
        vectors = self._encoder().encode(
            [prefix + p.item for p in pieces], self.batch_size, self.normalize
        )
        return combine_windows(pieces, vectors, len(texts), self.normalize)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, ``document_prefix`` prepended."""
        return self._embed(texts, self.document_prefix)

    def embed_query(self, text: str) -> list[float]:
        """The vector of a search query, ``query_prefix`` prepended."""
        return self._embed([text], self.query_prefix)[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Runs in a worker thread: the event loop keeps running."""
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return await asyncio.to_thread(self.embed_query, text)


class LlamaEmbeddings(BaseModel, Embeddings):
    """Embeddings from a GGUF model through llama.cpp (loaded with ``embedding=True``).

    Pooling is the model's own (mean / CLS / last token) when its file declares one, else the
    mean of its token vectors.  ``n_ctx`` is the most tokens embedded in one pass (default: the
    model's training context, at most 512); longer texts follow ``long_text``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

    model: str | None = Field(
        default=None,
        alias="model_path",
        description="GGUF file path or known model name; None: the settings' model, else the "
        "bundled default model.",
    )
    n_ctx: int | None = Field(default=None, ge=8)
    n_threads: int | None = Field(default=None, ge=1)
    normalize: bool = True
    query_prefix: str = ""
    document_prefix: str = ""
    long_text: LongText = "split"
    llama_verbose: bool | None = None
    settings_: Settings | None = Field(default=None, alias="settings", exclude=True)
    cache_: ModelCache | None = Field(default=None, alias="cache", exclude=True)

    _embedder: LlamaEmbedder | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def embedder(self) -> LlamaEmbedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = LlamaEmbedder(
                    self.model,
                    n_ctx=self.n_ctx,
                    n_threads=self.n_threads,
                    normalize=self.normalize,
                    long_text=self.long_text,
                    verbose=self.llama_verbose,
                    settings=self.settings_,
                    cache=self.cache_,
                )
            return self._embedder

    @property
    def model_id(self) -> str:
        """The GGUF file's name (without extension) plus what changes the vectors."""
        tag = Path(str(self.embedder.engine.model_path)).stem
        tag += _prefix_tag(self.query_prefix, self.document_prefix)
        return tag if self.normalize else tag + "+unnormalized"

    @property
    def dimension(self) -> int:
        return self.embedder.dimension

    def load(self) -> LlamaEmbeddings:
        self.embedder.load()
        return self

    def close(self) -> None:
        """Release the model (it stays loaded while other objects share it)."""
        if self._embedder is not None:
            self._embedder.close()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embedder.embed(texts, self.document_prefix)

    def embed_query(self, text: str) -> list[float]:
        return self.embedder.embed([text], self.query_prefix)[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return await asyncio.to_thread(self.embed_query, text)
