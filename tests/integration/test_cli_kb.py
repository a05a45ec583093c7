"""``llamachain ingest / kb / search`` as real processes, with the real default embedder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXE = shutil.which("llamachain", path=str(Path(sys.executable).parent)) or "llamachain"

DOCS = {
    "guide/install.md": (
        "# Installation\n\n## From source\n\nRun `bash scripts/setup.sh`; the build of the "
        "inference engine takes about six minutes on two cores.\n\n## Troubleshooting\n\n"
        "Error E1042 means the model file is truncated: download it again or check the disk.\n"
    ),
    "guide/usage.rst": (
        "Usage\n=====\n\nQuerying\n--------\n\nAsk a question with the ask command. Answers "
        "cite their sources with bracketed numbers.\n"
    ),
    "faq.html": (
        "<html><head><title>FAQ</title></head><body><h1>FAQ</h1><h2>Licence</h2>"
        "<p>The project is released under the Apache License 2.0.</p>"
        "<h2>Pets</h2><p>Our mascot is a llama called Dolly who enjoys hay.</p></body></html>"
    ),
    "notes.txt": "Meeting notes: the quarterly review moved to Thursday afternoon.\n",
}


def llamachain(home: Path, *args: str, code: int = 0) -> dict:
    env = dict(os.environ, LLAMACHAIN_HOME=str(home))
    proc = subprocess.run(
        [EXE, *args, "--json"], capture_output=True, text=True, env=env, timeout=600, check=False
    )
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    return json.loads(proc.stdout)  # exactly one document, nothing else on stdout


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    home = tmp_path_factory.mktemp("home")
    docs = tmp_path_factory.mktemp("docs")
    for rel, text in DOCS.items():
        (docs / rel).parent.mkdir(parents=True, exist_ok=True)
        (docs / rel).write_text(text)
    (docs / "broken.docx").write_bytes(b"PK\x03\x04 not a real zip")
    return home, docs


def test_ingest_then_rerun(ingested: tuple[Path, Path]) -> None:
    home, docs = ingested
    first = llamachain(home, "ingest", str(docs), "--kb", "docs")
    assert first["added"] == 4 and first["chunks_added"] >= 4
    assert [f["path"] for f in first["failed"]] == [str(docs / "broken.docx")]
    second = llamachain(home, "ingest", str(docs), "--kb", "docs")
    assert second["skipped"] == 4 and second["chunks_embedded"] == 0


def test_search_finds_the_right_section(ingested: tuple[Path, Path]) -> None:
    home, docs = ingested
    llamachain(home, "ingest", str(docs), "--kb", "docs")
    out = llamachain(home, "search", "what does error E1042 mean?", "--kb", "docs", "-k", "2")
    top = out["results"][0]
    assert top["file_name"] == "install.md"
    assert "Troubleshooting" in top["heading"]
    assert "E1042" in top["text"]
    scores = [r["score"] for r in out["results"]]
    assert scores == sorted(scores, reverse=True)
    dense = llamachain(home, "search", "which licence?", "--kb", "docs", "--mode", "dense")
    assert dense["results"][0]["file_name"] == "faq.html"
    only_txt = llamachain(home, "search", "llama mascot", "--kb", "docs", "--type", "txt")
    assert {r["file_name"] for r in only_txt["results"]} == {"notes.txt"}


def test_kb_list_stats_delete(ingested: tuple[Path, Path]) -> None:
    home, docs = ingested
    llamachain(home, "ingest", str(docs / "notes.txt"), "--kb", "scratch")
    names = [r["name"] for r in llamachain(home, "kb", "list")["knowledge_bases"]]
    assert "scratch" in names
    stats = llamachain(home, "kb", "stats", "scratch")
    assert stats["files"] == 1 and stats["chunks"] == 1
    assert stats["embedding_model"] == "all-MiniLM-L6-v2"
    assert stats["embedding_dimension"] == 384
    assert llamachain(home, "kb", "delete", "scratch") == {"deleted": "scratch"}
    names = [r["name"] for r in llamachain(home, "kb", "list")["knowledge_bases"]]
    assert "scratch" not in names


def test_errors_are_one_line(ingested: tuple[Path, Path]) -> None:
    home, docs = ingested
    err = llamachain(home, "search", "x", "--kb", "nope", code=1)["error"]
    assert "no knowledge base named 'nope'" in err and "\n" not in err
    err = llamachain(home, "ingest", str(docs / "missing"), "--kb", "docs", code=1)["error"]
    assert "no such file or directory" in err
    err = llamachain(home, "ingest", str(docs), "--kb", "bad name!", code=1)["error"]
    assert "invalid knowledge base name" in err
    err = llamachain(home, "kb", "stats", "nope", code=1)["error"]
    assert "no knowledge base named" in err
