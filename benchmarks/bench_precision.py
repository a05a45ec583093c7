"""The default model at f16 / q8_0 / q4_k_m / q4_1 / q4_0: size, perplexity, speed.

Per precision: the file size, the perplexity on a real text (``llamachain.models.perplexity``)
and its difference to f16, and prefill (pp512) and decode (tg128) speed through llamachain's
engine, through raw llama-cpp-python, and through llama.cpp's own ``llama-bench`` built from
the llama.cpp inside the same llama-cpp-python sdist (``_llama_bench.py``; built once into
~/.cache/llamachain/llama-bench/).  The shipped file is Q4_1, so every other variant is made
from it by ``quantized_variant`` -- f16 is "Q4_1 dequantized", and the deltas measure what
each format loses relative to the Q4_1 weights, not to the original checkpoint.

    .venv/bin/python benchmarks/bench_precision.py [--reps 5] [--threads N] [--json]

A measurement, not a test: it never fails on a slow number.  Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _llama_bench  # benchmarks/ is not a package: imported from sys.path
from corpus import ensure_corpus

from llamachain.engine._decode import PREFILL_BLOCK

PRECISIONS = ("f16", "q8_0", "q4_k_m", "q4_1", "q4_0")
# Prose-heavy pages of the Flask docs (reStructuredText), in this order, until the text has
# at least --ppl-chars characters.
PPL_PAGES = (
    "flask/design.rst",
    "flask/quickstart.rst",
    "flask/lifecycle.rst",
    "flask/appcontext.rst",
    "flask/reqcontext.rst",
    "flask/blueprints.rst",
    "flask/web-security.rst",
    "flask/extensiondev.rst",
    "flask/errorhandling.rst",
    "flask/config.rst",
    "flask/views.rst",
    "flask/testing.rst",
    "flask/templating.rst",
    "flask/signals.rst",
)
Log = Callable[[str], None]


@dataclass(frozen=True)
class Config:
    threads: int
    reps: int = 5
    n_prompt: int = 512
    n_gen: int = 128
    ppl_ctx: int = 512
    ppl_stride: int | None = None  # None: ppl_ctx - 1 (windows overlap by one context token)
    ppl_chars: int = 90_000
    precisions: tuple[str, ...] = PRECISIONS
    skip_llama_bench: bool = False
    skip_speed: bool = False
    skip_ppl: bool = False
    logits_all_windows: int = 8  # 0: skip the logits_all comparison
    prefill_block: int | None = None  # the engine's prompt block; None: its default (64)


def ppl_text(root: Path, min_chars: int) -> tuple[str, list[str]]:
    parts: list[str] = []
    pages: list[str] = []
    for rel in PPL_PAGES:
        parts.append((root / rel).read_text(encoding="utf-8"))
        pages.append(rel)
        if sum(len(p) for p in parts) >= min_chars:
            break
    return "\n\n".join(parts), pages


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def engine_speed(path: Path, cfg: Config, prompt: list[int], short: list[int]) -> dict[str, Any]:
    """pp: one fresh n_prompt-token prompt, one new token; tg: n_gen new tokens, greedy."""
    from llamachain.engine import LlamaEngine
    from llamachain.engine.generation import SamplingParams

    n_ctx = cfg.n_prompt + cfg.n_gen + 64
    greedy = dict(temperature=0.0, repeat_penalty=1.0, seed=0)
    with LlamaEngine(
        path,
        n_ctx=n_ctx,
        n_threads=cfg.threads,
        prefix_cache=False,
        prefill_block=cfg.prefill_block,
        prefill_copy="off",  # each format's own kernels: this compares formats with llama-bench
    ) as engine:
        engine.load()
        pp: list[float] = []
        tg: list[float] = []
        generated: list[int] = []
        for rep in range(-1, cfg.reps):  # one warm-up
            last = list(engine.stream(prompt, SamplingParams(max_tokens=1, **greedy)))[-1]
            timings = last.timings or {}
            out = list(engine.stream(short, SamplingParams(max_tokens=cfg.n_gen, **greedy)))
            usage, t = out[-1].usage, out[-1].timings or {}
            if rep >= 0:
                pp.append(len(prompt) / max(timings["prompt_seconds"], 1e-9))
                tg.append(t["decode_tokens_per_second"])
                generated.append(usage.completion_tokens if usage else 0)
    return {"pp": _median(pp), "tg": _median(tg), "pp_runs": pp, "tg_runs": tg, "gen": generated}


def raw_speed(path: Path, cfg: Config, prompt: list[int], short: list[int]) -> dict[str, Any]:
    """The same through llama_cpp.Llama: ``eval`` of the whole prompt; ``generate`` loop."""
    from llama_cpp import Llama

    llama = Llama(
        model_path=str(path),
        n_ctx=cfg.n_prompt + cfg.n_gen + 64,
        n_batch=cfg.n_prompt,
        n_ubatch=cfg.n_prompt,
        n_threads=cfg.threads,
        n_threads_batch=cfg.threads,
        flash_attn=True,
        verbose=False,
    )
    pp: list[float] = []
    tg: list[float] = []
    try:
        for rep in range(-1, cfg.reps):
            llama.reset()
            start = time.perf_counter()
            llama.eval(prompt)
            pp_s = time.perf_counter() - start
            llama.reset()
            n, first, end = 0, 0.0, 0.0
            for _tok in llama.generate(short, temp=0.0, repeat_penalty=1.0, reset=True):
                n += 1
                end = time.perf_counter()
                if n == 1:
                    first = end
                if n >= cfg.n_gen:
                    break
            if rep >= 0:
                pp.append(len(prompt) / pp_s)
                tg.append((n - 1) / max(end - first, 1e-9))
    finally:
        llama.close()
    return {"pp": _median(pp), "tg": _median(tg), "pp_runs": pp, "tg_runs": tg}


def logits_all_comparison(
    path: Path, text: str, cfg: Config, windows: int, ours: Any
) -> dict[str, Any]:
    """``Llama(logits_all=True)`` + ``eval`` + ``scores`` on the first ``windows`` windows of
    the plan that ``ours`` (perplexity()'s result on the same file and text) used: the same
    tokens scored, the time, and the logits each approach keeps per window."""
    import math

    import numpy as np
    from llama_cpp import Llama

    from llamachain.models.perplexity import plan_windows, window_width

    n_ctx = cfg.ppl_ctx
    llama = Llama(
        model_path=str(path),
        n_ctx=n_ctx,
        n_batch=n_ctx,
        n_ubatch=n_ctx,
        n_threads=cfg.threads,
        n_threads_batch=cfg.threads,
        logits_all=True,
        flash_attn=True,
        verbose=False,
    )
    try:
        add_bos = bool(llama._model.add_bos_token())
        bos = [llama.token_bos()] if add_bos else []
        ids = list(llama.tokenize(text.encode(), add_bos=False, special=False))
        stride = ours.stride
        ids = ids[: window_width(n_ctx, add_bos) + (windows - 1) * stride]
        plan = plan_windows(len(ids), n_ctx, stride, add_bos)
        nll: list[float] = []
        start = time.perf_counter()
        for w in plan:
            window = bos + ids[w.start : w.end]
            llama.reset()
            llama.eval(window)
            first = len(bos) + w.score_from - w.start
            rows = np.asarray(llama.scores[first - 1 : len(window) - 1], dtype=np.float64)
            mx = rows.max(axis=1)
            lse = np.log(np.exp(rows - mx[:, None]).sum(axis=1)) + mx
            nll.extend(lse - rows[np.arange(len(rows)), window[first:]])
        logits_all_s = time.perf_counter() - start
        n_vocab = llama.n_vocab()
    finally:
        llama.close()
    ours_nll = ours.token_nll[: len(nll)]  # the first windows of its plan are these
    ours_s = ours.seconds * len(plan) / ours.windows  # its mean time per window
    return {
        "windows": len(plan),
        "tokens_scored": len(nll),
        "max_abs_nll_diff": float(np.max(np.abs(ours_nll - np.asarray(nll)))),
        "ppl_logits_all": math.exp(float(np.mean(nll))),
        "ppl_batch_api": math.exp(float(np.mean(ours_nll))),
        "seconds_logits_all": logits_all_s,
        "seconds_batch_api": ours_s,
        "logits_bytes_per_window_logits_all": n_ctx * n_vocab * 4,
        "logits_bytes_per_window_batch_api": stride * n_vocab * 4,
    }


def run(cfg: Config, home: Path, log: Log) -> dict[str, Any]:
    from llamachain.models import quantized_variant, read_model_info
    from llamachain.models.perplexity import perplexity

    load_start = os.getloadavg()
    if load_start[0] > 0.5:
        log(
            f"warning: 1-minute load average {load_start[0]:.2f}: other processes compete for "
            "the cores, the speed numbers will be low and noisy (perplexity is not affected)"
        )
    corpus = ensure_corpus(log=log)
    text, pages = ppl_text(corpus, cfg.ppl_chars)
    bench_bin: Path | None = None
    bench_info: dict[str, Any] = {}
    if not (cfg.skip_llama_bench or cfg.skip_speed):
        started = time.perf_counter()
        bench_bin, bench_info = _llama_bench.ensure_llama_bench(log)
        bench_info["ensure_seconds"] = round(time.perf_counter() - started, 1)

    rows: list[dict[str, Any]] = []
    doc_extra: dict[str, Any] = {}
    prompt: list[int] = []
    short: list[int] = []
    for qtype in cfg.precisions:
        log(f"[{qtype}] making / finding the variant")
        path = quantized_variant(qtype, home)
        info = read_model_info(path)
        row: dict[str, Any] = {
            "precision": qtype,
            "file_type": info.file_type,
            "path": str(path),
            "file_size": info.file_size,
        }
        if not cfg.skip_ppl:
            log(f"[{qtype}] perplexity on {len(text):,} characters")
            last = [0.0]

            def progress(done: int, total: int, last: list[float] = last, q: str = qtype) -> None:
                now = time.perf_counter()
                if now - last[0] > 15 or done == total:
                    last[0] = now
                    log(f"[{q}]   scored {done:,}/{total:,} tokens")

            res = perplexity(
                path,
                text,
                n_ctx=cfg.ppl_ctx,
                stride=cfg.ppl_stride or cfg.ppl_ctx - 1,
                n_threads=cfg.threads,
                progress=progress,
            )
            row.update(
                ppl=res.ppl,
                ppl_stderr=res.ppl_stderr,
                nll=res.nll,
                tokens_scored=res.tokens_scored,
                ppl_stride=res.stride,
                ppl_windows=res.windows,
                ppl_seconds=res.seconds,
                ppl_tokens_per_s=res.tokens_per_second,
            )
            if qtype == "q4_1" and cfg.logits_all_windows > 0:
                log(f"[{qtype}] the same windows through Llama(logits_all=True)")
                doc_extra["logits_all"] = logits_all_comparison(
                    path, text, cfg, cfg.logits_all_windows, res
                )
        if not cfg.skip_speed:
            if not prompt:
                from llamachain.engine import LlamaEngine

                with LlamaEngine(path, n_ctx=cfg.ppl_ctx * 4, n_threads=cfg.threads) as e:
                    ids = e.tokenize(text)
                prompt, short = ids[: cfg.n_prompt], ids[:16]
            log(f"[{qtype}] engine pp{cfg.n_prompt} / tg{cfg.n_gen}")
            row["engine"] = engine_speed(path, cfg, prompt, short)
            log(f"[{qtype}] raw llama-cpp-python pp{cfg.n_prompt} / tg{cfg.n_gen}")
            row["raw"] = raw_speed(path, cfg, prompt, short)
            if bench_bin is not None:
                log(f"[{qtype}] llama-bench -p {cfg.n_prompt} -n {cfg.n_gen}")
                row["llama_bench"] = _llama_bench.run_llama_bench(
                    bench_bin,
                    path,
                    threads=cfg.threads,
                    n_prompt=cfg.n_prompt,
                    n_gen=cfg.n_gen,
                    reps=cfg.reps,
                )
        row["load_average"] = os.getloadavg()[0]
        rows.append(row)

    base = next((r for r in rows if r["precision"] == "f16" and "ppl" in r), None)
    for r in rows:
        if base is not None and "ppl" in r:
            r["ppl_delta_vs_f16"] = r["ppl"] - base["ppl"]
        lb = r.get("llama_bench")
        if lb:
            for side in ("engine", "raw"):
                r[side]["pp_vs_llama_bench"] = r[side]["pp"] / lb["pp"]
                r[side]["tg_vs_llama_bench"] = r[side]["tg"] / lb["tg"]
    import llama_cpp

    return {
        "config": asdict(cfg),
        "text": {"corpus": str(corpus), "pages": pages, "characters": len(text)},
        "llama_cpp_python": llama_cpp.__version__,
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "llama_bench": {"binary": str(bench_bin) if bench_bin else None, **bench_info},
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "rows": rows,
        **doc_extra,
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def table(doc: dict[str, Any]) -> str:
    cfg, rows = doc["config"], doc["rows"]
    load = doc["load_average"]
    stride = next((r["ppl_stride"] for r in rows if "ppl_stride" in r), cfg["ppl_stride"])
    scored = next((r["tokens_scored"] for r in rows if "tokens_scored" in r), 0)
    lines = [
        f"SmolLM2-135M-Instruct variants made from the shipped Q4_1 file (f16 = Q4_1 "
        f"dequantized); {doc['cpu']}, threads={cfg['threads']}, llama-cpp-python "
        f"{doc['llama_cpp_python']}",
        f"perplexity: {doc['text']['characters']:,} characters of the Flask docs "
        f"({len(doc['text']['pages'])} pages), {scored:,} tokens scored, n_ctx "
        f"{cfg['ppl_ctx']}, stride {stride}",
        f"speed: pp{cfg['n_prompt']} = one {cfg['n_prompt']}-token prompt, tg{cfg['n_gen']} = "
        f"{cfg['n_gen']} tokens one by one; median of {cfg['reps']} (llama-bench: its mean); "
        f"1-min load {load['start'][0]:.2f} -> {load['end'][0]:.2f}; engine prefill block "
        f"{cfg.get('prefill_block') or PREFILL_BLOCK} tokens",
        "",
    ]
    header = ["precision", "size MiB", "ppl", "+-", "delta f16"]
    speed = any("engine" in r for r in rows)
    bench = any("llama_bench" in r for r in rows)
    if speed:
        header += ["pp engine", "pp raw", "tg engine", "tg raw"]
    if bench:
        header += ["pp bench", "tg bench", "pp eng/bench", "tg eng/bench"]
    out = []
    for r in rows:
        cells = [
            r["precision"],
            f"{r['file_size'] / 2**20:.1f}",
            f"{r['ppl']:.4f}" if "ppl" in r else "-",
            f"{r['ppl_stderr']:.4f}" if "ppl" in r else "-",
            f"{r['ppl_delta_vs_f16']:+.4f}" if "ppl_delta_vs_f16" in r else "-",
        ]
        if speed:
            e, w = r["engine"], r["raw"]
            cells += [f"{e['pp']:.1f}", f"{w['pp']:.1f}", f"{e['tg']:.1f}", f"{w['tg']:.1f}"]
        if bench:
            b = r["llama_bench"]
            cells += [
                f"{b['pp']:.1f}",
                f"{b['tg']:.1f}",
                f"{r['engine']['pp_vs_llama_bench']:.2f}",
                f"{r['engine']['tg_vs_llama_bench']:.2f}",
            ]
        out.append(cells)
    widths = [max(len(c[i]) for c in [header, *out]) for i in range(len(header))]
    for cells in [header, *out]:
        lines.append("  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)))
    la = doc.get("logits_all")
    if la:
        lines += [
            "",
            f"perplexity method, first {la['windows']} windows of q4_1 ({la['tokens_scored']:,} "
            f"tokens): batch API {la['seconds_batch_api']:.1f} s, logits_all=True "
            f"{la['seconds_logits_all']:.1f} s; max |NLL difference| "
            f"{la['max_abs_nll_diff']:.2e}; logits kept per window "
            f"{la['logits_bytes_per_window_batch_api'] / 2**20:.0f} MiB vs "
            f"{la['logits_bytes_per_window_logits_all'] / 2**20:.0f} MiB",
        ]
    if bench:
        worst = min(
            min(r["engine"]["pp_vs_llama_bench"], r["engine"]["tg_vs_llama_bench"]) for r in rows
        )
        lines += [
            "",
            f"llamachain engine / llama-bench, worst of pp and tg over the precisions: "
            f"{worst:.2f} (target >= 0.95)",
            f"llama-bench: {doc['llama_bench'].get('binary')}",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from llamachain.engine._native import physical_cores
    from llamachain.settings import Settings

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=physical_cores())
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--precisions", default=",".join(PRECISIONS))
    ap.add_argument("--ppl-ctx", type=int, default=512)
    ap.add_argument(
        "--ppl-stride",
        type=int,
        default=None,
        help="default: --ppl-ctx - 1 (each token scored once, half the work of ctx/2)",
    )
    ap.add_argument("--ppl-chars", type=int, default=90_000, help="size of the text")
    ap.add_argument(
        "--logits-all-windows",
        type=int,
        default=8,
        help="windows to score again through Llama(logits_all=True) on q4_1 (0: skip)",
    )
    ap.add_argument("--home", type=Path, default=None, help="where variants are cached")
    ap.add_argument("--skip-llama-bench", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-ppl", action="store_true")
    ap.add_argument(
        "--prefill-block",
        type=int,
        default=None,
        help=f"the engine's prompt evaluation block (default: {PREFILL_BLOCK})",
    )
    ap.add_argument("--json", action="store_true", help="print a JSON document instead")
    args = ap.parse_args(argv)
    cfg = Config(
        threads=args.threads,
        reps=args.reps,
        ppl_ctx=args.ppl_ctx,
        ppl_stride=args.ppl_stride,
        ppl_chars=args.ppl_chars,
        precisions=tuple(p.strip().lower() for p in args.precisions.split(",") if p.strip()),
        skip_llama_bench=args.skip_llama_bench,
        skip_speed=args.skip_speed,
        skip_ppl=args.skip_ppl,
        logits_all_windows=args.logits_all_windows,
        prefill_block=args.prefill_block,
    )
    home = args.home or Settings().home
    started = time.perf_counter()
    doc = run(cfg, home, lambda msg: print(msg, file=sys.stderr, flush=True))
    doc["wall_seconds"] = time.perf_counter() - started
    print(json.dumps(doc, indent=2) if args.json else table(doc))


if __name__ == "__main__":
    main()
