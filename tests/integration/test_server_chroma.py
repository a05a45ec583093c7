"""Two `llamachain serve` replicas over one real `chroma run` server (the scale-out setup)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from llamachain_server import start_llamachain_server

pytest_plugins = ["chroma_server"]

EXE = str(Path(sys.executable).parent / "llamachain")


def test_replicas_share_one_chroma_server(chroma_server, tmp_path: Path) -> None:
    env = {
        "LLAMACHAIN_CHROMA_HOST": chroma_server.host,
        "LLAMACHAIN_CHROMA_PORT": str(chroma_server.port),
        "LLAMACHAIN_N_THREADS": "2",
    }
    # Files ingested by the CLI on another "machine" (its own home) into the same server.
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "parking.md").write_text(
        "# Parking\n\nVisitors park on level minus two; the barrier code is 4471.\n"
    )
    home_cli = tmp_path / "cli-home"
    done = subprocess.run(
        [EXE, "ingest", str(docs), "--kb", "shared"],
        env={**env, "LLAMACHAIN_HOME": str(home_cli), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr

    first = start_llamachain_server(tmp_path / "replica-1", kb="shared", env=env)
    second = start_llamachain_server(tmp_path / "replica-2", kb="shared", env=env)
    try:
        with first.client() as a, second.client() as b:
            r = a.post(
                "/upsert",
                json={
                    "documents": [
                        {
                            "id": "wifi",
                            "text": "The guest Wi-Fi network is called Harbour and its "
                            "password is changed every Monday.",
                            "metadata": {"source": "chat", "author": "front desk"},
                        }
                    ]
                },
            )
            assert r.status_code == 200, r.text
            # The other replica sees the new document and the CLI-ingested file.
            r = b.post(
                "/query",
                json={
                    "queries": [
                        {"query": "guest wifi password", "top_k": 1},
                        {"query": "visitor parking barrier code", "top_k": 1},
                    ]
                },
            )
            assert r.status_code == 200, r.text
            wifi, parking = (q["results"][0] for q in r.json()["results"])
            assert wifi["metadata"]["document_id"] == "wifi"
            assert wifi["metadata"]["author"] == "front desk"
            assert parking["metadata"]["source"] == "file"
            assert parking["metadata"]["document_id"].endswith("parking.md")
            assert "4471" in parking["text"]
            # A grounded answer from the second replica cites the file the CLI ingested.
            r = b.post("/ask", json={"question": "What is the parking barrier code?"})
            assert r.status_code == 200, r.text
            answer = r.json()
            assert not answer["abstained"], answer
            assert "4471" in answer["answer"]
            assert any(c["source"].endswith("parking.md") for c in answer["citations"])
            # A delete through one replica is gone for the other.
            r = b.request("DELETE", "/delete", json={"ids": ["wifi"]})
            assert r.json() == {"success": True, "deleted": 1}
            r = a.post(
                "/query",
                json={"queries": [{"query": "wifi", "filter": {"document_id": "wifi"}}]},
            )
            assert r.json()["results"][0]["results"] == []
    finally:
        first.stop()
        second.stop()
    assert "Traceback" not in first.log_text() + second.log_text()
