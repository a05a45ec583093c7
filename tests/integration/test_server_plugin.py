"""The retrieval-plugin API of a real ``llamachain serve`` process, over HTTP.

Auth on every route family, the chatgpt-retrieval-plugin shapes of upsert -> query -> delete,
file uploads of every supported type, the upload limits (413 / 415), harmless file names,
isolated concurrent uploads, all-or-nothing batches, 422 messages that name the field, the
plugin manifest and the OpenAPI document, and the refusals of ``llamachain serve`` itself.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from llamachain_server import (
    HOST,
    LLAMACHAIN,
    TOKEN,
    LlamachainServer,
    free_port,
    start_llamachain_server,
)

DATA = Path(__file__).parent.parent / "data" / "docs"
# Every route family with a request that succeeds when the token is right.
ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/upsert", {"documents": [{"id": "auth-probe", "text": "An auth probe."}]}),
    ("POST", "/query", {"queries": [{"query": "probe", "top_k": 1}]}),
    ("DELETE", "/delete", {"ids": ["no-such-document"]}),
    ("GET", "/.well-known/ai-plugin.json", None),
    ("GET", "/openapi.json", None),
    ("POST", "/ask", {"question": "What is an auth probe?"}),
    (
        "POST",
        "/v1/chat/completions",
        {"model": "default", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
    ),
    ("POST", "/v1/embeddings", {"model": "default", "input": "probe"}),
    ("GET", "/v1/models", None),
    ("POST", "/tokenize", {"content": "probe"}),
    ("POST", "/detokenize", {"tokens": [1, 2]}),
    ("GET", "/props", None),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamachainServer]:
    """A server of this module's own (the tests delete everything in it)."""
    s = start_llamachain_server(
        tmp_path_factory.mktemp("plugin-home"), env={"LLAMACHAIN_SERVER_MAX_TOKENS": "16"}
    )
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def client(server: LlamachainServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def _chunks_of(client: httpx.Client, doc_id: str, query: str = "document") -> list[dict[str, Any]]:
    """Every result the server returns for ``query`` restricted to one document."""
    r = client.post(
        "/query",
        json={"queries": [{"query": query, "top_k": 100, "filter": {"document_id": doc_id}}]},
    )
    assert r.status_code == 200, r.text
    return r.json()["results"][0]["results"]  # type: ignore[no-any-return]


def _text_of(client: httpx.Client, doc_id: str) -> str:
    return " ".join(h["text"] for h in _chunks_of(client, doc_id))


def _paths(client: httpx.Client) -> set[str]:
    return set(client.get("/openapi.json").json()["paths"])


# ---- auth -----------------------------------------------------------------------------------


def test_health_needs_no_token(server: LlamachainServer) -> None:
    r = httpx.get(server.url + "/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["knowledge_base"] == "default"


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_every_route_needs_the_token(
    server: LlamachainServer,
    client: httpx.Client,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    if path not in _paths(client) | {"/openapi.json"}:
        pytest.skip(f"{path} is not served yet (not in /openapi.json)")
    with httpx.Client(base_url=server.url, timeout=120) as anonymous:
        for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": TOKEN}):
            r = anonymous.request(method, path, json=body, headers=headers)
            assert r.status_code == 401, (headers, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
            assert "bearer token" in r.json()["detail"]
        # A token that only shares a prefix with the right one is as wrong as any other.
        r = anonymous.request(
            method, path, json=body, headers={"Authorization": f"Bearer {TOKEN[:-1]}"}
        )
        assert r.status_code == 401
    r = client.request(method, path, json=body)
    assert 200 <= r.status_code < 300, r.text


# ---- upsert -> query -> delete -----------------------------------------------------------------

DOCS = [
    {
        "id": "vpn",
        "text": "The office VPN only accepts connections on port 443. Ask IT for a certificate.",
        "metadata": {
            "source": "email",
            "source_id": "mail-17",
            "author": "alice",
            "created_at": "2024-03-01T09:00:00Z",
        },
    },
    {
        "id": "lunch",
        "text": "The canteen serves lunch from noon until two; Fridays have fish and chips.",
        "metadata": {"source": "chat", "author": "bob", "created_at": "2024-06-15"},
    },
    {
        "id": "printer",
        "text": "The third-floor printer jams on glossy paper; use the one by the lifts.",
        "metadata": {"source": "chat", "author": "alice", "url": "https://wiki.example/print"},
    },
]


def test_upsert_query_delete_round_trip(client: httpx.Client) -> None:
    client.request("DELETE", "/delete", json={"delete_all": True})
    r = client.post("/upsert", json={"documents": DOCS})
    assert r.status_code == 200, r.text
    assert r.json() == {"ids": ["vpn", "lunch", "printer"]}

    # A document without an id gets one of its own.
    r = client.post("/upsert", json={"documents": [{"text": "Parking permits renew in May."}]})
    assert r.status_code == 200
    (generated,) = r.json()["ids"]
    assert generated and generated not in {"vpn", "lunch", "printer"}

    r = client.post(
        "/query",
        json={
            "queries": [
                {"query": "Which port does the VPN use?", "top_k": 2},
                {"query": "When is lunch served?", "filter": {"source": "chat"}, "top_k": 5},
                {"query": "printer", "filter": {"author": "alice"}},
                {
                    "query": "anything",
                    "filter": {"start_date": "2024-06-01", "end_date": "2024-06-30"},
                },
            ]
        },
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [q["query"] for q in results] == [
        "Which port does the VPN use?",
        "When is lunch served?",
        "printer",
        "anything",
    ]
    for q in results:
        scores = [h["score"] for h in q["results"]]
        assert scores == sorted(scores, reverse=True)
        for hit in q["results"]:
            assert set(hit) >= {"id", "text", "metadata", "score", "embedding"}
            assert isinstance(hit["score"], float) and hit["score"] > 0
            assert hit["id"] and hit["text"] and hit["metadata"]["document_id"]
    vpn, lunch, alice, june = (q["results"] for q in results)
    assert len(vpn) == 2
    assert vpn[0]["metadata"]["document_id"] == "vpn" and "port 443" in vpn[0]["text"]
    assert vpn[0]["metadata"] | {"url": None} == {
        "source": "email",
        "source_id": "mail-17",
        "author": "alice",
        "created_at": "2024-03-01T09:00:00Z",
        "url": None,
        "document_id": "vpn",
    }
    assert {h["metadata"]["document_id"] for h in lunch} == {"lunch", "printer"}
    assert lunch[0]["metadata"]["document_id"] == "lunch"
    assert {h["metadata"]["document_id"] for h in alice} == {"vpn", "printer"}
    assert [h["metadata"]["document_id"] for h in june] == ["lunch"]

    # Replacing a document keeps one copy, with the new text.
    replaced = {"id": "lunch", "text": "Lunch moved: the canteen now opens at half past eleven."}
    assert client.post("/upsert", json={"documents": [replaced]}).status_code == 200
    assert _text_of(client, "lunch") == replaced["text"]

    # Delete by id, by filter, then everything.
    r = client.request("DELETE", "/delete", json={"ids": ["vpn", "never-stored"]})
    assert r.status_code == 200 and r.json() == {"success": True, "deleted": 1}
    assert _chunks_of(client, "vpn") == []
    r = client.request("DELETE", "/delete", json={"filter": {"author": "alice"}})
    assert r.json() == {"success": True, "deleted": 1}  # the printer; the vpn is gone already
    assert _chunks_of(client, "printer") == []
    assert _text_of(client, "lunch") == replaced["text"]
    r = client.request("DELETE", "/delete", json={"delete_all": True})
    assert r.json() == {"success": True, "deleted": 2}  # lunch and the generated id
    r = client.post("/query", json={"queries": [{"query": "lunch", "top_k": 10}]})
    assert r.json()["results"][0]["results"] == []


def test_delete_needs_something_to_delete(client: httpx.Client) -> None:
    r = client.request("DELETE", "/delete", json={})
    assert r.status_code == 422
    assert "ids, filter or delete_all" in r.json()["detail"]


def test_a_failed_batch_stores_none_of_it(client: httpx.Client) -> None:
    client.request("DELETE", "/delete", json={"delete_all": True})
    original = {"id": "keep", "text": "The original text of the kept document."}
    assert client.post("/upsert", json={"documents": [original]}).status_code == 200
    batch = [
        {"id": "keep", "text": "A replacement that must not be stored."},
        {"id": "new-1", "text": "A new document that must not be stored."},
        {"id": "bad", "text": "Dated wrongly.", "metadata": {"created_at": "last Tuesday"}},
    ]
    r = client.post("/upsert", json={"documents": batch})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert "documents.2.metadata.created_at" in detail and "ISO 8601" in detail
    assert _text_of(client, "keep") == original["text"]
    assert _chunks_of(client, "new-1") == [] and _chunks_of(client, "bad") == []

    blank = [{"id": "new-2", "text": "Fine."}, {"id": "blank", "text": "   \n "}]
    r = client.post("/upsert", json={"documents": blank})
    assert r.status_code == 422 and "documents.1.text" in r.json()["detail"]
    assert _chunks_of(client, "new-2") == []


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/upsert", {"documents": []}, "documents"),
        ("/upsert", {"documents": [{"id": "x"}]}, "documents.0.text"),
        ("/upsert", {"documents": [{"text": "t", "metadata": {"source": "fax"}}]}, "source"),
        ("/upsert", {"documents": [{"id": "", "text": "t"}]}, "documents.0.id"),
        ("/query", {"queries": [{"query": "q", "top_k": 0}]}, "queries.0.top_k"),
        ("/query", {"queries": [{"query": "q", "top_k": 101}]}, "queries.0.top_k"),
        ("/query", {"queries": [{"query": ""}]}, "queries.0.query"),
        ("/query", {"queries": [{"query": "q", "filter": {"colour": "red"}}]}, "colour"),
        (
            "/query",
            {"queries": [{"query": "q", "filter": {"start_date": "2024-13-45"}}]},
            "start_date",
        ),
        ("/query", [1, 2, 3], "body"),
    ],
)
def test_invalid_requests_are_422_naming_the_field(
    client: httpx.Client, path: str, body: Any, field: str
) -> None:
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail.startswith("invalid request: ") and field in detail


def test_malformed_json_is_422_not_500(client: httpx.Client) -> None:
    r = client.post(
        "/upsert", content=b'{"documents": [', headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and "JSON" in r.json()["detail"]


# ---- /upsert-file ---------------------------------------------------------------------------


def _write_pdf(path: Path, lines: list[str]) -> Path:
    """A one-page PDF with one Helvetica text line per string (written by hand, no library)."""
    text = " ".join("({}) Tj T*".format(s.replace("(", r"\(").replace(")", r"\)")) for s in lines)
    stream = f"BT /F1 12 Tf 72 720 Td 15 TL {text} ET".encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
    ]
    data = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, obj in enumerate(objects, start=1):
        offsets.append(len(data))
        data += f"{n} 0 obj\n".encode() + obj + b"\nendobj\n"
    xref = len(data)
    data += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    data += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    data += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    path.write_bytes(bytes(data))
    return path


def _write_docx(path: Path) -> Path:
    import docx

    d = docx.Document()
    d.add_heading("Harbour report", level=1)
    d.add_paragraph("Forty moorings are let for the winter season at the east quay.")
    d.save(str(path))
    return path


@pytest.fixture(scope="module")
def upload_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """A file of each type and a phrase its extracted text must contain."""
    root = tmp_path_factory.mktemp("uploads")
    return {
        "md": (DATA / "guide.md", "pH between 6.0 and 7.0"),
        "txt": (DATA / "notes.txt", "repaint the boathouse in May"),
        "html": (DATA / "page.html", "flour and water fermented by wild yeast"),
        "pdf": (
            _write_pdf(root / "minutes.pdf", ["Board minutes.", "The ferry leaves at 7.15."]),
            "ferry leaves at 7.15",
        ),
        "docx": (_write_docx(root / "harbour.docx"), "Forty moorings are let"),
    }


@pytest.mark.parametrize("kind", ["md", "txt", "html", "pdf", "docx"])
def test_upsert_file_of_each_type(
    client: httpx.Client, upload_files: dict[str, tuple[Path, str]], kind: str
) -> None:
    path, phrase = upload_files[kind]
    meta = {"source": "file", "author": "carol", "source_id": f"upload-{kind}"}
    with open(path, "rb") as f:
        r = client.post(
            "/upsert-file", files={"file": (path.name, f)}, data={"metadata": json.dumps(meta)}
        )
    assert r.status_code == 200, r.text
    (doc_id,) = r.json()["ids"]
    hits = _chunks_of(client, doc_id, phrase)
    assert hits and phrase in " ".join(" ".join(h["text"].split()) for h in hits)
    assert hits[0]["metadata"] | {"url": None, "created_at": None} == {
        **meta,
        "document_id": doc_id,
        "url": None,
        "created_at": None,
    }
    if kind == "html":  # scripts and styles are not text
        assert "never shown" not in " ".join(h["text"] for h in hits)
    r = client.request("DELETE", "/delete", json={"ids": [doc_id]})
    assert r.json()["deleted"] == 1


def test_upsert_file_refusals(client: httpx.Client, tmp_path: Path) -> None:
    r = client.post("/upsert-file", files={"file": ("tool.exe", b"MZ\x90\x00")})
    assert r.status_code == 415
    assert "'.exe'" in r.json()["detail"] and "pdf" in r.json()["detail"]
    r = client.post("/upsert-file", files={"file": ("README", b"no extension")})
    assert r.status_code == 415
    # A file whose content does not match its type is a clear 422, not a 500.
    r = client.post("/upsert-file", files={"file": ("broken.pdf", b"this is not a PDF")})
    assert r.status_code == 422 and "broken.pdf" in r.json()["detail"]
    r = client.post("/upsert-file", files={"file": ("empty.txt", b"  \n ")})
    assert r.status_code == 422 and "no text" in r.json()["detail"]
    bad_meta = {"metadata": json.dumps({"created_at": "yesterday"})}
    r = client.post("/upsert-file", files={"file": ("a.txt", b"Text.")}, data=bad_meta)
    assert r.status_code == 422 and "metadata.created_at" in r.json()["detail"]
    r = client.post("/upsert-file", files={"file": ("a.txt", b"Text.")}, data={"metadata": "{"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]
    r = client.post("/upsert-file", data={"metadata": "{}"})
    assert r.status_code == 422 and "file" in r.json()["detail"]


def test_concurrent_uploads_of_one_name_are_isolated(client: httpx.Client) -> None:
    codes = [uuid.uuid4().hex[:12] for _ in range(8)]

    def upload(code: str) -> str:
        body = f"# Report\n\nThe access code in this copy of the report is {code}.\n"
        r = client.post("/upsert-file", files={"file": ("report.md", body.encode())})
        assert r.status_code == 200, r.text
        return str(r.json()["ids"][0])

    with cf.ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(upload, codes))
    assert len(set(ids)) == len(codes)
    for doc_id, code in zip(ids, codes, strict=True):
        text = _text_of(client, doc_id)
        assert code in text
        assert not any(other in text for other in codes if other != code)
    client.request("DELETE", "/delete", json={"ids": ids})


# ---- limits and file names, on a server with small limits --------------------------------------


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamachainServer]:
    env = {"LLAMACHAIN_SERVER_MAX_BODY_MB": "0.01", "LLAMACHAIN_SERVER_MAX_UPLOAD_MB": "0.02"}
    s = start_llamachain_server(tmp_path_factory.mktemp("small-home"), env=env)
    try:
        yield s
    finally:
        s.stop()


def test_bodies_over_the_limit_are_413(small_server: LlamachainServer) -> None:
    big_text = "word " * 4000  # 20 kB of JSON against a 10 KiB limit
    with small_server.client() as c:
        r = c.post("/upsert", json={"documents": [{"id": "big", "text": big_text}]})
        assert r.status_code == 413
        assert "too large" in r.json()["detail"] and "10.2 KiB" in r.json()["detail"]

        # Without a Content-Length (chunked) the body is counted as it arrives.
        def chunks() -> Iterator[bytes]:
            yield b'{"documents": [{"id": "chunked", "text": "'
            for _ in range(40):
                yield b"x" * 1000
            yield b'"}]}'

        r = c.post("/upsert", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and "too large" in r.json()["detail"]

        # A file over the upload limit: refused by its declared size (100 kB) ...
        r = c.post("/upsert-file", files={"file": ("big.txt", b"a line of text\n" * 7000)})
        assert r.status_code == 413 and "too large" in r.json()["detail"]
        # ... or, inside the multipart allowance, while it is copied (30 kB > 20 KiB).
        r = c.post("/upsert-file", files={"file": ("mid.txt", b"a line of text\n" * 2000)})
        assert r.status_code == 413 and "too large" in r.json()["detail"]

        # Nothing of them was stored, and a small request still works.
        r = c.post("/upsert", json={"documents": [{"id": "small", "text": "A small note."}]})
        assert r.status_code == 200
        r = c.post("/query", json={"queries": [{"query": "text", "top_k": 10}]})
        assert [h["metadata"]["document_id"] for h in r.json()["results"][0]["results"]] == [
            "small"
        ]


def test_file_names_cannot_escape_the_upload_directory(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from llamachain.knowledge import KnowledgeBase
    from llamachain.settings import Settings

    tag = uuid.uuid4().hex[:10]
    names = {
        f"../../evil-{tag}.md": f"evil-{tag}.md",
        f"..\\..\\win-{tag}.md": f"win-{tag}.md",
        f"{tempfile.gettempdir()}/abs-{tag}.md": f"abs-{tag}.md",
        "../..": None,  # nothing usable left: refused as a type, never written anywhere
    }
    home = tmp_path_factory.mktemp("names-home")
    server = start_llamachain_server(home)
    ids: dict[str, str] = {}
    try:
        with server.client() as c:
            for name, shown in names.items():
                body = f"Uploaded as {name!r}; harmless.".encode()
                r = c.post("/upsert-file", files={"file": (name, body)})
                if shown is None:
                    assert r.status_code == 415, r.text
                    continue
                assert r.status_code == 200, r.text
                ids[shown] = r.json()["ids"][0]
                assert f"Uploaded as {name!r}" in _text_of(c, ids[shown])
    finally:
        server.stop()
    # Nothing was written where the names point, from the server's working directory, its
    # home or the temporary directory its uploads go to.
    upload_dir = Path(tempfile.gettempdir()) / "llamachain-upload-x"  # where uploads are copied
    for base in (Path.cwd(), home, upload_dir, upload_dir / "x"):
        for shown in names.values():
            if shown:
                assert not (base / ".." / ".." / shown).resolve().exists()
    assert not Path(f"{tempfile.gettempdir()}/abs-{tag}.md").exists()
    leftovers = [
        p for p in Path(tempfile.gettempdir()).glob("llamachain-upload-*") if tag in str(p)
    ]
    assert leftovers == []
    # The stored documents carry the sanitized names (what citations show).
    store = KnowledgeBase("default", settings=Settings(home=home)).vectorstore
    for shown, doc_id in ids.items():
        got = store.get(where={"document_id": doc_id}, include=["metadatas"])
        assert got["ids"]
        assert {m["file_name"] for m in got["metadatas"]} == {shown}


# ---- manifest and OpenAPI ---------------------------------------------------------------------


def test_plugin_manifest(server: LlamachainServer, client: httpx.Client) -> None:
    r = client.get("/.well-known/ai-plugin.json")
    assert r.status_code == 200
    m = r.json()
    assert m["schema_version"] == "v1" and m["name_for_model"] == "retrieval"
    assert m["auth"] == {"type": "user_http", "authorization_type": "bearer"}
    assert m["api"]["type"] == "openapi"
    assert m["api"]["url"] == f"{server.url}/openapi.json"
    assert "'default'" in m["description_for_model"]


def test_openapi_document(client: httpx.Client) -> None:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    assert {"/upsert", "/upsert-file", "/query", "/delete", "/healthz"} <= set(paths)
    assert set(paths["/delete"]) == {"delete"}
    assert "/openapi.json" not in paths
    schemas = spec["components"]["schemas"]
    for name in ("UpsertRequest", "QueryRequest", "QueryResponse", "DeleteRequest"):
        assert name in schemas
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "security" not in paths["/healthz"]["get"]
    assert paths["/query"]["post"]["security"] == [{"HTTPBearer": []}]


# ---- llamachain serve's own refusals ---------------------------------------------------------


def _serve(
    tmp_path: Path, *args: str, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMACHAIN_")}
    env["LLAMACHAIN_HOME"] = str(tmp_path / "home")
    if token:
        env["LLAMACHAIN_SERVER_TOKEN"] = token
    return subprocess.run(
        [str(LLAMACHAIN), "serve", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_serve_refuses_a_public_address_without_a_token(tmp_path: Path) -> None:
    done = _serve(tmp_path, "--host", "0.0.0.0", "--port", str(free_port()))
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: refusing to serve 0.0.0.0")
    assert "--allow-no-token" in lines[0] and "LLAMACHAIN_SERVER_TOKEN" in lines[0]
    assert "Traceback" not in done.stderr + done.stdout


def test_serve_on_a_public_address_when_told_to(tmp_path: Path) -> None:
    server = start_llamachain_server(
        tmp_path / "home", token=None, args=["--host", "0.0.0.0", "--allow-no-token"]
    )
    try:
        assert "on http://0.0.0.0:" in server.log_text() and "no token" in server.log_text()
        with httpx.Client(base_url=f"http://{HOST}:{server.port}") as c:  # no token needed
            assert c.get("/.well-known/ai-plugin.json").json()["auth"] == {"type": "none"}
    finally:
        server.stop()


def test_serve_on_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = _serve(tmp_path, "--host", HOST, "--port", str(port), token="t")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert lines == [f"error: port {port} on {HOST} is already in use; pick another with --port"]
