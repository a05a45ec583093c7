"""Shared helpers for knowledge-base tests: a small mixed-format corpus and store dumps."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

WORDS = [
    "llama",
    "model",
    "context",
    "token",
    "cache",
    "prefix",
    "chroma",
    "vector",
    "embedding",
    "chunk",
    "file",
    "page",
    "section",
    "retrieval",
    "answer",
    "question",
    "source",
    "cite",
    "overlap",
    "batch",
    "thread",
    "server",
    "client",
    "index",
    "manifest",
    "quantize",
    "kernel",
    "memory",
    "disk",
    "network",
    "offline",
    "local",
    "grammar",
    "schema",
    "stream",
    "decode",
    "prefill",
]


def paragraph(rng: random.Random, n: int) -> str:
    words = [rng.choice(WORDS) for _ in range(n)]
    return " ".join(words).capitalize() + "."


def make_corpus(root: Path, n_files: int = 24, seed: int = 0) -> Path:
    """Text, Markdown and HTML files with headings, of varied length, in nested folders."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        sub = root / f"part{i % 3}"
        sub.mkdir(exist_ok=True)
        kind = ("txt", "md", "html")[i % 3]
        paras = [paragraph(rng, rng.randint(20, 90)) for _ in range(rng.randint(1, 8))]
        if kind == "md":
            body = f"# Topic {i}\n\n" + "\n\n".join(
                f"## Part {j}\n\n{p}" for j, p in enumerate(paras)
            )
        elif kind == "html":
            body = (
                f"<html><head><title>Page {i}</title></head><body><h1>Page {i}</h1>"
                + "".join(f"<h2>S{j}</h2><p>{p}</p>" for j, p in enumerate(paras))
                + "</body></html>"
            )
        else:
            body = "\n\n".join(paras)
        (sub / f"doc{i:02d}.{kind}").write_text(body + "\n", encoding="utf-8")
    return root


def mutate_corpus(root: Path, seed: int = 1) -> None:
    """Edit, delete, add, duplicate and move files, the way a real folder changes."""
    rng = random.Random(seed)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    files[0].write_text(files[0].read_text() + "\n\nAn extra closing paragraph.\n")
    files[1].unlink()
    (root / "part0" / "new.md").write_text("# New\n\n" + paragraph(rng, 60) + "\n")
    (root / "copy-of-3.txt").write_bytes(files[3].read_bytes())
    files[4].rename(root / "part2" / "moved.txt")
    files[5].write_text(paragraph(rng, 30) + "\n")


def dump_store(client: Any, kb: str) -> dict[str, Any]:
    """Everything a knowledge base holds, in a comparable form (vectors rounded)."""
    out: dict[str, Any] = {}
    for name in (kb, kb + "__files"):
        col = client.get_collection(name, embedding_function=None)
        got = col.get(include=["documents", "metadatas", "embeddings"])
        rows = {}
        for i, doc, meta, emb in zip(
            got["ids"], got["documents"], got["metadatas"], got["embeddings"], strict=True
        ):
            rows[i] = (doc, meta, [round(float(x), 4) for x in emb])
        out[name] = rows
    return out
