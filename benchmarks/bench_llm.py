"""Decode and prefill speed of llamachain against raw llama-cpp-python and LangChain's LlamaCpp.

Every contender runs the bundled default model with the same threads, context, batch size and
greedy sampling, and gets the same prompt tokens (the chat prompt ChatLlama renders).  Each
repetition runs every contender once, in rotating order, so drift hits them all alike; the
table shows medians and the ratio of each median to the raw ``create_completion`` anchor.

    .venv/bin/python benchmarks/bench_llm.py [--reps 5] [--threads N] [--json]

This is a measurement, not a test: it never fails on a slow number.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

DECODE_TASK = (
    "Write a long, detailed essay about the history of the Roman Empire: its founding, "
    "expansion, emperors, wars, culture, economy, religion and fall. Use many paragraphs."
)
READING = [
    "The river town kept its ledgers in a stone house by the bridge.",
    "Each spring the clerks counted barrels of salt, bolts of wool and sacks of grain.",
    "Merchants from the coast paid their tolls in silver and argued about the weights.",
    "A flood in the ninth year washed away the lower market and two of the mills.",
    "The council rebuilt the quay higher and taxed every boat that tied up there.",
    "By the twentieth year the ledgers filled a whole room and needed their own keeper.",
]


@dataclass(frozen=True)
class Config:
    threads: int
    n_ctx: int = 2048
    n_batch: int = 512
    max_tokens: int = 128
    prefill_tokens: int = 1000
    reps: int = 5
    seed: int = 1234


@dataclass
class Run:
    """One generation, timed on the caller's side of the contender's own API."""

    text: str
    start: float  # the call
    first_chunk: float  # the first chunk of any kind: prefill ends here
    first_text: float  # the first chunk carrying text: decode starts here
    end: float  # the stream is exhausted
    arrivals: list[float] = field(default_factory=list)  # of every chunk carrying text
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens the model did not have to evaluate again


@dataclass
class Result:
    name: str
    decode: list[float] = field(default_factory=list)  # tokens/s, one per repetition
    steady: list[float] = field(default_factory=list)  # 1 / median time between tokens
    prefill: list[float] = field(default_factory=list)
    generated: list[int] = field(default_factory=list)
    python_us: list[float] = field(default_factory=list)  # per generated token, decode runs
    prompt_tokens: list[int] = field(default_factory=list)
    cached_tokens: list[int] = field(default_factory=list)
    texts: set[str] = field(default_factory=set)


class NativeClock:
    """Adds up the time spent inside llama.cpp's decode and sampler calls.

    Every contender reaches llama.cpp through these two llama-cpp-python methods, so the wall
    time of a run minus this is the Python each library spends around the model.  The wrapper
    costs two clock reads per call, the same for everyone.
    """

    def __init__(self) -> None:
        self.seconds = 0.0

    def install(self) -> NativeClock:
        from llama_cpp import _internals

        for cls, name in ((_internals.LlamaContext, "decode"), (_internals.LlamaSampler, "sample")):
            setattr(cls, name, self._timed(getattr(cls, name)))
        return self

    def _timed(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t

        return wrapper


class Contender(Protocol):
    name: str

    def run(self, prompt: str, messages: Any, max_tokens: int, prefill: bool = False) -> Run:
        """Stream a reply to ``prompt`` (the rendered ``messages``) and time it.

        ``prefill`` runs must report how many prompt tokens were reused from a cache.
        """
        ...


def _drain(chunks: Iterable[Any], text_of: Callable[[Any], str], start: float) -> Run:
    """Read a stream to its end, noting when the first chunk and the first text arrived.

    The end is taken when the iterator is exhausted, so work a library does after its last
    token (LangChain merges the chunks for its callbacks) counts against its decode rate.
    """
    parts: list[str] = []
    arrivals: list[float] = []
    first_chunk = 0.0
    for chunk in chunks:
        now = time.perf_counter()
        first_chunk = first_chunk or now
        piece = text_of(chunk)
        if piece:
            arrivals.append(now)
        parts.append(piece)
    end = time.perf_counter()
    first_text = arrivals[0] if arrivals else end
    return Run("".join(parts), start, first_chunk or end, first_text, end, arrivals=arrivals)


def _cached(llama: Any, tokens: list[int]) -> int:
    """How much of ``tokens`` llama-cpp-python's prefix reuse will skip (always evals one)."""
    n = 0
    for a, b in zip(llama._input_ids, tokens, strict=False):
        if a != b:
            break
        n += 1
    return min(n, len(tokens) - 1)


