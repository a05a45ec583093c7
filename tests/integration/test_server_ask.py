"""``POST /ask`` on a real ``llamachain serve`` process: grounded answers with citations from
an ingested corpus (SmolLM2 greedy, all-MiniLM-L6-v2, local Chroma), whole and streamed."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from llamachain_server import LlamachainServer, start_llamachain_server

from llamachain.knowledge import KnowledgeBase
from llamachain.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "examples" / "data" / "pallets-mini"
SIGNED = "How is a signature attached to the string it signs?"
UNCOVERED = "How do I store signed data in a PostgreSQL database?"
ENV = {"LLAMACHAIN_N_THREADS": "1", "LLAMACHAIN_N_CTX": "2048"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamachainServer]:
    home = tmp_path_factory.mktemp("ask-home")
    KnowledgeBase("mini", settings=Settings(home=home)).ingest([CORPUS], include=["**/*.rst"])
    s = start_llamachain_server(home, kb="mini", env=ENV)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def http(server: LlamachainServer) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, object]]]:
    """(event name, JSON data) pairs of a server-sent event stream."""
    name = None
    for line in lines:
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            assert name is not None, line
            yield name, json.loads(line[6:])
            name = None


def test_grounded_answer_with_resolved_citations(http: httpx.Client) -> None:
    r = http.post("/ask", json={"question": SIGNED})
    assert r.status_code == 200, r.text
    body = r.json()
    assert not body["abstained"] and body["abstain_reason"] is None
    assert "dot" in body["answer"].lower() or "separat" in body["answer"].lower()
    chunks = {c["id"]: c for c in body["chunks"]}
    assert body["citations"]
    for c in body["citations"]:
        assert set(c) == {"n", "chunk_id", "source", "file_name", "section", "page", "snippet"}
        cited = chunks[c["chunk_id"]]  # every citation is a chunk that was retrieved
        assert cited["n"] == c["n"] and cited["source"] == c["source"]
        assert c["file_name"].endswith(".rst") and c["snippet"]
    assert f"[{body['citations'][0]['n']}]" in body["answer"]
    assert body["sources"] == list(dict.fromkeys(c["source"] for c in body["citations"]))
    scores = [c["score"] for c in body["chunks"]]
    assert scores == sorted(scores, reverse=True) and any(c["packed"] for c in body["chunks"])
    u = body["usage"]
    assert u["prompt_tokens"] > 50 and u["completion_tokens"] > 0
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    assert body["finish_reason"] in ("stop", "length", "repetition")
    assert body["timings"]["total"] >= body["timings"]["generate"] > 0
    assert "smollm2" in body["model"].lower()


def test_streamed_answer_tokens_then_result_then_done(http: httpx.Client) -> None:
    whole = http.post("/ask", json={"question": SIGNED}).json()
    with http.stream("POST", "/ask", json={"question": SIGNED, "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        got = list(events(r.iter_lines()))
    names = [n for n, _ in got]
    assert names[-2:] == ["result", "done"] and names.count("result") == 1
    tokens = [d["text"] for n, d in got if n == "token"]
    assert len(tokens) >= 3 and set(names[:-2]) == {"token"}
    result = got[-2][1]
    assert result["answer"] == whole["answer"] and result["citations"] == whole["citations"]
    # the streamed text is the reply as shown (markers of unknown sources removed)
    streamed = re.sub(r"\s*\[\d+\]", "", "".join(tokens)).strip()  # type: ignore[arg-type]
    assert streamed and re.sub(r"\s*\[\d+\]", "", whole["model_answer"]).startswith(streamed[:20])


def test_uncovered_question_abstains(http: httpx.Client) -> None:
    body = http.post("/ask", json={"question": UNCOVERED}).json()
    assert body["abstained"] and body["abstain_reason"] == "weak_retrieval"
    assert body["citations"] == [] and body["usage"]["completion_tokens"] == 0
    with http.stream("POST", "/ask", json={"question": UNCOVERED, "stream": True}) as r:
        got = list(events(r.iter_lines()))
    assert [n for n, _ in got] == ["result", "done"] and got[0][1]["abstained"]


def test_filter_limits_the_sources(http: httpx.Client) -> None:
    first = http.post("/ask", json={"question": SIGNED}).json()
    path = first["citations"][0]["source"]
    only = http.post("/ask", json={"question": SIGNED, "filter": {"document_id": path}}).json()
    assert only["chunks"] and {c["source"] for c in only["chunks"]} == {path}
    # no plugin document is an e-mail: nothing to answer from
    none = http.post("/ask", json={"question": SIGNED, "filter": {"source": "email"}}).json()
    assert none["abstained"] and none["abstain_reason"] == "no_documents" and not none["chunks"]
    k1 = http.post("/ask", json={"question": SIGNED, "k": 1}).json()
    assert len(k1["chunks"]) == 1


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"question": ""}, "question"),
        ({"question": "x", "max_tokens": 10**6}, "server_max_tokens"),
        ({"question": "x", "top_k": 3}, "top_k"),
        ({"question": "x", "filter": {"start_date": "yesterday"}}, "ISO 8601"),
        (
            {"question": "x", "filter": {"start_date": "2024-02-01", "end_date": "2024-01-01"}},
            "after end_date",
        ),
    ],
)
def test_bad_requests_are_422_whole_or_streamed(
    http: httpx.Client, body: dict[str, object], words: str
) -> None:
    for stream in (False, True):
        r = http.post("/ask", json={**body, "stream": stream})
        assert r.status_code == 422, r.text
        assert words in r.json()["detail"]


def test_disconnect_mid_answer_leaves_the_server_answering(http: httpx.Client) -> None:
    reference = http.post("/ask", json={"question": SIGNED}).json()
    body = {"question": SIGNED, "stream": True, "max_tokens": 400}
    with http.stream("POST", "/ask", json=body) as r:
        for name, _ in events(r.iter_lines()):
            if name == "token":
                break  # hang up after the first token
    again = http.post("/ask", json={"question": SIGNED}).json()
    assert again["answer"] == reference["answer"]
    assert http.get("/healthz").json()["status"] == "ok"


def test_empty_knowledge_base_abstains(tmp_path: Path) -> None:
    s = start_llamachain_server(tmp_path / "home", kb="empty", env=ENV)
    try:
        with s.client() as http:
            body = http.post("/ask", json={"question": SIGNED}).json()
            with http.stream("POST", "/ask", json={"question": SIGNED, "stream": True}) as r:
                got = list(events(r.iter_lines()))
    finally:
        s.stop()
    assert body["abstained"] and body["abstain_reason"] == "no_documents"
    assert "do not say" in body["answer"] and body["chunks"] == []
    assert [n for n, _ in got] == ["result", "done"] and got[0][1][
        "abstain_reason"
    ] == "no_documents"
