"""Perplexity of a GGUF model on a text, from llama.cpp's logits.

The text is tokenized once, with a BOS token in front when the model asks for one
(``tokenizer.ggml.add_bos_token``).  Call the text tokens ``x[0..N)``.  Every token that has
some left context is scored exactly once: ``x[1..N)``, or all of ``x[0..N)`` when the model
adds BOS (``x[0]`` is then predicted from BOS alone).

Windows hold ``W = n_ctx`` tokens (``n_ctx - 1`` text tokens after a BOS, for models that add
one: every window then starts with BOS, as the model saw its training documents).  Window
``w`` ends at ``e_w = min(W + w * stride, N)`` and starts at ``e_w - W``, so the last window is
pulled back to end exactly at the end of the text.  The first window scores every target in
it; window ``w > 0`` scores only the targets past the previous window's end,
``x[e_{w-1} .. e_w)``.  So every scored token but those of the first window sees at least
``n_ctx - stride`` tokens of left context (BOS included), and at most ``n_ctx - 1``.  The
stride runs from 1 to ``n_ctx - 1``: the largest gives windows that overlap by one context
token (fastest, least context); the default ``n_ctx // 2`` gives every token after the first
window at least half a window of context.

llama.cpp's own ``llama-perplexity`` instead cuts non-overlapping ``n_ctx`` chunks, puts BOS
over the first token of each chunk and scores only the second half of every chunk (each with
``n_ctx/2 .. n_ctx - 1`` tokens of context); the first halves are never scored.  Ours scores
every token once, so on the same text it counts about twice the tokens and also includes the
first window's short-context tokens, which makes the value slightly higher.

The log-softmax is computed in float64 from llama.cpp's float32 logits, which are requested
only for the positions that are scored (llama.cpp's batch API), and the KV cache is cleared
between windows.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llamachain.errors import ConfigError, DocumentLoadError, LlamaChainError, ModelLoadError
from llamachain.models.gguf_info import read_model_info
from llamachain.models.registry import resolve_model_path

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

logger = logging.getLogger(__name__)

DEFAULT_N_CTX = 512
MAX_TEXT_BYTES = 256 * 1024 * 1024  # a larger "text" is almost certainly not one

Progress = Callable[[int, int], None]  # (tokens scored so far, tokens to score)


@dataclass(frozen=True)
class Window:
    """One window over the text tokens: evaluate ``x[start:end]``, score ``x[score_from:end]``."""

    start: int
    end: int
    score_from: int

    @property
    def scored(self) -> int:
        return self.end - self.score_from


@dataclass(frozen=True)
class PerplexityResult:
    """What :func:`perplexity` measured.  ``ppl = exp(nll)``; errors are standard errors."""

    ppl: float
    nll: float  # mean negative log-likelihood per scored token, in nats
    nll_stderr: float
    ppl_stderr: float  # ppl * nll_stderr (first-order), as llama.cpp reports its "+/-"
    tokens_scored: int
    text_tokens: int
    windows: int
    tokens_evaluated: int
    seconds: float
    tokens_per_second: float  # tokens evaluated by the model per second
    model_path: str
    file_type: str
    n_ctx: int
    stride: int
    add_bos: bool
    n_threads: int
    batch: int
    token_nll: Any = field(default=None, repr=False, compare=False)  # float64 array, per target

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["token_nll"]
        return data


# -- window planning (pure: no model needed) --------------------------------------------------


def default_stride(n_ctx: int, add_bos: bool) -> int:
    return max(1, min(n_ctx // 2, max_stride(n_ctx)))


def max_stride(n_ctx: int) -> int:
    """The largest stride: every scored token keeps at least one token (or BOS) before it."""
    return n_ctx - 1


def window_width(n_ctx: int, add_bos: bool) -> int:
    """Text tokens per window: ``n_ctx``, less one for the BOS that starts each window."""
    return n_ctx - 1 if add_bos else n_ctx


def min_text_tokens(n_ctx: int, add_bos: bool) -> int:
    """The shortest text (in tokens, BOS not counted) that fills one window."""
    return window_width(n_ctx, add_bos)


def plan_windows(n_tokens: int, n_ctx: int, stride: int, add_bos: bool) -> list[Window]:
    """The windows over ``n_tokens`` text tokens; see the module docstring for the rule.

    Raises :class:`ConfigError` when the text does not fill one window or the stride is out
    of range.
    """
    width = window_width(n_ctx, add_bos)
    if width < 1 or n_ctx < 2:
        raise ConfigError(f"n_ctx must be at least 2, got {n_ctx}")
    if isinstance(stride, bool) or not 1 <= stride <= max_stride(n_ctx):
        raise ConfigError(
            f"stride must be between 1 and {max_stride(n_ctx)} (n_ctx - 1, so that every "
            f"scored token has context), got {stride}; the default is "
            f"{default_stride(n_ctx, add_bos)} (--stride)"
        )
    if n_tokens < width:
        raise ConfigError(
            f"the text has {n_tokens} tokens, fewer than the {width} that fill one window of "
            f"n_ctx={n_ctx}; pass a longer text or a smaller n_ctx (--ctx)"
        )
    first_target = 0 if add_bos else 1
    windows = [Window(0, width, first_target)]
    end = width
    while end < n_tokens:
        new_end = min(end + stride, n_tokens)
        windows.append(Window(new_end - width, new_end, end))
        end = new_end
    return windows


# -- the text ---------------------------------------------------------------------------------


def read_text(path: str | os.PathLike[str]) -> str:
    """A UTF-8 text file's contents; a clear :class:`DocumentLoadError` for anything else."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DocumentLoadError(p, "no such file; pass the path of a UTF-8 text file")
    if p.is_dir():
        raise DocumentLoadError(p, "is a directory; pass the path of a UTF-8 text file")
    try:
        size = p.stat().st_size
        if size > MAX_TEXT_BYTES:
            raise DocumentLoadError(
                p, f"is {size:,} bytes; perplexity reads at most {MAX_TEXT_BYTES:,}"
            )
        data = p.read_bytes()
    except OSError as e:
        raise DocumentLoadError(p, f"cannot be read: {e.strerror or e}") from e
    if b"\x00" in data[:65536]:
        raise DocumentLoadError(p, "looks binary (it contains NUL bytes); pass a text file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DocumentLoadError(
            p, f"is not UTF-8 text (invalid byte at offset {e.start}); convert it to UTF-8 first"
        ) from e
    if not text.strip():
        raise DocumentLoadError(p, "is empty (or only whitespace); pass a file with text in it")
    return text