class RawGenerate:
    """The bare ``Llama.generate()`` loop, each token detokenised as a streaming caller must."""

    name = "raw generate()"

    def __init__(self, llama: Any, tokens_of: Callable[[str], list[int]]) -> None:
        self.llama, self.tokens_of = llama, tokens_of

    def run(self, prompt: str, messages: Any, max_tokens: int, prefill: bool = False) -> Run:
        import llama_cpp

        llama = self.llama
        tokens = self.tokens_of(prompt)
        cached = _cached(llama, tokens)
        vocab = llama._model.vocab
        pieces: list[bytes] = []
        start = time.perf_counter()
        arrivals: list[float] = []
        gen = llama.generate(tokens, top_k=40, top_p=0.95, min_p=0.05, temp=0.0, repeat_penalty=1.0)
        for tok in gen:
            arrivals.append(time.perf_counter())
            if llama_cpp.llama_vocab_is_eog(vocab, tok):
                break
            pieces.append(llama.detokenize([tok]))
            if len(pieces) >= max_tokens:
                break
        gen.close()
        end = time.perf_counter()
        text = b"".join(pieces).decode("utf-8", errors="replace")
        first = arrivals[0] if arrivals else end
        return Run(text, start, first, first, end, arrivals, len(tokens), cached)


class RawCompletion:
    """``Llama.create_completion(prompt, stream=True)``: the anchor of every ratio."""

    name = "raw create_completion"

    def __init__(self, llama: Any, tokens_of: Callable[[str], list[int]]) -> None:
        self.llama, self.tokens_of = llama, tokens_of

    def run(self, prompt: str, messages: Any, max_tokens: int, prefill: bool = False) -> Run:
        tokens = self.tokens_of(prompt)
        cached = _cached(self.llama, tokens)
        start = time.perf_counter()
        stream = self.llama.create_completion(
            prompt,
            stream=True,
            max_tokens=max_tokens,
            temperature=0.0,
            top_k=40,
            top_p=0.95,
            min_p=0.05,
            repeat_penalty=1.0,
            seed=0,
        )
        out = _drain(stream, lambda c: c["choices"][0]["text"], start)
        out.prompt_tokens, out.cached_tokens = len(tokens), cached
        return out


class CommunityLlamaCpp:
    """langchain-community's ``LlamaCpp(...).stream(prompt)``."""

    name = "langchain LlamaCpp"

    def __init__(self, path: str, cfg: Config, tokens_of: Callable[[str], list[int]]) -> None:
        with warnings.catch_warnings():  # its "langchain-community is being sunset" notice
            warnings.simplefilter("ignore", DeprecationWarning)
            from langchain_community.llms import LlamaCpp

        self.tokens_of = tokens_of
        # rope_freq_base/scale 0: take them from the GGUF file.  LlamaCpp's own defaults
        # (10000 / 1.0) override the model's (SmolLM2: base 100000) and change its output.
        self.llm = LlamaCpp(
            model_path=path,
            n_ctx=cfg.n_ctx,
            n_threads=cfg.threads,
            n_batch=cfg.n_batch,
            rope_freq_base=0.0,
            rope_freq_scale=0.0,
            temperature=0.0,
            top_k=40,
            top_p=0.95,
            repeat_penalty=1.0,
            max_tokens=cfg.max_tokens,
            seed=0,
            verbose=False,
            model_kwargs={"n_ubatch": cfg.n_batch, "n_threads_batch": cfg.threads},
        )

    def run(self, prompt: str, messages: Any, max_tokens: int, prefill: bool = False) -> Run:
        tokens = self.tokens_of(prompt)
        cached = _cached(self.llm.client, tokens)
        start = time.perf_counter()
        stream = self.llm.stream(prompt, max_tokens=max_tokens, min_p=0.05)
        out = _drain(stream, str, start)
        out.prompt_tokens, out.cached_tokens = len(tokens), cached
        return out


