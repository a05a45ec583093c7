"""The one settings class.  Created by the caller, never at import time."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
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
    verbose: bool = Field(default=False, description="Show llama.cpp's own log output.")
