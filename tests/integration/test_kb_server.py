"""A knowledge base on a real `chroma run` server (client/server mode), selected by settings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from kb_helpers import make_corpus

from llamachain.knowledge import KnowledgeBase
from llamachain.settings import Settings
from llamachain.testing import FakeEmbeddings

pytest_plugins = ["chroma_server"]

EXE = shutil.which("llamachain", path=str(Path(sys.executable).parent)) or "llamachain"


def test_incremental_ingestion_on_a_server(chroma_server, tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", n_files=9)
    settings = Settings(
        home=tmp_path / "home", chroma_host=chroma_server.host, chroma_port=chroma_server.port
    )
    kb = KnowledgeBase("served", settings=settings, embeddings=FakeEmbeddings())
    first = kb.ingest([corpus])
    assert first.added == 9 and first.failed == []
    assert kb.location == chroma_server.url
    assert not (tmp_path / "home" / "kb").exists() or not any((tmp_path / "home" / "kb").iterdir())
    (sorted(corpus.rglob("*.txt"))[0]).unlink()
    second = kb.ingest([corpus])
    assert (second.skipped, second.removed) == (8, 1)
    # A second client (another process or machine) sees the same knowledge base.
    other = KnowledgeBase("served", settings=settings, embeddings=FakeEmbeddings(), create=False)
    assert other.stats()["files"] == 8
    assert other.stats()["chunks"] == kb.vectorstore.count()
    hits = other.search("llama chroma", k=3)
    assert len(hits) == 3 and all(h.metadata["source"].startswith(str(corpus)) for h in hits)
    kb.delete()
    assert all(r["name"] != "served" for r in KnowledgeBase.list(settings))


def test_cli_against_the_server(chroma_server, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Ports\n\nThe admin console listens on port 9443 by default.\n")
    (docs / "b.md").write_text("# Backups\n\nBackups run nightly at two in the morning.\n")
    env = dict(
        os.environ,
        LLAMACHAIN_HOME=str(tmp_path / "home"),
        LLAMACHAIN_CHROMA_HOST=chroma_server.host,
        LLAMACHAIN_CHROMA_PORT=str(chroma_server.port),
    )

    def run(*args: str) -> dict:
        proc = subprocess.run(
            [EXE, *args, "--json"], capture_output=True, text=True, env=env, timeout=600
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    assert run("ingest", str(docs), "--kb", "cli-served")["added"] == 2
    top = run("search", "which port does the admin console use?", "--kb", "cli-served")
    assert top["results"][0]["file_name"] == "a.md"
    assert "cli-served" in [r["name"] for r in run("kb", "list")["knowledge_bases"]]