class Chat:
    """llamachain ``ChatLlama(...).stream(messages)``."""

    name = "llamachain ChatLlama"

    def __init__(self, chat: Any) -> None:
        self.chat = chat

    def run(self, prompt: str, messages: Any, max_tokens: int, prefill: bool = False) -> Run:
        usage: dict[str, Any] = {}

        def text_of(chunk: Any) -> str:
            if chunk.usage_metadata:
                usage.update(chunk.usage_metadata)
            return str(chunk.content)

        start = time.perf_counter()
        out = _drain(self.chat.stream(messages, max_tokens=max_tokens), text_of, start)
        out.prompt_tokens = usage["input_tokens"]
        out.cached_tokens = usage["input_token_details"]["cache_read"]
        return out


class Completion:
    """llamachain ``LlamaLLM(...).stream(prompt)`` on the prompt the raw contenders get."""

    name = "llamachain LlamaLLM"

    def __init__(self, llm: Any, tokens_of: Callable[[str], list[int]]) -> None:
        self.llm, self.tokens_of = llm, tokens_of

    def run(self, prompt: str, messages: Any, max_tokens: int, prefill: bool = False) -> Run:
        # BaseLLM.stream() yields bare strings; the usage (with the cached-token count) only
        # reaches callbacks.  A handler costs a little per token, so only prefill runs get one.
        from langchain_core.callbacks import BaseCallbackHandler

        usage: dict[str, Any] = {}

        class Usage(BaseCallbackHandler):
            def on_llm_end(self, response: Any, **kwargs: Any) -> None:
                usage.update(response.generations[0][0].generation_info.get("usage") or {})

        config = {"callbacks": [Usage()]} if prefill else None
        start = time.perf_counter()
        stream = self.llm.stream(prompt, config=config, max_tokens=max_tokens)
        out = _drain(stream, str, start)
        out.prompt_tokens = usage.get("input_tokens") or len(self.tokens_of(prompt))
        out.cached_tokens = usage.get("input_token_details", {}).get("cache_read", 0)
        return out


def _reading(count: Callable[[str], int], target: int) -> str:
    """About ``target`` tokens of plain prose (counted with the model's tokenizer)."""
    text, i = "", 0
    while count(text) < target:
        text += f"{READING[i % len(READING)]} "
        i += 1
    return text.strip()


def _nonce(rng: random.Random) -> str:
    # A leading word that changes every run: no contender can reuse a cached prompt prefix.
    return f"Session {rng.randrange(100000, 999999)}."


def _messages(system: str, user: str) -> Any:
    from langchain_core.messages import HumanMessage, SystemMessage

    return [SystemMessage(system), HumanMessage(user)]


