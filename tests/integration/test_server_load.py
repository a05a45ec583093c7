"""A bounded load test of a real ``llamachain serve`` process on loopback.

16 concurrent clients send 1,000 requests in all: 45% upserts of small documents under ids the
client chose (some replacing one of its own documents), 40% queries (some restricted to one of
its documents, whose text must then come back), 15% deletes of ids the client upserted earlier.
No response may be a 5xx, and afterwards the server must hold exactly the documents the
clients' successful upserts and deletes imply, with their latest texts: checked over HTTP and
again in-process on the stopped server's store.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import pytest
from llamachain_server import LlamachainServer, start_llamachain_server

CLIENTS = 16
REQUESTS = 1000
WORDS = (
    "harbour", "ferry", "mooring", "lighthouse", "tide", "quay", "sail", "anchor", "buoy", "gull",
    "net", "rope", "pier", "storm", "chart", "compass", "keel", "mast", "deck", "hull", "cargo",
    "crane", "dock", "beacon", "channel", "reef", "current",
)  # fmt: skip


@dataclass
class Client:
    """One client's view: the documents it stored (id -> latest text) and what it saw."""

    number: int
    alive: dict[str, str] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    serial: int = 0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamachainServer]:
    s = start_llamachain_server(tmp_path_factory.mktemp("load-home"))
    try:
        yield s
    finally:
        s.stop()


def _text(rng: random.Random, doc_id: str) -> str:
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30)))
    return f"Note {doc_id}: {words}."


def _one(c: Client, http: httpx.Client, rng: random.Random) -> None:
    roll = rng.random()
    if roll < 0.15 and c.alive:  # delete one of its own documents
        doc_id = rng.choice(sorted(c.alive))
        r = http.request("DELETE", "/delete", json={"ids": [doc_id]})
        c.statuses[r.status_code] += 1
        if r.status_code == 200:
            if r.json() != {"success": True, "deleted": 1}:
                c.problems.append(f"delete {doc_id}: {r.text}")
            del c.alive[doc_id]
            c.deleted.add(doc_id)
        return
    if roll < 0.60:  # upsert: a new document, or now and then a replacement
        if c.alive and rng.random() < 0.2:
            doc_id = rng.choice(sorted(c.alive))
        else:
            c.serial += 1
            doc_id = f"client{c.number:02d}-doc{c.serial:03d}"
        text = _text(rng, doc_id)
        meta = {"source": "chat", "author": f"client{c.number:02d}"}
        r = http.post(
            "/upsert", json={"documents": [{"id": doc_id, "text": text, "metadata": meta}]}
        )
        c.statuses[r.status_code] += 1
        if r.status_code == 200:
            if r.json() != {"ids": [doc_id]}:
                c.problems.append(f"upsert {doc_id}: {r.text}")
            c.alive[doc_id] = text
            c.deleted.discard(doc_id)
        return
    # query: free text, or one of its own documents by id (whose latest text must come back)
    own = rng.choice(sorted(c.alive)) if c.alive and rng.random() < 0.5 else None
    q: dict[str, object] = {"query": " ".join(rng.sample(WORDS, 3)), "top_k": rng.randint(1, 8)}
    if own is not None:
        q["filter"] = {"document_id": own}
    r = http.post("/query", json={"queries": [q]})
    c.statuses[r.status_code] += 1
    if r.status_code == 200 and own is not None:
        hits = r.json()["results"][0]["results"]
        if [h["text"] for h in hits] != [c.alive[own]]:
            c.problems.append(f"query of {own} gave {hits!r}, expected {c.alive[own]!r}")


def _run_client(server: LlamachainServer, c: Client, n: int, start: threading.Barrier) -> Client:
    rng = random.Random(1000 + c.number)
    with server.client(timeout=300) as http:
        start.wait()
        for _ in range(n):
            try:
                _one(c, http, rng)
            except httpx.HTTPError as e:
                c.problems.append(f"{type(e).__name__}: {e}")
    return c


def _hits_by_id(http: httpx.Client, ids: list[str]) -> dict[str, list[str]]:
    """The texts the server returns for each id, through a document_id filter (100 a request)."""
    out: dict[str, list[str]] = {}
    for start in range(0, len(ids), 100):
        part = ids[start : start + 100]
        queries = [{"query": "note", "top_k": 10, "filter": {"document_id": i}} for i in part]
        r = http.post("/query", json={"queries": queries})
        assert r.status_code == 200, r.text
        for i, result in zip(part, r.json()["results"], strict=True):
            out[i] = [h["text"] for h in result["results"]]
    return out


def test_sixteen_clients_thousand_requests(server: LlamachainServer) -> None:
    from llamachain.documents import DocumentStore
    from llamachain.knowledge import KnowledgeBase
    from llamachain.settings import Settings

    clients = [Client(n) for n in range(CLIENTS)]
    shares = [REQUESTS // CLIENTS + (1 if n < REQUESTS % CLIENTS else 0) for n in range(CLIENTS)]
    start = threading.Barrier(CLIENTS)
    with ThreadPoolExecutor(CLIENTS) as pool:
        done = list(pool.map(lambda c, n: _run_client(server, c, n, start), clients, shares))

    statuses = sum((c.statuses for c in done), Counter())
    assert sum(statuses.values()) == REQUESTS
    assert not [s for s in statuses if s >= 500], (statuses, server.log_text()[-5000:])
    assert [p for c in done for p in c.problems] == []
    assert statuses == Counter({200: REQUESTS})  # nothing here is a reason to refuse

    expected = {i: t for c in done for i, t in c.alive.items()}
    deleted = {i for c in done for i in c.deleted}
    assert len(expected) > 200 and len(deleted) > 50  # the mix really happened

    with server.client(timeout=300) as http:
        hits = _hits_by_id(http, sorted(expected) + sorted(deleted))
    assert {i: hits[i] for i in expected} == {i: [t] for i, t in expected.items()}
    assert {i: hits[i] for i in deleted} == {i: [] for i in deleted}

    server.stop()
    store = DocumentStore(KnowledgeBase("default", settings=Settings(home=server.home)))
    assert store.count() == len(expected)
    assert store.document_ids() == sorted(expected)
