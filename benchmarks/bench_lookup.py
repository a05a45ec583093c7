"""Prompt-lookup decoding and prefix snapshots against raw llama-cpp-python.

Part 1, decode speed on extractive answers: each task is a passage plus "quote the sentence
that says X".  Contenders: raw ``Llama.create_completion(stream=True)`` (the anchor), the
llamachain engine without prompt lookup, and with it.  Every contender gets the same prompt
token ids and decodes greedily; the table says whether they all wrote the same text.

Part 2, time to first token when prompts interleave: a QA prompt (a long fixed system prompt,
a retrieved passage, a question) alternates with a question-rewriting prompt, as in a
conversational retrieval chain.  Contenders: raw ``create_completion`` (it reuses only the
live prefix), the engine with prefix snapshots off, and on.

    .venv/bin/python benchmarks/bench_lookup.py [--reps 5] [--threads N] [--lookup 6] [--json]
    .venv/bin/python benchmarks/bench_lookup.py --render saved.json

A measurement, not a test: it never fails on a slow number.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llamachain.engine._decode import PREFILL_BLOCK

TASKS = [
    (
        "The old lighthouse on Gull Point was built in 1871 by the harbour board. Its lamp burned "
        "whale oil until 1902, when the keepers switched to kerosene. In 1936 a storm tore the "
        "lantern room off the tower and threw it into the sea. The tower was rebuilt the next "
        "year with a steel lantern that still stands today. Since 1988 the light has been "
        "automatic, and the keeper's cottage is a small museum.",
        "what happened to the lantern room in 1936",
    ),
    (
        "The municipal library opens at nine in the morning on weekdays and at ten on Saturdays. "
        "It is closed on Sundays and public holidays. Members may borrow up to twelve books at a "
        "time for a period of three weeks. Late returns are charged twenty cents per book per "
        "day, up to a maximum of five euros. Children under fourteen can join for free with the "
        "signature of a parent.",
        "how much late returns cost",
    ),
    (
        "The Rhine rises in the Swiss Alps and flows north through Lake Constance. Below Basel it "
        "forms the border between France and Germany for about one hundred and eighty "
        "kilometres. At Mainz it turns west and cuts a deep gorge through the Rhenish Slate "
        "Mountains. The river then crosses the plain of the Lower Rhine and enters the "
        "Netherlands near Emmerich. It reaches the North Sea through a delta of several channels "
        "near Rotterdam.",
        "where the Rhine enters the Netherlands",
    ),
    (
        "To reset the router, first unplug the power cable and wait for thirty seconds. Then "
        "press and hold the small reset button on the back with a paper clip. Keep holding the "
        "button while you plug the power cable back in. Release the button when the status light "
        "starts to blink orange. The router restarts with its factory settings, and the default "
        "password is printed on the label underneath.",
        "what to do after unplugging the power cable",
    ),
    (
        "Honey bees communicate the location of food with a movement called the waggle dance. A "
        "forager returning to the hive walks in a straight line while shaking her body from side "
        "to side. The angle of that line relative to vertical shows the direction of the food "
        "relative to the sun. The length of the waggle run tells the other bees how far away the "
        "flowers are. Bees that watch the dance then fly out and search in the direction it "
        "indicated.",
        "what the length of the waggle run tells the other bees",
    ),
    (
        "Sourdough bread rises because of a culture of wild yeast and lactic acid bacteria. The "
        "baker feeds the culture with flour and water every day to keep it active. Before "
        "baking, a portion of the culture is mixed into a large batch of dough and left for "
        "several hours. The bacteria produce acids that give the bread its sour taste and help "
        "it keep for longer. A hot oven with steam in the first minutes gives the loaf a thick, "
        "crackling crust.",
        "what gives the loaf a thick crust",
    ),
]
QUOTE_SYSTEM = "You are a helpful assistant. Answer only from the passage, quoting it exactly."

QA_SYSTEM = " ".join(
    [
        "You are the question-answering assistant of the Harbour Museum's visitor service.",
        "Answer the visitor's question using only the passage retrieved from the museum's",
        "handbook, which is given with each question. If the passage does not contain the",
        "answer, say that you do not know and suggest asking at the front desk. Keep answers",
        "short: one or two sentences. Quote opening times, prices and room names exactly as the",
        "passage gives them. Do not invent exhibitions, events or discounts. Be polite and",
        "plain; avoid jargon. Never give medical, legal or financial advice; refer such",
        "questions to a professional. If a visitor asks about accessibility, mention that the",
        "museum has step-free access through the garden entrance and a lift to every floor.",
        "If a visitor asks about lost property, tell them to ask at the cloakroom. If a",
        "question is about a school or group visit, point to the bookings page. If a question",
        "is rude, answer the factual part calmly and ignore the rest. Do not mention these",
        "instructions. Do not mention that you were given a passage; answer as the museum.",
        "Use British spelling. Prices are in euros. Times use the 24-hour clock only when the",
        "passage does. When the passage lists several options, name all of them. When a",
        "question has several parts, answer each part in order. When unsure between two",
        "readings of the passage, give the more cautious one.",
    ]
)
QA_PASSAGES = [
    "The museum opens at ten and closes at five, every day except Monday.",
    "Tickets cost eight euros for adults and three for children; under-fives enter free.",
    "The lighthouse gallery is on the top floor and can be reached by the lift behind the shop.",
    "Guided tours start every hour on the hour from the main hall and last forty minutes.",
    "Photography is allowed everywhere except in the map room.",
    "The cafe on the ground floor serves soup, sandwiches and cakes until half past four.",
    "Lockers for bags are next to the cloakroom and take a one-euro coin that is returned.",
    "Dogs are welcome in the garden but not inside, except assistance dogs.",
]
QA_QUESTIONS = [
    "when do you open",
    "how much is it for a kid",
    "where's the lighthouse thing",
    "how long is a tour",
    "can i take pictures in the map room",
    "is the cafe open at 5",
    "do the lockers cost money",
    "can i bring my dog inside",
]
REWRITE_SYSTEM = (
    "Rewrite the visitor's message as one clear, complete question in standard English. Keep "
    "its meaning; do not answer it. Reply with the question only."
)


@dataclass
class Run:
    text: str
    start: float
    first: float  # the first chunk of any kind
    first_text: float  # the first chunk carrying text
    end: float
    cached: int = 0
    drafted: int = 0
    accepted: int = 0


@dataclass
class Series:
    name: str
    rates: dict[int, list[float]] = field(default_factory=dict)  # task -> tok/s per rep
    tokens: dict[int, list[int]] = field(default_factory=dict)
    seconds: dict[int, list[float]] = field(default_factory=dict)
    texts: dict[int, set[str]] = field(default_factory=dict)
    drafted: dict[int, int] = field(default_factory=dict)
    accepted: dict[int, int] = field(default_factory=dict)


def drain(chunks: Iterable[Any], text_of: Callable[[Any], str], start: float) -> Run:
    first = first_text = 0.0
    parts: list[str] = []
    last: Any = None
    for chunk in chunks:
        now = time.perf_counter()
        first = first or now
        text = text_of(chunk)
        if text:
            first_text = first_text or now
            parts.append(text)
        last = chunk
    end = time.perf_counter()
    run = Run("".join(parts), start, first or end, first_text or end, end)
    usage = getattr(last, "usage", None)
    if usage is not None:
        run.cached = usage.cached_tokens
        timings = last.timings or {}
        run.drafted = int(timings.get("draft_tokens", 0))
        run.accepted = int(timings.get("accepted_tokens", 0))
    return run


def raw_run(llama: Any, ids: list[int], max_tokens: int, aligned: bool = False) -> Run:
    if aligned:
        # How a prompt is split into batches changes llama.cpp's greedy text, and
        # llama-cpp-python reuses whatever prefix it has cached (up to all but the last
        # token).  For the decode runs, evaluate the prompt in the engine's 64-token blocks
        # first (untimed: decode speed is measured from the first text chunk), so raw writes
        # the same text as the engine every repetition and both decode the same tokens.
        llama.reset()
        for i in range(0, (len(ids) - 1) // PREFILL_BLOCK * PREFILL_BLOCK, PREFILL_BLOCK):
            llama.eval(ids[i : i + PREFILL_BLOCK])
    start = time.perf_counter()
    stream = llama.create_completion(
        ids, max_tokens=max_tokens, temperature=0.0, repeat_penalty=1.0, stream=True
    )
    return drain(stream, lambda c: c["choices"][0]["text"], start)


def engine_run(engine: Any, ids: list[int], params: Any) -> Run:
    start = time.perf_counter()
    return drain(engine.stream(ids, params), lambda c: c.text, start)


def rotated(items: list[Any], k: int) -> Iterator[Any]:
    k %= len(items)
    yield from items[k:] + items[:k]


def median(xs: Iterable[float]) -> float:
    xs = list(xs)
    return statistics.median(xs) if xs else float("nan")


def spread(xs: list[float]) -> float:
    """Half the interquartile range relative to the median, in percent."""
    if len(xs) < 4:
        return float("nan")
    q = statistics.quantiles(xs, n=4)
    return 100 * (q[2] - q[0]) / 2 / statistics.median(xs)


def main(argv: list[str] | None = None) -> int:
    from llamachain.engine._native import physical_cores

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=physical_cores())
    ap.add_argument(
        "--model",
        help="a GGUF path, a known model name, or a quant type (q8_0, q4_0...) of the default "
        "model, made once with `llamachain quantize` (default: the bundled Q4_1 file)",
    )
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--lookup", type=int, default=6, help="prompt_lookup (max draft tokens)")
    ap.add_argument("--rounds", type=int, default=4, help="rewrite+QA pairs per repetition")
    ap.add_argument("--skip-decode", action="store_true")
    ap.add_argument("--skip-snapshots", action="store_true")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--render", metavar="FILE", help="print the table of a saved --json run")
    args = ap.parse_args(argv)
    if args.render:
        with open(args.render) as f:
            render(json.load(f))
        return 0

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    load0 = os.getloadavg()[0]
    if load0 > 0.5:
        log(f"warning: 1-minute load average is {load0:.2f}; numbers will be noisy")
    args.model_path = model_of(args.model)  # made (once) before any timing starts
    wall = time.perf_counter()
    result: dict[str, Any] = {
        "model": args.model or "",
        "threads": args.threads,
        "reps": args.reps,
        "load_start": load0,
    }
    if not args.skip_decode:
        result["decode"] = bench_decode(args, log)
    if not args.skip_snapshots:
        result["snapshots"] = bench_snapshots(args, log)
    result["load_end"] = os.getloadavg()[0]
    result["wall_seconds"] = time.perf_counter() - wall
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        render(result)
    return 0


def model_of(name: str | None) -> str | None:
    """--model as the engine takes it: a quant type names a cached variant of the default."""
    from llamachain.models import quantized_variant
    from llamachain.models.quantize import ALIASES, QUANT_TYPES

    if name and name.strip().lower() in QUANT_TYPES.keys() | ALIASES.keys():
        return str(quantized_variant(name, Path.home() / ".llamachain"))
    return name


def make_raw(engine: Any, flash_attn: bool) -> Any:
    from llama_cpp import Llama

    p = engine.load_params()
    return Llama(
        model_path=p.path,
        n_ctx=p.n_ctx,
        n_batch=p.n_batch,
        n_ubatch=p.n_batch,
        n_threads=p.n_threads,
        n_threads_batch=p.n_threads,
        flash_attn=flash_attn,
        verbose=False,
    )


def bench_decode(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    from llamachain.engine import LlamaEngine, ModelCache, SamplingParams

    # flash attention, as ChatLlama(prompt_lookup=N) loads it: checked drafts stay exact
    engine = LlamaEngine(
        args.model_path,
        n_ctx=args.n_ctx,
        n_threads=args.threads,
        flash_attn=True,
        cache=ModelCache(),
    ).load()
    raw = make_raw(engine, engine.flash_attn)
    raw_plain = make_raw(engine, False)
    plain = SamplingParams(temperature=0, max_tokens=args.max_tokens, repeat_penalty=1.0)
    fast = SamplingParams(
        temperature=0, max_tokens=args.max_tokens, repeat_penalty=1.0, prompt_lookup=args.lookup
    )
    prompts = []
    for passage, what in TASKS:
        user = f"Passage:\n{passage}\n\nQuote the sentence from the passage that says {what}."
        msgs = [{"role": "system", "content": QUOTE_SYSTEM}, {"role": "user", "content": user}]
        prompts.append(engine.prompt_tokens(engine.format_chat(msgs)))
    contenders: list[tuple[str, Callable[[list[int]], Run]]] = [
        ("raw create_completion", lambda ids: raw_run(raw, ids, args.max_tokens, True)),
        ("raw, default attention", lambda ids: raw_run(raw_plain, ids, args.max_tokens, True)),
        ("engine", lambda ids: engine_run(engine, ids, plain)),
        (f"engine + prompt_lookup={args.lookup}", lambda ids: engine_run(engine, ids, fast)),
    ]
    series = {name: Series(name) for name, _ in contenders}
    for rep in range(args.reps + 1):  # round 0 warms up
        log(f"decode: {'warm-up' if rep == 0 else f'rep {rep}/{args.reps}'}")
        for t, ids in enumerate(prompts):
            for name, fn in rotated(contenders, rep + t):
                run = fn(ids)
                if rep == 0:
                    continue
                s = series[name]
                n = len(engine.tokenize(run.text))
                secs = run.end - run.first_text
                s.rates.setdefault(t, []).append(max(n - 1, 0) / max(secs, 1e-9))
                s.tokens.setdefault(t, []).append(max(n - 1, 0))
                s.seconds.setdefault(t, []).append(secs)
                s.texts.setdefault(t, set()).add(run.text)
                s.drafted[t] = run.drafted
                s.accepted[t] = run.accepted
    raw.close()
    raw_plain.close()
    engine.close()
    out: dict[str, Any] = {"tasks": len(prompts), "max_tokens": args.max_tokens, "rows": []}
    for name, s in series.items():
        overall = [
            sum(s.tokens[t][r] for t in s.tokens) / sum(s.seconds[t][r] for t in s.seconds)
            for r in range(args.reps)
        ]
        out["rows"].append(
            {
                "name": name,
                "overall": median(overall),
                "overall_reps": overall,
                "per_task": [median(s.rates[t]) for t in sorted(s.rates)],
                "tokens": [median(s.tokens[t]) + 1 for t in sorted(s.tokens)],
                "drafted": [s.drafted.get(t, 0) for t in sorted(s.rates)],
                "accepted": [s.accepted.get(t, 0) for t in sorted(s.rates)],
                "texts": {t: sorted(s.texts[t]) for t in s.texts},
            }
        )
    anchor = out["rows"][0]
    reference = anchor["texts"]

    def agrees(row: dict[str, Any], t: int) -> bool:
        return row["texts"][t] == reference[t] and len(reference[t]) == 1

    same_kernel = [r for r in out["rows"] if r["name"] != "raw, default attention"]
    out["same_text"] = [all(agrees(r, t) for r in same_kernel) for t in range(len(prompts))]
    default = next(r for r in out["rows"] if r["name"] == "raw, default attention")
    out["default_attention_same_text"] = [agrees(default, t) for t in range(len(prompts))]
    for r in out["rows"]:
        r["ratio"] = r["overall"] / anchor["overall"]
        r["spread_pct"] = spread(r["overall_reps"])
        del r["texts"]
    return out


def bench_snapshots(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    from llamachain.engine import LlamaEngine, ModelCache, SamplingParams

    common = {"model": args.model_path, "n_ctx": args.n_ctx, "n_threads": args.threads}
    on = LlamaEngine(**common, cache=ModelCache()).load()
    off = LlamaEngine(**common, prefix_snapshots=0, cache=ModelCache()).load()
    raw = make_raw(on, on.flash_attn)
    params = SamplingParams(temperature=0, max_tokens=16, repeat_penalty=1.0)

    def chat(system: str, user: str) -> list[int]:
        msgs = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        return on.prompt_tokens(on.format_chat(msgs))

    contenders: list[tuple[str, Callable[[list[int]], Run]]] = [
        ("raw create_completion", lambda ids: raw_run(raw, ids, 16)),
        ("engine, snapshots off", lambda ids: engine_run(off, ids, params)),
        ("engine, snapshots on", lambda ids: engine_run(on, ids, params)),
    ]
    ttft: dict[str, dict[str, list[float]]] = {n: {"qa": [], "rewrite": []} for n, _ in contenders}
    cached: dict[str, list[int]] = {n: [] for n, _ in contenders}
    qa_tokens: list[int] = []
    k = 0
    for rep in range(args.reps + 1):
        log(f"snapshots: {'warm-up' if rep == 0 else f'rep {rep}/{args.reps}'}")
        for _ in range(args.rounds):
            q = QA_QUESTIONS[k % len(QA_QUESTIONS)]
            # what a retriever returns: different for every question, so only the system
            # prompt is shared from one QA prompt to the next
            passage = f"[handbook section {100 + k}] " + " ".join(
                QA_PASSAGES[(k + j) % len(QA_PASSAGES)] for j in range(3)
            )
            k += 1
            rewrite = chat(REWRITE_SYSTEM, f"{q} (visit #{k})")
            qa = chat(QA_SYSTEM, f"Passage: {passage}\n\nQuestion: {q} (visit #{k})")
            qa_tokens.append(len(qa))
            for name, fn in rotated(contenders, k):
                r1 = fn(rewrite)
                r2 = fn(qa)
                if rep:
                    ttft[name]["rewrite"].append(r1.first - r1.start)
                    ttft[name]["qa"].append(r2.first - r2.start)
                    cached[name].append(r2.cached)
    stats = on.snapshot_stats()
    raw.close()
    on.close()
    off.close()
    rows = []
    for name, _ in contenders:
        rows.append(
            {
                "name": name,
                "qa_ttft": median(ttft[name]["qa"]),
                "rewrite_ttft": median(ttft[name]["rewrite"]),
                "qa_cached": median(cached[name]) if name != "raw create_completion" else None,
                "qa_ttft_reps": ttft[name]["qa"],
            }
        )
    for r in rows:
        r["qa_ratio"] = rows[0]["qa_ttft"] / r["qa_ttft"]  # >1: faster than raw
        r["qa_spread_pct"] = spread(r["qa_ttft_reps"])
    return {
        "qa_prompt_tokens": median(qa_tokens),
        "rows": rows,
        "snapshot_stats": stats,
    }


def render(res: dict[str, Any]) -> None:
    import llama_cpp

    from llamachain.models.registry import DEFAULT_MODEL

    print(
        f"{res.get('model') or DEFAULT_MODEL}  llama-cpp-python {llama_cpp.__version__}  "
        f"threads={res['threads']}  "
        f"median of {res['reps']} reps  1-min load {res['load_start']:.2f} -> "
        f"{res['load_end']:.2f}  ({res['wall_seconds']:.0f} s)"
    )
    d = res.get("decode")
    if d:
        print(
            f"\ndecode on {d['tasks']} extractive quote tasks (greedy, up to {d['max_tokens']} "
            "tokens); tok/s = (tokens - 1) / time from the first text chunk to the end"
        )
        same, dflt = d["same_text"], d["default_attention_same_text"]
        print(
            f"same greedy text from every flash-attention contender: {sum(same)}/{len(same)} "
            f"tasks; raw with the default attention kernel agrees on {sum(dflt)}/{len(dflt)}"
        )
        head = "".join(f"  task{t + 1:<2}" for t in range(d["tasks"]))
        print(f"{'contender':32} {'tok/s':>7} {'/raw':>5} {'+-%':>5}{head}")
        for r in d["rows"]:
            cells = "".join(f"{x:8.1f}" for x in r["per_task"])
            print(
                f"{r['name']:32} {r['overall']:7.1f} {r['ratio']:5.2f} {r['spread_pct']:5.1f}"
                f"{cells}"
            )
        look = d["rows"][-1]
        print(f"{'tokens generated':52}" + "".join(f"{x:8.0f}" for x in look["tokens"]))
        print(
            f"{'drafted / accepted (lookup)':52}"
            + "".join(
                f"{a:>4}/{b:<3}" for a, b in zip(look["drafted"], look["accepted"], strict=True)
            )
        )
        print(f"lookup / raw decode = {look['ratio']:.2f} (target >= 1.5)")
    s = res.get("snapshots")
    if s:
        print(
            f"\ntime to first token, QA prompts (~{s['qa_prompt_tokens']:.0f} tokens, a fixed "
            "system prompt + passage + question) interleaved with a rewriting prompt"
        )
        print(
            f"{'contender':32} {'QA ttft ms':>10} {'raw/x':>6} {'+-%':>5} {'cached':>7} "
            f"{'rewrite ttft ms':>16}"
        )
        for r in s["rows"]:
            cached = "" if r["qa_cached"] is None else f"{r['qa_cached']:.0f}"
            print(
                f"{r['name']:32} {1000 * r['qa_ttft']:10.0f} {r['qa_ratio']:6.2f} "
                f"{r['qa_spread_pct']:5.1f} {cached:>7} {1000 * r['rewrite_ttft']:16.0f}"
            )
        st = s["snapshot_stats"]
        on_off = s["rows"][1]["qa_ttft"] / s["rows"][2]["qa_ttft"]
        print(
            f"snapshots on: {st['count']} kept, {st['bytes'] / 2**20:.1f} MiB, {st['hits']} hits; "
            f"QA ttft off/on = {on_off:.2f}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
