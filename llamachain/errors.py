"""Every error llamachain raises on purpose derives from :class:`LlamaChainError`.

Messages name the thing that is wrong and say what to do next; the CLI prints them as a
single line.
"""

from __future__ import annotations


class LlamaChainError(Exception):
    """Root of llamachain's errors."""


class ConfigError(LlamaChainError, ValueError):
    """A setting or argument has an invalid value."""


class ModelFileError(LlamaChainError):
    """A model file is missing, truncated, or not a GGUF file."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ModelLoadError(LlamaChainError):
    """llama.cpp refused to load a file that passed our own checks."""


class ContextOverflowError(LlamaChainError, ValueError):
    """The prompt plus the requested answer does not fit in the context window."""

    def __init__(self, prompt_tokens: int, max_tokens: int, n_ctx: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.n_ctx = n_ctx
        super().__init__(
            f"prompt of {prompt_tokens} tokens + max_tokens {max_tokens} = "
            f"{prompt_tokens + max_tokens} tokens exceeds the context window of {n_ctx} tokens; "
            "shorten the prompt, lower max_tokens, raise n_ctx, or pass overflow='truncate' "
            "to keep the newest tokens"
        )


class UnknownChatFormatError(ConfigError):
    """A chat format name that we do not know."""

    def __init__(self, name: str, valid: list[str]) -> None:
        self.name = name
        self.valid = valid
        super().__init__(f"unknown chat format {name!r}; choose one of: {', '.join(valid)}")


class GenerationError(LlamaChainError):
    """llama.cpp failed while generating (for example, a decode error)."""


class EmbeddingError(LlamaChainError):
    """An embedding model could not be loaded or could not embed a text."""


class DocumentLoadError(LlamaChainError):
    """A document could not be read: unsupported type, unreadable, or corrupt."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class StoreError(LlamaChainError):
    """The vector store (a Chroma directory or server) failed or is unreachable."""


class EmbeddingMismatchError(StoreError, ConfigError):
    """A knowledge base was built with another embedding model than the one in use."""


class KnowledgeBaseError(LlamaChainError):
    """A knowledge base does not exist, or an ingestion could not proceed."""
