"""What checking a prompt-lookup draft costs: one forward pass of k tokens, per file format.

Prompt lookup (``SamplingParams(prompt_lookup=N)``) evaluates ``[last token] + draft`` in one
``llama_decode`` and keeps the tokens the model agrees with.  It can only be faster than
one-token-at-a-time decoding if a batch of k tokens costs much less than k single steps.
This script measures exactly that, on a bare llama-cpp-python context with the engine's
load parameters and logits for every position, as the lookup decoder asks for, with each
attention kernel (``--attention``: flash, what ``ChatLlama(prompt_lookup=N)`` loads, and
llama.cpp's default, what generation loads otherwise; the k=1 rows are one decode step):

- a prompt of ``--n-past`` tokens is evaluated once (untimed);
- each batch of k tokens is decoded at that position ``--reps`` times (every round times
  every k, in a rotating order), its KV cells removed again after each run; medians are kept;
- ``cost`` = that median / the median of a one-token step; ``best case`` = k / cost, the
  speed-up of a draft of k - 1 tokens that is accepted whole, the ceiling prompt lookup can
  reach with drafts of that length.

    .venv/bin/python benchmarks/bench_batch.py                      # Q4_1 (bundled) and Q8_0
    .venv/bin/python benchmarks/bench_batch.py --models q4_1 f16 q4_0 --n-past 300 1500
    .venv/bin/python benchmarks/bench_batch.py --attention flash --n-past 2000 --json > r.json
    .venv/bin/python benchmarks/bench_batch.py --render r.json

``--models`` takes GGUF paths or quant types of the default model (``q8_0``, ``f16``,
``q4_0``...; made once with ``llamachain quantize`` and cached, as in ``bench_lookup.py``);
``q4_1`` is the bundled file itself.  A measurement, not a test: it never fails on a slow
number.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lookup import model_of  # benchmarks/ is not a package: imported from beside us

TEXT = (
    "The harbour board built the lighthouse on Gull Point in 1871. Its lamp burned whale oil "
    "until 1902, when the keepers switched to kerosene, and a storm in 1936 tore the lantern "
    "room off the tower. The tower was rebuilt the next year with a steel lantern. "
)


def model_path(name: str) -> str:
    """A GGUF path, or a quant type of the default model (``q4_1``: the bundled file)."""
    from llamachain.models import resolve_model_path

    if name.strip().lower() == "q4_1":
        return str(resolve_model_path(None))
    return str(model_of(name))  # bench_lookup's --model rule: other types are cached variants


def measure(path: str, flash: bool, args: argparse.Namespace, log: Any) -> dict[str, Any]:
    from llama_cpp import Llama
    from llama_cpp._internals import LlamaBatch

    llama = Llama(
        model_path=path,
        n_ctx=args.n_ctx,
        n_batch=512,
        n_ubatch=512,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        flash_attn=flash,
        verbose=False,
    )
    try:
        ids = llama.tokenize(TEXT.encode())
        prompt = (ids * (args.n_ctx // len(ids) + 1))[: max(args.n_past) + max(args.ks)]
        batch = LlamaBatch(n_tokens=max(args.ks), embd=0, n_seq_max=1, verbose=False)
        rows = []
        try:
            for n_past in sorted(args.n_past):
                llama.reset()  # eval() drops the old KV cells
                llama.eval(prompt[:n_past])
                samples: dict[int, list[float]] = {k: [] for k in args.ks}
                for rep in range(args.reps + 1):  # round 0 warms up
                    # every round times every k, in an order that rotates, so that drift
                    # and background load hit all batch sizes alike
                    shift = rep % len(args.ks)
                    for k in args.ks[shift:] + args.ks[:shift]:
                        batch.set_batch(
                            batch=prompt[n_past : n_past + k], n_past=n_past, logits_all=True
                        )
                        t0 = time.perf_counter()
                        llama._ctx.decode(batch)
                        elapsed = time.perf_counter() - t0
                        llama._ctx.kv_cache_seq_rm(-1, n_past, -1)
                        if rep:
                            samples[k].append(elapsed)
                times = {k: statistics.median(v) for k, v in samples.items()}
                one = times[1]
                for k in args.ks:
                    cost = times[k] / one
                    rows.append(
                        {
                            "n_past": n_past,
                            "k": k,
                            "ms": times[k] * 1000,
                            "cost": cost,
                            "best_case": k / cost,
                        }
                    )
                log(f"  n_past={n_past}: one step {one * 1000:.2f} ms")
        finally:
            batch.close()
    finally:
        llama.close()
    return {"path": path, "flash_attn": flash, "rows": rows}


def render(res: dict[str, Any]) -> None:
    print(
        f"threads={res['threads']} n_ctx={res['n_ctx']} "
        f"median of {res['reps']} runs per batch; "
        f"load {res['load_start']:.2f} -> {res['load_end']:.2f}"
    )
    print("cost = time of a k-token batch / time of one step; best = k / cost (a whole draft")
    print("of k-1 tokens accepted: the most prompt lookup can gain with drafts that long)")
    print()
    head = f"{'model':<34} {'attention':<9} {'n_past':>6} {'k':>3} {'ms':>8} {'cost':>6}"
    print(f"{head} {'best':>6} {'+/tok':>6}")
    steps: dict[tuple[str, int], dict[bool, float]] = {}
    for m in res["models"]:
        name = Path(m["path"]).name
        kernel = "flash" if m["flash_attn"] else "default"
        for r in m["rows"]:
            slope = (r["cost"] - 1) / (r["k"] - 1) if r["k"] > 1 else float("nan")
            print(
                f"{name[:34]:<34} {kernel:<9} {r['n_past']:>6} {r['k']:>3} {r['ms']:>8.2f} "
                f"{r['cost']:>6.2f} {r['best_case']:>6.2f} {slope:>6.2f}"
            )
            if r["k"] == 1:
                steps.setdefault((name, r["n_past"]), {})[m["flash_attn"]] = r["ms"]
    print()
    print("+/tok: what each token after the first adds, in one-step units (0 = checked for free)")
    both = {key: v for key, v in steps.items() if len(v) == 2}
    if both:
        print()
        print("one decode step (k=1), flash attention against the default kernel:")
        print(
            f"{'model':<34} {'n_past':>6} {'flash ms':>9} {'default ms':>10} {'flash/default':>13}"
        )
        for (name, n_past), v in both.items():
            print(
                f"{name[:34]:<34} {n_past:>6} {v[True]:>9.2f} {v[False]:>10.2f} "
                f"{v[True] / v[False]:>13.2f}"
            )


def main(argv: list[str] | None = None) -> int:
    from llamachain.engine._native import physical_cores

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["q4_1", "q8_0"])
    ap.add_argument("--n-past", type=int, nargs="+", default=[300])
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 7, 9, 13])
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument(
        "--n-ctx", type=int, default=2048, help="context size (raised to fit --n-past if needed)"
    )
    ap.add_argument("--threads", type=int, default=physical_cores())
    ap.add_argument(
        "--attention",
        nargs="+",
        choices=["flash", "default"],
        default=["flash", "default"],
        help="llama.cpp attention kernels to measure (flash: what prompt lookup loads)",
    )
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--render", metavar="FILE", help="print the table of a saved --json run")
    args = ap.parse_args(argv)
    if args.render:
        with open(args.render) as f:
            render(json.load(f))
        return 0
    if min(args.ks) < 1 or max(args.ks) > 63:
        ap.error("--ks must lie in 1..63 (the lookup decoder's batch limit)")
    args.ks = sorted(set(args.ks) | {1})
    args.n_ctx = max(args.n_ctx, max(args.n_past) + max(args.ks) + 16)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    load0 = os.getloadavg()[0]
    if load0 > 0.5:
        log(f"warning: 1-minute load average is {load0:.2f}; numbers will be noisy")
    paths = [model_path(m) for m in args.models]  # quantized (once) before any timing
    res: dict[str, Any] = {
        "threads": args.threads,
        "n_ctx": args.n_ctx,
        "reps": args.reps,
        "load_start": load0,
        "models": [],
    }
    for path in paths:
        for kernel in args.attention:
            log(f"{Path(path).name}, {kernel} attention:")
            res["models"].append(measure(path, kernel == "flash", args, log))
    res["load_end"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        render(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
