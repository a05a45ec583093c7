"""The HTTP server: requests/s and latency of /query and /upsert, /ask time to first token.

Starts its own ``llamachain serve`` (a temporary home, a random token, 127.0.0.1), uploads a
small real corpus through ``/upsert-file`` (the Pallets pages of ``examples/data`` and
``tests/data/docs``), then at each concurrency (default 1 and 16 clients, one ``httpx.Client``
per client thread) measures:

* ``POST /query``   -- one query per request, top_k 4, the questions in turn;
* ``POST /upsert``  -- one small document per request under a new id (so it is embedded),
  deleted again after the cell, so every cell starts from the corpus alone;
* ``POST /ask``     -- ``stream: true``; time to the first SSE ``token`` event, and to the end.

Then it stops the server and runs the same work in-process on the same knowledge base -- the
anchors: :meth:`DocumentStore.query` and :meth:`DocumentStore.upsert` (what the routes call)
and :class:`~llamachain.qa.GroundedQA` streaming with the same model settings -- so the cost
of HTTP, JSON and FastAPI shows as a ratio.  Only one process holds the models at a time.

    .venv/bin/python benchmarks/bench_server.py
    .venv/bin/python benchmarks/bench_server.py --requests 100 --ask 4 --json out.json
    .venv/bin/python benchmarks/bench_server.py --concurrency 1,4,16 --duration 20
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
CORPUS_DIRS = [ROOT / "examples" / "data" / "pallets-mini", ROOT / "tests" / "data" / "docs"]
QUESTIONS_FILE = ROOT / "examples" / "data" / "pallets-mini-questions.jsonl"
# Questions on tests/data/docs, so /ask has more distinct prompts than the Pallets set alone.
MORE_QUESTIONS = [
    "What pH do most vegetables prefer?",
    "When should compost be added to the soil?",
    "When will the boathouse be repainted?",
    "Who orders the paint for the boathouse?",
    "What is a sourdough starter made of?",
    "How should bread dough be shaped?",
    "How often should a telescope's primary mirror be cleaned?",
    "Which mirror is aligned first during collimation?",
    "What does the frobnicate command adjust?",
    "What is the default frob level?",
]
WARMUP = "How do I water a vegetable bed?"
Json = dict[str, Any]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- the server process ----------------------------------------------------------------------


@dataclass
class Server:
    url: str
    token: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=600)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(home: Path, env: dict[str, str]) -> Server:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = secrets.token_urlsafe(16)
    full = {k: v for k, v in os.environ.items() if not k.startswith("LLAMACHAIN_")}
    full.update(env, LLAMACHAIN_HOME=str(home), LLAMACHAIN_SERVER_TOKEN=token, HF_HUB_OFFLINE="1")
    exe = Path(sys.executable).parent / "llamachain"
    log_path = home / "server.log"
    home.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        process = subprocess.Popen(
            [
                str(exe),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full,
        )
    server = Server(f"http://127.0.0.1:{port}", token, process, log_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"llamachain serve exited:\n{log_path.read_text()}")
        try:
            if httpx.get(server.url + "/healthz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise SystemExit(f"llamachain serve did not start:\n{log_path.read_text()}")


# ---- running a workload at a concurrency -----------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def run_load(
    n: int,
    clients: int,
    work: Callable[[int, Any], Json],
    make_context: Callable[[], Any] = lambda: None,
    duration: float | None = None,
) -> Json:
    """``work(i, context)`` for i in 0..n-1 from ``clients`` threads (each its own context,
    e.g. an HTTP client); stops early after ``duration`` seconds.  Latencies are per call."""
    lock = threading.Lock()
    counter = iter(range(n))
    rows: list[Json] = []
    errors: list[str] = []
    ready = threading.Barrier(clients + 1)
    stop_at: list[float] = []

    def worker() -> None:
        context = make_context()
        try:
            ready.wait()
            while True:
                with lock:
                    i = next(counter, None)
                if i is None or (duration is not None and time.perf_counter() > stop_at[0]):
                    return
                t0 = time.perf_counter()
                try:
                    row = work(i, context)
                except Exception as e:  # a failed request is reported, not timed
                    with lock:
                        errors.append(f"{type(e).__name__}: {e}")
                    continue
                row.setdefault("latency", time.perf_counter() - t0)
                with lock:
                    rows.append(row)
        finally:
            if hasattr(context, "close"):
                context.close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    start = time.perf_counter()
    stop_at.append(start + (duration or 0.0))
    ready.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    lat = [r["latency"] for r in rows]
    ttft = [r["ttft"] for r in rows if r.get("ttft") is not None]
    return {
        "clients": clients,
        "requests": len(rows),
        "errors": errors[:5],
        "n_errors": len(errors),
        "seconds": wall,
        "rps": len(rows) / wall if wall > 0 else None,
        "p50": percentile(lat, 50),
        "p95": percentile(lat, 95),
        "ttft_p50": percentile(ttft, 50),
        "ttft_p95": percentile(ttft, 95),
        "abstained": sum(1 for r in rows if r.get("abstained")),
        "cached_p50": percentile([r["cached"] for r in rows if r.get("cached") is not None], 50),
    }


def _doc(tag: str, i: int) -> tuple[str, str]:
    return f"{tag}-{i:05d}", f"Bench note {i} ({tag}): the ferry to island {i % 97} leaves at dawn."


# ---- the HTTP side ---------------------------------------------------------------------------


def http_query(questions: list[str]) -> Callable[[int, httpx.Client], Json]:
    def work(i: int, c: httpx.Client) -> Json:
        q = {"query": questions[i % len(questions)], "top_k": 4}
        r = c.post("/query", json={"queries": [q]})
        r.raise_for_status()
        return {}

    return work


def http_upsert(tag: str) -> Callable[[int, httpx.Client], Json]:
    def work(i: int, c: httpx.Client) -> Json:
        doc_id, text = _doc(tag, i)
        r = c.post("/upsert", json={"documents": [{"id": doc_id, "text": text}]})
        r.raise_for_status()
        return {}

    return work


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    name, data = "message", list[str]()
    for line in lines:
        if not line:
            if data:
                yield name, "\n".join(data)
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


def http_ask(questions: list[str], max_tokens: int) -> Callable[[int, httpx.Client], Json]:
    def work(i: int, c: httpx.Client) -> Json:
        body = {"question": questions[i], "stream": True, "max_tokens": max_tokens}
        t0 = time.perf_counter()
        first = None
        result: Json = {}
        with c.stream("POST", "/ask", json=body) as r:
            r.raise_for_status()
            for name, data in sse_events(r.iter_lines()):
                if name == "token" and first is None and json.loads(data).get("text"):
                    first = time.perf_counter() - t0
                elif name == "result":
                    result = json.loads(data)
                elif name == "error":
                    raise RuntimeError(data)
        return {
            "latency": time.perf_counter() - t0,
            "ttft": first,
            "abstained": bool(result.get("abstained")),
            "cached": result.get("usage", {}).get("cached_tokens"),
        }

    return work


def corpus_files() -> list[Path]:
    from llamachain.ingest.loaders import detect_type

    return sorted(
        p for d in CORPUS_DIRS for p in d.rglob("*") if p.is_file() and detect_type(p) is not None
    )


def questions() -> list[str]:
    pallets = [json.loads(line)["question"] for line in QUESTIONS_FILE.read_text().splitlines()]
    return pallets + MORE_QUESTIONS


def ask_sets(qs: list[str], levels: list[int], per_level: int) -> dict[int, list[str]]:
    """Distinct questions per concurrency level (a repeated prompt would be a cache hit)."""
    out, start = {}, 0
    for c in levels:
        n = max(per_level, c)
        out[c] = [qs[(start + k) % len(qs)] for k in range(n)]
        start += n
    return out


def bench_http(args: argparse.Namespace, home: Path, env: dict[str, str]) -> Json:
    qs = questions()
    server = start_server(home, env)
    out: Json = {"corpus": {}, "cells": {}}
    try:
        with server.client() as c:
            files = corpus_files()
            t0 = time.perf_counter()
            for p in files:
                with open(p, "rb") as f:
                    r = c.post("/upsert-file", files={"file": (p.name, f)})
                r.raise_for_status()
            out["corpus"] = {"files": len(files), "upload_seconds": time.perf_counter() - t0}
            log(f"uploaded {len(files)} files in {out['corpus']['upload_seconds']:.1f} s")
            c.post("/query", json={"queries": [{"query": WARMUP}]}).raise_for_status()
            c.post("/upsert", json={"documents": [{"id": "warm", "text": WARMUP}]})
            http_ask([WARMUP], args.max_tokens)(0, c)
        sets = ask_sets(qs, args.levels, args.ask)
        for clients in args.levels:
            cells = out["cells"].setdefault(str(clients), {})
            log(f"HTTP, {clients} client(s)")
            cells["query"] = run_load(
                args.requests, clients, http_query(qs), server.client, args.duration
            )
            cells["upsert"] = run_load(
                args.requests, clients, http_upsert(f"bench{clients}"), server.client, args.duration
            )
            with server.client() as c:  # back to the corpus alone, as the anchor will find it
                ids = [_doc(f"bench{clients}", i)[0] for i in range(args.requests)]
                c.request("DELETE", "/delete", json={"ids": ids}).raise_for_status()
            cells["ask"] = run_load(
                len(sets[clients]), clients, http_ask(sets[clients], args.max_tokens), server.client
            )
    finally:
        server.stop()
    return out


# ---- the in-process anchors ------------------------------------------------------------------


def bench_inprocess(args: argparse.Namespace, home: Path) -> Json:
    from llamachain.chat_models import ChatLlama
    from llamachain.documents import DocumentInput, DocumentStore
    from llamachain.knowledge import KnowledgeBase
    from llamachain.qa import GroundedQA
    from llamachain.settings import Settings

    settings = Settings(home=home, n_threads=args.threads)
    kb = KnowledgeBase("default", settings=settings)
    store = DocumentStore(kb)
    llm = ChatLlama(settings=settings, temperature=0.0, seed=0)
    qa = GroundedQA.from_knowledge_base(
        kb, llm=llm, settings=settings, answer_tokens=args.max_tokens
    )
    qs = questions()

    def query(i: int, _: Any) -> Json:
        store.query(qs[i % len(qs)], top_k=4)
        return {}

    def upsert(tag: str) -> Callable[[int, Any], Json]:
        def work(i: int, _: Any) -> Json:
            doc_id, text = _doc(tag, i)
            store.upsert([DocumentInput(text=text, id=doc_id)])
            return {}

        return work

    def ask(batch: list[str]) -> Callable[[int, Any], Json]:
        def work(i: int, _: Any) -> Json:
            t0 = time.perf_counter()
            first, result = None, None
            for chunk in qa.stream(batch[i]):
                if chunk.text and first is None:
                    first = time.perf_counter() - t0
                result = chunk.result or result
            usage = (result.usage or {}) if result is not None else {}
            return {
                "latency": time.perf_counter() - t0,
                "ttft": first,
                "abstained": bool(result and result.abstained),
                "cached": usage.get("cache_read"),
            }

        return work

    store.query(WARMUP)
    store.upsert([DocumentInput(text=WARMUP, id="warm")])
    ask([WARMUP])(0, None)
    sets = ask_sets(qs, args.levels, args.ask)
    out: Json = {}
    for clients in args.levels:
        log(f"in-process, {clients} thread(s)")
        cells = out.setdefault(str(clients), {})
        cells["query"] = run_load(args.requests, clients, query, duration=args.duration)
        cells["upsert"] = run_load(
            args.requests, clients, upsert(f"bench{clients}"), duration=args.duration
        )
        store.delete(ids=[_doc(f"bench{clients}", i)[0] for i in range(args.requests)])
        cells["ask"] = run_load(len(sets[clients]), clients, ask(sets[clients]))
    return out


# ---- report ----------------------------------------------------------------------------------


def _f(v: Any, spec: str, scale: float = 1.0) -> str:
    return "-" if v is None else format(v * scale, spec)


def _ratio(a: Any, b: Any) -> str:
    return f"{a / b:.2f}" if a and b else "-"


def table(doc: Json) -> str:
    lines = [
        f"corpus: {doc['http']['corpus']['files']} files via /upsert-file; threads={doc['threads']}"
        f", /ask max_tokens={doc['max_tokens']}; 1-min load {doc['load'][0]:.2f} -> "
        f"{doc['load'][1]:.2f}",
        "",
        f"{'route':8} {'clients':>7} {'side':10} {'n':>5} {'req/s':>7} {'p50 ms':>8} "
        f"{'p95 ms':>8} {'TTFT p50':>8} {'TTFT p95':>8} {'abst':>4} {'cached':>6}  HTTP/in-process",
    ]
    for clients, cells in doc["http"]["cells"].items():
        for route in ("query", "upsert", "ask"):
            http, local = cells[route], doc["inprocess"][clients][route]
            for side, m in (("HTTP", http), ("in-process", local)):
                ratio = ""
                if side == "HTTP":
                    key = "ttft_p50" if route == "ask" else "p50"
                    ratio = f"p50 {_ratio(http[key], local[key])}"
                    if route != "ask":
                        ratio += f", req/s {_ratio(http['rps'], local['rps'])}"
                lines.append(
                    f"{'/' + route:8} {clients:>7} {side:10} {m['requests']:>5} "
                    f"{_f(m['rps'], '.1f'):>7} {_f(m['p50'], '.1f', 1000):>8} "
                    f"{_f(m['p95'], '.1f', 1000):>8} {_f(m['ttft_p50'], '.2f'):>8} "
                    f"{_f(m['ttft_p95'], '.2f'):>8} {m['abstained'] if route == 'ask' else '-':>4} "
                    f"{_f(m['cached_p50'], '.0f'):>6}  {ratio}"
                )
                if m["n_errors"]:
                    lines.append(f"    {m['n_errors']} failed, e.g. {m['errors'][0]}")
    lines += [
        "",
        "TTFT in seconds (first SSE token event / first streamed text), from the call, over the",
        "answers that were not abstentions (abst: answered with the chain's refusal, no tokens);",
        "/ask p50/p95 = whole answers; cached = prompt tokens reused from the prefix cache (p50).",
        "HTTP/in-process: the ratio of p50 latencies (TTFT for /ask) and of requests/s.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=200, help="per /query and /upsert cell")
    p.add_argument("--duration", type=float, help="stop a /query or /upsert cell after S seconds")
    p.add_argument("--ask", type=int, default=8, help="/ask requests per cell (at least clients)")
    p.add_argument("--concurrency", default="1,16", help="client counts, comma-separated")
    p.add_argument("--max-tokens", type=int, default=32, help="/ask answer budget")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="model threads")
    p.add_argument("--workdir", help="the server's home (default: a new temporary directory)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    args = p.parse_args(argv)
    args.levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    home = Path(args.workdir or tempfile.mkdtemp(prefix="bench-server-"))
    env = {"LLAMACHAIN_N_THREADS": str(args.threads)}
    load = [os.getloadavg()[0]]
    doc: Json = {"threads": args.threads, "max_tokens": args.max_tokens, "home": str(home)}
    doc["http"] = bench_http(args, home, env)
    log("server stopped; the in-process anchors on the same knowledge base")
    doc["inprocess"] = bench_inprocess(args, home)
    load.append(os.getloadavg()[0])
    doc["load"] = load
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1))
    print(table(doc))


if __name__ == "__main__":
    main()
