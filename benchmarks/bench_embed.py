"""Embedding speed and fidelity: llamachain's backends against LangChain's stock path.

Every contender embeds the same ~500 chunks of real English prose (docstrings of this Python's
standard library, cut into ~200-token chunks with the model's own tokenizer) with the same
bundled all-MiniLM-L6-v2 directory:

- ``stock HuggingFaceEmbeddings``: langchain-community's class, default settings;
- ``torch bs=N``: ``LocalEmbeddings(backend="torch", batch_size=N)``;
- ``torch threads=N``: the same with ``torch.set_num_threads(N)`` (physical cores);
- ``onnx bs=N``: ``LocalEmbeddings(backend="onnx")`` (exported once, cached under --home);
- ``onnx-int8``: ``LocalEmbeddings(backend="onnx-int8")``;
- ``torch bf16``: ``LocalEmbeddings(precision="bf16")`` (the default on CPUs with native bf16).

Each round runs every contender once, in an order that rotates each round; the table shows the
median chunks/s, the ratio to the stock path, and how close each contender's vectors are to
torch fp32 (cosine, mean and min over all chunks).  A quantized path counts as correct when its
min cosine is >= 0.99; a full-precision one when it is >= 0.9999.

    .venv/bin/python benchmarks/bench_embed.py [--chunks 500] [--reps 3] [--json]

This is a measurement, not a test: it never fails on a slow number.
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import statistics
import sys
import sysconfig
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def prose_chunks(n: int, tokens: int, offsets: Callable[[str], list[tuple[int, int]]]) -> list[str]:
    """``n`` chunks of ``tokens`` tokens of the standard library's longer docstrings."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    docs: list[str] = []
    for path in sorted(stdlib.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 300:
                    docs.append(" ".join(doc.split()))
    text = " ".join(docs)
    spans = offsets(text)
    chunks = [
        text[spans[i][0] : spans[i + tokens - 1][1]]
        for i in range(0, len(spans) - tokens + 1, tokens)
    ]
    if len(chunks) < n:
        log(f"only {len(chunks)} chunks of {tokens} tokens available")
    return chunks[:n]


@dataclass
class Contender:
    name: str
    make: Callable[[], Callable[[list[str]], Any]]
    precision: str = "fp32"  # fp32 | int8 | bf16
    threads: int | None = None  # torch.set_num_threads while this one runs
    run: Callable[[list[str]], Any] | None = None
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    vectors: Any = None
    load_seconds: float = 0.0
    error: str | None = None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chunks", type=int, default=500)
    ap.add_argument("--tokens", type=int, default=200, help="tokens per chunk")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch-sizes", default="16,32,64")
    ap.add_argument("--home", type=Path, default=None, help="llamachain home (ONNX cache)")
    ap.add_argument("--skip-stock", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    import numpy as np
    import torch

    from llamachain.embeddings import LocalEmbeddings
    from llamachain.engine._native import physical_cores
    from llamachain.settings import Settings

    home = args.home or Path(tempfile.mkdtemp(prefix="bench-embed-"))
    settings = Settings(home=home)
    base = LocalEmbeddings(settings=settings)
    model_dir = str(base.model_dir)
    texts = prose_chunks(args.chunks, args.tokens, base.token_offsets)
    n_tokens = sum(base.count_tokens(texts))
    default_threads = torch.get_num_threads()
    cores = physical_cores()
    load0 = os.getloadavg()[0]
    if load0 > 0.5:
        log(f"warning: 1-minute load average is {load0:.2f}; the numbers will be noisy")

    def local(
        backend: str, bs: int, precision: str = "fp32"
    ) -> Callable[[], Callable[[list[str]], Any]]:
        def make() -> Callable[[list[str]], Any]:
            emb = LocalEmbeddings(
                backend=backend, batch_size=bs, precision=precision, settings=settings
            ).load()
            return emb.embed_documents

        return make

    def stock() -> Callable[[list[str]], Any]:
        from langchain_community.embeddings import HuggingFaceEmbeddings

        return HuggingFaceEmbeddings(model_name=model_dir).embed_documents

    sizes = [int(b) for b in args.batch_sizes.split(",")]
    contenders: list[Contender] = []
    if not args.skip_stock:
        contenders.append(Contender("stock HuggingFaceEmbeddings", stock))
    contenders += [Contender(f"torch bs={b}", local("torch", b)) for b in sizes]
    # bfloat16 autocast: the default ("auto") where the CPU has native bf16 (AVX512-BF16/AMX).
    contenders.append(Contender("torch bf16 bs=32", local("torch", 32, "bf16"), "bf16"))
    if cores != default_threads:
        contenders.append(
            Contender(f"torch bs=32 threads={cores}", local("torch", 32), "fp32", cores)
        )
    contenders += [Contender(f"onnx bs={b}", local("onnx", b)) for b in sizes]
    contenders.append(Contender("onnx-int8 bs=32", local("onnx-int8", 32), "int8"))

    for c in contenders:  # load and warm up (an ONNX export happens here on first use)
        start = time.perf_counter()
        try:
            c.run = c.make()
            c.run(texts[:8])
        except Exception as e:  # report and go on: one broken path must not hide the others
            c.error = f"{type(e).__name__}: {e}"
            log(f"{c.name}: {c.error}")
        c.load_seconds = time.perf_counter() - start
        log(f"loaded {c.name} in {c.load_seconds:.1f}s")

    live = [c for c in contenders if c.run is not None and c.error is None]
    wall = time.perf_counter()
    for rep in range(args.reps):
        shift = rep % len(live)
        for c in live[shift:] + live[:shift]:
            if c.threads:
                torch.set_num_threads(c.threads)
            try:
                assert c.run is not None
                start, cpu = time.perf_counter(), time.process_time()
                out = c.run(texts)
                c.seconds.append(time.perf_counter() - start)
                c.cpu_seconds.append(time.process_time() - cpu)
            finally:
                torch.set_num_threads(default_threads)
            vecs = np.asarray(out, dtype=np.float64)
            c.vectors = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
            log(f"rep {rep + 1}/{args.reps} {c.name}: {len(texts) / c.seconds[-1]:.1f} chunks/s")
    wall = time.perf_counter() - wall
    load1 = os.getloadavg()[0]

    ref = next(c for c in live if c.name.startswith("torch bs=32")).vectors
    anchor = next((c for c in live if c.name.startswith("stock")), None)
    anchor_rate = len(texts) / statistics.median(anchor.seconds) if anchor else None
    rows = []
    for c in contenders:
        if c.error or not c.seconds:
            rows.append({"name": c.name, "error": c.error})
            continue
        rate = len(texts) / statistics.median(c.seconds)
        cos = (c.vectors * ref).sum(axis=1)
        rows.append(
            {
                "name": c.name,
                "precision": c.precision,
                "chunks_per_s": rate,
                "best_chunks_per_s": len(texts) / min(c.seconds),
                "tokens_per_s": n_tokens / statistics.median(c.seconds),
                "cpu_ms_per_chunk": 1000 * statistics.median(c.cpu_seconds) / len(texts),
                "x_stock": rate / anchor_rate if anchor_rate else None,
                "cos_mean": float(cos.mean()),
                "cos_min": float(cos.min()),
                "correct": float(cos.min())
                >= (0.99 if c.precision in ("int8", "bf16") else 0.9999),
                "load_s": c.load_seconds,
                "runs_s": c.seconds,
            }
        )
    correct = [r for r in rows if "error" not in r and r["correct"]]
    fastest = max(correct, key=lambda r: r["chunks_per_s"]) if correct else None
    result = {
        "model": base.model_id,
        "model_dir": model_dir,
        "chunks": len(texts),
        "tokens": n_tokens,
        "reps": args.reps,
        "torch_threads_default": default_threads,
        "physical_cores": cores,
        "load_average": [load0, load1],
        "wall_s": wall,
        "versions": _versions(),
        "rows": rows,
        "fastest_correct": fastest["name"] if fastest else None,
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(
        f"{base.model_id}: {len(texts)} chunks, {n_tokens} tokens "
        f"({n_tokens / len(texts):.0f}/chunk), median of {args.reps} reps; torch threads "
        f"{default_threads} (physical cores {cores}); 1-min load {load0:.2f} -> {load1:.2f}"
    )
    head = f"{'contender':30s} {'chunks/s':>9s} {'best':>7s} {'x stock':>8s} {'cpu ms':>7s} "
    print(head + f"{'cos mean':>9s} {'cos min':>8s}  correct  load s")
    for r in rows:
        if "error" in r:
            print(f"{r['name']:30s} failed: {r['error']}")
            continue
        ratio = f"{r['x_stock']:.2f}" if r["x_stock"] is not None else "-"
        print(
            f"{r['name']:30s} {r['chunks_per_s']:9.1f} {r['best_chunks_per_s']:7.1f} "
            f"{ratio:>8s} {r['cpu_ms_per_chunk']:7.1f} {r['cos_mean']:9.5f} {r['cos_min']:8.5f}  "
            f"{'yes' if r['correct'] else 'NO':7s} {r['load_s']:7.1f}"
        )
    print(
        "cosine against LocalEmbeddings torch bs=32 (fp32); correct = min >= 0.9999 (fp32) "
        "or >= 0.99 (int8, bf16); cpu ms = CPU time of this process per chunk (all threads; "
        "steadier than chunks/s on a busy machine)"
    )
    if fastest:
        print(f"fastest correct: {fastest['name']} ({fastest['chunks_per_s']:.1f} chunks/s)")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in (
        "sentence-transformers",
        "torch",
        "transformers",
        "onnxruntime",
        "langchain-community",
    ):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "-"
    return out


if __name__ == "__main__":
    main()
