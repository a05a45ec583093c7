"""The one settings class.  Created by the caller, never at import time."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path.home() / ".llamachain"


class Settings(BaseSettings):
    """llamachain settings; every field can be set with a ``LLAMACHAIN_<NAME>`` variable."""

    model_config = SettingsConfigDict(env_prefix="LLAMACHAIN_", extra="ignore")

    home: Path = Field(default_factory=_default_home, description="Data directory.")
    model: str | None = Field(
        default=None,
        description="GGUF path or known model name; default: the bundled SmolLM2-135M-Instruct.",
    )
    n_ctx: int | None = Field(
        default=None,
        ge=0,
        description="Context window in tokens; default: the model's training context, capped "
        "by context_cap.",
    )
    context_cap: int = Field(
        default=8192, ge=64, description="Upper bound for the default context window."
    )
    n_threads: int | None = Field(
        default=None, ge=1, description="CPU threads; default: the physical cores."
    )
    n_batch: int = Field(default=512, ge=1, description="Prompt-processing batch size.")
    overflow: Literal["error", "truncate"] = Field(
        default="error",
        description="What to do when prompt + max_tokens exceeds the context window.",
    )
    chat_format: str | None = Field(
        default=None,
        description="Prompt format name; default: the model's own chat template, else alpaca.",
    )
    prefix_cache: bool = Field(
        default=True,
        description="Reuse the KV cache of the previous prompt's shared prefix (faster; greedy "
        "output can then differ in rare near-ties -- turn off for bit-exact repeatability).",
    )
    prefill_block: int = Field(
        default=64,
        ge=1,
        description="Prompts are evaluated in blocks of this many tokens at fixed positions, so "
        "the prefix cache can reuse a shared prefix exactly (to the block). Larger: faster "
        "prefill (256 is within 2-3% of one whole-prompt batch), coarser reuse.",
    )
    prefill_copy: str = Field(
        default="auto",
        description="Evaluate prompts on a copy of the model in a type llama.cpp has fast batched "
        "kernels for, then generate with the file itself: 'auto' (a Q8_0 copy of Q4_1/Q5_1 files "
        "up to 2 GiB, made once and cached), 'off', or a quantization type for any file.",
    )
    verbose: bool = Field(default=False, description="Show llama.cpp's own log output.")

    # --- knowledge bases -------------------------------------------------------------------
    embedding_model: str | None = Field(
        default=None,
        description="sentence-transformers model directory or name; default: the bundled "
        "all-MiniLM-L6-v2.",
    )
    embedding_backend: Literal["torch", "onnx", "onnx-int8"] = Field(
        default="torch",
        description="Backend that runs the embedder (sentence-transformers "
        "on torch; or ONNX Runtime, full precision or int8 attention weights).",
    )
    embedding_precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="torch backend: bf16 (about 2x faster where the CPU computes bfloat16 "
        "natively) or fp32; auto = bf16 exactly on such CPUs.",
    )
    embedding_batch_size: int = Field(default=32, ge=1, description="Texts per embedding batch.")
    chunk_tokens: int | None = Field(
        default=None,
        ge=16,
        description="Chunk size in embedder tokens; default (and upper bound): what the "
        "embedding model reads without truncating.",
    )
    chunk_overlap: int = Field(default=32, ge=0, description="Tokens shared by adjacent chunks.")
    chroma_host: str | None = Field(
        default=None,
        description="Chroma server host (client/server mode); default: a local Chroma "
        "directory under home.",
    )
    chroma_port: int = Field(default=8000, ge=1, le=65535, description="Chroma server port.")
    chroma_ssl: bool = Field(default=False, description="Use HTTPS for the Chroma server.")
    chroma_token: str | None = Field(
        default=None, description="Bearer token for a Chroma server that requires one."
    )
    retrieval_k: int = Field(default=4, ge=1, description="Chunks returned by a retriever.")
    fetch_k: int = Field(
        default=20, ge=1, description="Candidates each retrieval method fetches before fusion."
    )
    retrieval_mode: Literal["hybrid", "dense", "bm25"] = Field(
        default="hybrid", description="Dense, BM25, or both fused by reciprocal rank."
    )

    # --- grounded question answering ------------------------------------------------------
    qa_max_sources: int = Field(
        default=2, ge=1, description="Retrieved chunks packed into a QA prompt at most."
    )
    qa_answer_tokens: int = Field(default=96, ge=1, description="A QA answer's max_tokens.")
    qa_min_coverage: float = Field(
        default=0.4,
        ge=0.0,
        le=1.0,
        description="Abstain when the sources hold less of the question's words (0: never).",
    )
    qa_quote: bool = Field(default=True, description="Quote the supporting passage in QA answers.")

    # --- the HTTP server (`llamachain serve`) -----------------------------------------------
    server_host: str = Field(default="127.0.0.1", description="Address the server binds to.")
    server_port: int = Field(default=8080, ge=1, le=65535, description="The server's port.")
    server_token: SecretStr | None = Field(
        default=None,
        description="Bearer token every endpoint but /healthz requires; required to bind to a "
        "non-loopback address.",
    )
    server_kb: str = Field(default="default", description="Knowledge base the server serves.")
    server_max_upload_mb: float = Field(
        default=20.0, gt=0, description="Largest file /upsert-file accepts, in MiB."
    )
    server_max_body_mb: float = Field(
        default=20.0, gt=0, description="Largest JSON request body accepted, in MiB."
    )
    server_cors_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins allowed to call the server (CORS), e.g. "
        '["https://chat.example.org"]; default: none.',
    )
    server_max_tokens: int = Field(
        default=1024, ge=1, description="Upper bound for max_tokens in a completion request."
    )

    @property
    def kb_dir(self) -> Path:
        """Where local knowledge bases (the Chroma directory) live."""
        return self.home / "kb"