def _text_of(text_or_path: str | os.PathLike[str]) -> tuple[str, str | None]:
    """(text, source path or None): a path-like is read as a file, a ``str`` is the text."""
    if isinstance(text_or_path, os.PathLike):
        return read_text(text_or_path), str(text_or_path)
    if not isinstance(text_or_path, str):
        raise ConfigError(
            f"pass the text as a str or a file as a path, got {type(text_or_path).__name__}"
        )
    if not text_or_path.strip():
        raise ConfigError("the text is empty; pass some text, or a file path as a Path")
    return text_or_path, None


# -- scoring ----------------------------------------------------------------------------------


def log_softmax_nll(logits: npt.NDArray[Any], targets: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``-log softmax(logits[i])[targets[i]]`` per row, computed in float64."""
    import numpy as np

    x = np.asarray(logits, dtype=np.float64)
    mx = x.max(axis=1, keepdims=True)
    lse = np.log(np.exp(x - mx).sum(axis=1)) + mx[:, 0]
    picked = x[np.arange(x.shape[0]), np.asarray(targets, dtype=np.int64)]
    return lse - picked


class _Scorer:
    """A llama.cpp context plus one batch, scoring windows through ``llama_decode``."""

    def __init__(self, path: str, n_ctx: int, n_threads: int, batch: int, flash_attn: bool) -> None:
        from llama_cpp import Llama
        from llama_cpp._internals import LlamaBatch

        from llamachain.engine._native import capture_llama_logs, route_llama_logs

        route_llama_logs()
        try:
            with capture_llama_logs() as log:
                self.llama = Llama(
                    model_path=path,
                    n_ctx=n_ctx,
                    n_batch=batch,
                    n_ubatch=batch,
                    n_threads=n_threads,
                    n_threads_batch=n_threads,
                    logits_all=False,
                    flash_attn=flash_attn,
                    verbose=False,
                )
        except (ValueError, RuntimeError, OSError) as e:
            errors = [line.strip() for line in log if "error" in line.lower() or "fail" in line]
            detail = f" (llama.cpp: {errors[0].split(': ', 1)[-1]})" if errors else ""
            raise ModelLoadError(
                f"llama.cpp could not load {path}: {e}{detail}; run `llamachain doctor` to "
                "check the llama.cpp build, or try a smaller --ctx"
            ) from e
        self.batch_size = batch
        self.n_vocab = self.llama.n_vocab()
        self.add_bos = bool(self.llama._model.add_bos_token())  # tokenizer.ggml.add_bos_token
        self._batch = LlamaBatch(n_tokens=batch, embd=0, n_seq_max=1, verbose=False)

    def tokenize(self, text: str, add_bos: bool) -> list[int]:
        ids = list(self.llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False))
        return ids[1:] if add_bos and ids and ids[0] == self.llama.token_bos() else ids

    def window_nll(self, tokens: list[int], first_scored: int) -> npt.NDArray[np.float64]:
        """NLL of ``tokens[first_scored:]``, each from the logits at the position before it."""
        import llama_cpp
        import numpy as np

        self.llama._ctx.kv_cache_clear()
        ctx = self.llama._ctx.ctx
        out: list[npt.NDArray[np.float64]] = []
        b = self._batch.batch
        # logits at position p predict tokens[p + 1]: request them for p in [first_scored-1, n-1)
        want_from, want_to = first_scored - 1, len(tokens) - 1
        for lo in range(0, len(tokens), self.batch_size):
            hi = min(lo + self.batch_size, len(tokens))
            b.n_tokens = hi - lo
            n_out = 0
            for j, pos in enumerate(range(lo, hi)):
                b.token[j] = tokens[pos]
                b.pos[j] = pos
                b.n_seq_id[j] = 1
                b.seq_id[j][0] = 0
                need = want_from <= pos < want_to
                b.logits[j] = need
                n_out += need
            rc = llama_cpp.llama_decode(ctx, b)
            if rc != 0:
                raise LlamaChainError(f"llama_decode failed with code {rc} on a window")
            if n_out:
                ptr = llama_cpp.llama_get_logits(ctx)
                logits = np.ctypeslib.as_array(ptr, shape=(n_out, self.n_vocab))
                first = max(lo, want_from)
                targets = np.asarray(tokens[first + 1 : first + 1 + n_out])
                out.append(log_softmax_nll(logits, targets))
        return np.concatenate(out) if out else np.zeros(0)

    def close(self) -> None:
        self._batch.close()
        self.llama.close()


def perplexity(
    model: str | os.PathLike[str] | None,
    text_or_path: str | os.PathLike[str],
    *,
    n_ctx: int = DEFAULT_N_CTX,
    stride: int | None = None,
    n_threads: int | None = None,
    batch: int | None = None,
    flash_attn: bool = True,
    progress: Progress | None = None,
    home: str | os.PathLike[str] | None = None,
) -> PerplexityResult:
    """Perplexity of ``model`` (a GGUF path, a known model name, or None for the default) on a
    text: a ``str`` is the text itself, a :class:`~pathlib.Path` (any path-like) a UTF-8 file.

    ``n_ctx`` tokens per window, a new window every ``stride`` tokens (default ``n_ctx // 2``);
    ``batch`` tokens per ``llama_decode`` call (default: a whole window).  ``flash_attn``
    as llama.cpp's own tools on a CPU (and the engine) use it.  ``progress`` is called after
    every window with (tokens scored so far, tokens to score).
    """
    import numpy as np

    from llamachain.engine._native import physical_cores

    text, source = _text_of(text_or_path)
    path = resolve_model_path(
        model if model is None else str(model), Path(home) if home is not None else None
    )
    info = read_model_info(path)  # our checks first: llama.cpp never sees a bad file
    trained = info.context_length
    if isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < 2:
        raise ConfigError(f"n_ctx must be an integer of at least 2, got {n_ctx!r}")
    if trained and n_ctx > trained:
        raise ConfigError(
            f"n_ctx={n_ctx} is larger than the {trained} tokens {Path(info.path).name} was "
            f"trained on; perplexity beyond it is meaningless, pass --ctx {trained} or less"
        )
    batch = n_ctx if batch is None else batch
    if isinstance(batch, bool) or not 1 <= batch <= n_ctx:
        raise ConfigError(f"batch must be between 1 and n_ctx={n_ctx}, got {batch!r}")
    threads = n_threads or physical_cores()
    if stride is not None:
        plan_windows(n_ctx, n_ctx, stride, False)  # a bad stride fails before loading

    scorer = _Scorer(info.path, n_ctx, threads, batch, flash_attn)
    try:
        add_bos = scorer.add_bos
        ids = scorer.tokenize(text, add_bos)
        stride = default_stride(n_ctx, add_bos) if stride is None else stride
        windows = plan_windows(len(ids), n_ctx, stride, add_bos)
        total = sum(w.scored for w in windows)
        prefix = [scorer.llama.token_bos()] if add_bos else []
        logger.info(
            "perplexity of %s on %s: %d tokens, %d windows of n_ctx=%d, stride %d",
            info.path,
            source or "a text",
            len(ids),
            len(windows),
            n_ctx,
            stride,
        )
        parts: list[npt.NDArray[np.float64]] = []
        done = evaluated = 0
        start = time.perf_counter()
        for w in windows:
            tokens = prefix + ids[w.start : w.end]
            nll = scorer.window_nll(tokens, len(prefix) + w.score_from - w.start)
            if nll.shape[0] != w.scored:  # pragma: no cover - a bookkeeping bug, not input
                raise LlamaChainError(f"scored {nll.shape[0]} tokens of a window, not {w.scored}")
            parts.append(nll)
            done += w.scored
            evaluated += len(tokens)
            if progress is not None:
                progress(done, total)
        seconds = time.perf_counter() - start
    finally:
        scorer.close()
    token_nll = np.concatenate(parts)
    if not np.all(np.isfinite(token_nll)):
        raise LlamaChainError(
            f"{info.path} produced non-finite logits; the file may be damaged "
            "(check it with `llamachain models info`)"
        )
    mean = float(token_nll.mean())
    se = float(token_nll.std(ddof=1) / math.sqrt(len(token_nll))) if len(token_nll) > 1 else 0.0
    ppl = math.exp(mean)
    return PerplexityResult(
        ppl=ppl,
        nll=mean,
        nll_stderr=se,
        ppl_stderr=ppl * se,
        tokens_scored=int(token_nll.shape[0]),
        text_tokens=len(ids),
        windows=len(windows),
        tokens_evaluated=evaluated,
        seconds=seconds,
        tokens_per_second=evaluated / seconds if seconds > 0 else 0.0,
        model_path=info.path,
        file_type=info.file_type,
        n_ctx=n_ctx,
        stride=stride,
        add_bos=add_bos,
        n_threads=threads,
        batch=batch,
        token_nll=token_nll,
    )