def run(cfg: Config, log: Callable[[str], None]) -> dict[str, Any]:
    from llama_cpp import Llama

    from llamachain import ChatLlama, LlamaLLM, model_cache
    from llamachain.models.registry import resolve_model_path

    path = str(resolve_model_path(None))
    load_start = os.getloadavg()[0]
    if load_start > 0.5:
        log(
            f"warning: load average {load_start:.2f} before starting; other processes compete "
            "for the cores and the numbers will be noisy"
        )
    common: dict[str, Any] = dict(
        n_ctx=cfg.n_ctx,
        n_threads=cfg.threads,
        n_batch=cfg.n_batch,
        temperature=0.0,
        top_k=40,
        top_p=0.95,
        min_p=0.05,
        repeat_penalty=1.0,
        seed=0,
        max_tokens=cfg.max_tokens,
        verbose=False,
    )
    chat = ChatLlama(**common)
    llm = LlamaLLM(**common)  # same load parameters: shares ChatLlama's loaded model
    engine = chat.engine.load()
    llm.engine.load()
    if len(model_cache) != 1:
        log(f"warning: ChatLlama and LlamaLLM hold {len(model_cache)} copies of the model")

    def render(messages: Any) -> str:
        from llamachain.chat_models import to_engine_messages

        return engine.format_chat(to_engine_messages(messages))

    log(f"loading raw llama_cpp.Llama and LlamaCpp copies of {path}")
    raw = Llama(
        model_path=path,
        n_ctx=cfg.n_ctx,
        n_threads=cfg.threads,
        n_threads_batch=cfg.threads,
        n_batch=cfg.n_batch,
        n_ubatch=cfg.n_batch,
        seed=0,
        verbose=False,
    )
    contenders: list[Contender] = [
        RawCompletion(raw, engine.prompt_tokens),
        RawGenerate(raw, engine.prompt_tokens),
        CommunityLlamaCpp(path, cfg, engine.prompt_tokens),
        Chat(chat),
        Completion(llm, engine.prompt_tokens),
    ]
    results = {c.name: Result(c.name) for c in contenders}
    reading = _reading(engine.count_tokens, cfg.prefill_tokens)
    decode_msgs = _messages("You are a helpful assistant.", DECODE_TASK)
    decode_prompt = render(decode_msgs)
    rng = random.Random(cfg.seed)
    clock = NativeClock().install()
    bos = [raw.token_bos()] if raw._model.add_bos_token() else []
    raw_ids = bos + raw.tokenize(decode_prompt.encode("utf-8"), add_bos=False, special=True)
    same_tokens = raw_ids == engine.prompt_tokens(decode_prompt)
    if not same_tokens:
        log("warning: llama-cpp-python and llamachain tokenise the prompt differently")

    def one(c: Contender, rep: int) -> None:
        gc.collect()
        native = clock.seconds
        d = c.run(decode_prompt, decode_msgs, cfg.max_tokens)
        native = clock.seconds - native
        pmsgs = _messages(
            f"{_nonce(rng)} You are a careful reader.",
            f"{reading}\n\nSummarise the text above in one sentence.",
        )
        gc.collect()
        p = c.run(render(pmsgs), pmsgs, 1, prefill=True)
        if rep < 0:
            return  # warm-up
        r = results[c.name]
        n = engine.count_tokens(d.text)
        r.decode.append(max(n - 1, 0) / max(d.end - d.first_text, 1e-9))
        gaps = [b - a for a, b in zip(d.arrivals, d.arrivals[1:], strict=False)]
        r.steady.append(1 / max(statistics.median(gaps), 1e-9) if gaps else 0.0)
        r.generated.append(n)
        r.python_us.append((d.end - d.start - native) / max(n, 1) * 1e6)
        r.texts.add(d.text)
        fresh = p.prompt_tokens - p.cached_tokens
        r.prefill.append(fresh / max(p.first_chunk - p.start, 1e-9))
        r.prompt_tokens.append(p.prompt_tokens)
        r.cached_tokens.append(p.cached_tokens)

    for rep in range(-1, cfg.reps):
        log("warm-up" if rep < 0 else f"repetition {rep + 1}/{cfg.reps}")
        shift = max(rep, 0) % len(contenders)
        for c in contenders[shift:] + contenders[:shift]:
            one(c, rep)

    med = statistics.median
    anchor = results[RawCompletion.name]
    rows = []
    for r in results.values():
        rows.append(
            {
                "contender": r.name,
                "decode_tokens_per_s": med(r.decode),
                "decode_ratio_to_raw": med(r.decode) / med(anchor.decode),
                "steady_tokens_per_s": med(r.steady),
                "steady_ratio_to_raw": med(r.steady) / med(anchor.steady),
                "prefill_tokens_per_s": med(r.prefill),
                "prefill_ratio_to_raw": med(r.prefill) / med(anchor.prefill),
                "python_us_per_token": med(r.python_us),
                "generated_tokens": med(r.generated),
                "prefill_prompt_tokens": med(r.prompt_tokens),
                "prefill_cached_tokens": max(r.cached_tokens),
                "decode_runs": r.decode,
                "steady_runs": r.steady,
                "prefill_runs": r.prefill,
            }
        )
    texts = {t for r in results.values() for t in r.texts}
    import llama_cpp

    return {
        "model": path,
        "config": asdict(cfg),
        "llama_cpp_python": llama_cpp.__version__,
        "python": platform.python_version(),
        "anchor": RawCompletion.name,
        "same_prompt_tokens": same_tokens,
        "identical_outputs": len(texts) == 1,
        "load_average": {"start": load_start, "end": os.getloadavg()[0]},
        # half the range of the decode runs over their median, the median over contenders
        "decode_noise": med(
            (max(r.decode) - min(r.decode)) / 2 / med(r.decode) for r in results.values()
        ),
        "results": rows,
    }


def table(doc: dict[str, Any]) -> str:
    cfg, load = doc["config"], doc["load_average"]
    yes = {True: "yes", False: "NO"}
    lines = [
        f"{doc['model'].rsplit('/', 1)[-1]}  threads={cfg['threads']} n_ctx={cfg['n_ctx']} "
        f"n_batch={cfg['n_batch']}  greedy, repeat_penalty=1.0  median of {cfg['reps']} reps",
        f"decode: up to {cfg['max_tokens']} new tokens, (tokens - 1) / (first token -> end of "
        "stream); steady: 1 / median time between tokens",
        f"prefill: ~{cfg['prefill_tokens']}-token prompt, (prompt - cached tokens) / time to "
        "first chunk; a fresh nonce leads every prefill prompt, so only the template's first "
        "tokens can be cached",
        "py us/tok: wall time of a decode run minus the time inside llama.cpp's decode and "
        "sampler, per generated token",
        f"same prompt token ids: {yes[doc['same_prompt_tokens']]}; greedy outputs identical: "
        f"{yes[doc['identical_outputs']]}; 1-min load average {load['start']:.2f} -> "
        f"{load['end']:.2f}",
        "",
        f"{'contender':<22}{'decode tok/s':>13}{'/raw':>6}{'steady tok/s':>13}{'/raw':>6}"
        f"{'prefill tok/s':>14}{'/raw':>6}{'py us/tok':>10}{'gen tok':>8}{'prompt tok':>11}"
        f"{'cached':>7}",
    ]
    for r in doc["results"]:
        lines.append(
            f"{r['contender']:<22}{r['decode_tokens_per_s']:>13.1f}{r['decode_ratio_to_raw']:>6.2f}"
            f"{r['steady_tokens_per_s']:>13.1f}{r['steady_ratio_to_raw']:>6.2f}"
            f"{r['prefill_tokens_per_s']:>14.1f}{r['prefill_ratio_to_raw']:>6.2f}"
            f"{r['python_us_per_token']:>10.0f}{r['generated_tokens']:>8.0f}"
            f"{r['prefill_prompt_tokens']:>11.0f}{r['prefill_cached_tokens']:>7}"
        )
    by = {r["contender"]: r for r in doc["results"]}
    chat, gen = by[Chat.name], by[RawGenerate.name]
    lines += [
        "",
        f"raw = {doc['anchor']}(stream=True); single decode runs of one contender vary by "
        f"+-{doc['decode_noise']:.1%} (half their range, median over contenders)",
        f"ChatLlama / raw decode = {chat['decode_ratio_to_raw']:.2f} (target >= 0.98)",
        f"ChatLlama / raw steady decode = {chat['steady_ratio_to_raw']:.2f}",
        f"ChatLlama / raw generate() decode = "
        f"{chat['decode_tokens_per_s'] / gen['decode_tokens_per_s']:.2f}",
        f"ChatLlama / raw prefill = {chat['prefill_ratio_to_raw']:.2f}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from llamachain.engine._native import physical_cores

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--threads",
        type=int,
        default=physical_cores(),
        help="llama.cpp threads for every contender (default: physical cores)",
    )
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--prefill-tokens", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print a JSON document instead")
    args = ap.parse_args(argv)
    cfg = Config(
        threads=args.threads,
        n_ctx=args.n_ctx,
        max_tokens=args.max_tokens,
        prefill_tokens=args.prefill_tokens,
        reps=args.reps,
    )
    started = time.perf_counter()
    doc = run(cfg, lambda msg: print(msg, file=sys.stderr, flush=True))
    doc["wall_seconds"] = time.perf_counter() - started
    print(json.dumps(doc, indent=2) if args.json else table(doc))


if __name__ == "__main__":
    main()
