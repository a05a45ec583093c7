"""The server's app layer without a model or sockets: auth, limits, errors, upload names."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from llamachain.errors import ConfigError
from llamachain.server import ServerState, check_bind, create_app, is_loopback
from llamachain.server._plugin import safe_filename
from llamachain.settings import Settings
from llamachain.testing import FakeEmbeddings

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _app(tmp_path: Path, **settings: object) -> object:
    s = Settings(home=tmp_path / "home", server_token=SecretStr(TOKEN), **settings)
    return create_app(state=ServerState(s, embeddings=FakeEmbeddings()))


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=_app(tmp_path))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.4", False),
        ("example.org", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_binding_beyond_loopback_needs_a_token_or_explicit_consent(tmp_path: Path) -> None:
    open_settings = Settings(home=tmp_path)
    check_bind("127.0.0.1", open_settings)
    with pytest.raises(ConfigError, match="LLAMACHAIN_SERVER_TOKEN"):
        check_bind("0.0.0.0", open_settings)
    check_bind("0.0.0.0", open_settings, allow_no_token=True)
    check_bind("0.0.0.0", Settings(home=tmp_path, server_token=SecretStr("t")))


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("notes.md", "notes.md"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\win.ini", "win.ini"),
        ("/abs/path/report.pdf", "report.pdf"),
        ("..", "upload"),
        ("", "upload"),
        (None, "upload"),
        ("we;ird$name?.txt", "we_ird_name_.txt"),
        ("a" * 300 + ".md", "a" * 200),
    ],
)
def test_upload_names_are_made_harmless(given: str | None, stored: str) -> None:
    name = safe_filename(given)
    assert name == stored
    assert "/" not in name and "\\" not in name and name not in (".", "..")


async def test_health_is_open_and_everything_else_needs_the_token(
    client: httpx.AsyncClient,
) -> None:
    health = await client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok" and health.json()["model_loaded"] is False
    body = {"queries": [{"query": "x"}]}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        r = await client.post("/query", json=body, headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["www-authenticate"] == "Bearer"
        assert "bearer token" in r.json()["detail"]
    for path in ("/openapi.json", "/.well-known/ai-plugin.json"):
        assert (await client.get(path)).status_code == 401
        assert (await client.get(path, headers=AUTH)).status_code == 200


async def test_openapi_declares_the_plugin_routes_and_bearer_auth(
    client: httpx.AsyncClient,
) -> None:
    spec = (await client.get("/openapi.json", headers=AUTH)).json()
    for path in ("/upsert", "/upsert-file", "/query", "/delete", "/healthz"):
        assert path in spec["paths"], path
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    manifest = (await client.get("/.well-known/ai-plugin.json", headers=AUTH)).json()
    assert manifest["api"]["url"] == "http://test/openapi.json"
    assert manifest["auth"] == {"type": "user_http", "authorization_type": "bearer"}


async def test_invalid_requests_are_422_naming_the_field(client: httpx.AsyncClient) -> None:
    cases = [
        ({"queries": []}, "queries"),
        ({"queries": [{"query": "x", "top_k": 0}]}, "queries.0.top_k"),
        ({"queries": [{"query": "x", "filter": {"start_date": "last week"}}]}, "start_date"),
        ({"queries": [{"query": "x", "filter": {"colour": "red"}}]}, "colour"),
        ({"queries": "x"}, "queries"),
    ]
    for body, field in cases:
        r = await client.post("/query", json=body, headers=AUTH)
        assert r.status_code == 422, body
        assert r.json()["detail"].startswith("invalid request: ")
        assert field in r.json()["detail"], (body, r.json())
    r = await client.post("/upsert", json={"documents": [{"text": "   "}]}, headers=AUTH)
    assert r.status_code == 422 and "documents.0.text" in r.json()["detail"]
    r = await client.post(
        "/upsert",
        json={"documents": [{"text": "a", "metadata": {"source": "fax"}}]},
        headers=AUTH,
    )
    assert r.status_code == 422 and "source" in r.json()["detail"]
    r = await client.post(
        "/query", content=b"{not json", headers={**AUTH, "content-type": "application/json"}
    )
    assert r.status_code == 422


async def test_bodies_over_the_limit_are_413_declared_or_streamed(tmp_path: Path) -> None:
    app = _app(tmp_path, server_max_body_mb=0.01, server_max_upload_mb=0.02)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        big = {"documents": [{"text": "word " * 4000}]}  # ~20 KB > 10 KiB
        r = await c.post("/upsert", json=big, headers=AUTH)
        assert r.status_code == 413 and "too large" in r.json()["detail"]

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(40):
                yield b" " * 1000

        r = await c.post(
            "/upsert", content=chunks(), headers={**AUTH, "content-type": "application/json"}
        )
        assert r.status_code == 413
        # Uploads have their own, larger limit.
        r = await c.post("/upsert-file", files={"file": ("big.txt", b"x" * 30_000)}, headers=AUTH)
        assert r.status_code == 413
        r = await c.post("/upsert-file", files={"file": ("tool.exe", b"MZ")}, headers=AUTH)
        assert r.status_code == 415 and "txt" in r.json()["detail"]


async def test_upload_metadata_must_be_a_valid_json_object(client: httpx.AsyncClient) -> None:
    for raw, needle in (
        ("{broken", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"created_at": "yesterday"}', "created_at"),
        ('{"source": "fax"}', "source"),
    ):
        r = await client.post(
            "/upsert-file",
            files={"file": ("a.txt", b"hello")},
            data={"metadata": raw},
            headers=AUTH,
        )
        assert r.status_code == 422, raw
        assert needle in r.json()["detail"], (raw, r.json())


async def test_plugin_round_trip_in_the_chatgpt_retrieval_plugin_shapes(
    client: httpx.AsyncClient,
) -> None:
    docs = [
        {
            "id": "vpn",
            "text": "The office VPN listens on port 443 and needs the staff certificate.",
            "metadata": {"source": "email", "author": "ops", "created_at": "2024-03-01"},
        },
        {"text": "Lunch is served in the atrium from noon.", "metadata": {"source": "chat"}},
    ]
    r = await client.post("/upsert", json={"documents": docs}, headers=AUTH)
    assert r.status_code == 200, r.text
    ids = r.json()["ids"]
    assert ids[0] == "vpn" and len(ids) == 2 and ids[1]
    body = {
        "queries": [
            {"query": "VPN port certificate", "top_k": 1},
            {"query": "anything", "filter": {"source": "chat"}},
            {"query": "anything", "filter": {"start_date": "2024-02-01", "author": "ops"}},
        ]
    }
    r = await client.post("/query", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    first, chat, dated = r.json()["results"]
    assert first["query"] == "VPN port certificate" and len(first["results"]) == 1
    hit = first["results"][0]
    assert set(hit) >= {"id", "text", "metadata", "embedding", "score"}
    assert hit["metadata"]["document_id"] == "vpn"
    assert hit["metadata"]["author"] == "ops" and hit["metadata"]["source"] == "email"
    assert "port 443" in hit["text"]
    assert [h["metadata"]["document_id"] for h in chat["results"]] == [ids[1]]
    assert [h["metadata"]["document_id"] for h in dated["results"]] == ["vpn"]

    r = await client.request("DELETE", "/delete", json={}, headers=AUTH)
    assert r.status_code == 422 and "delete_all" in r.json()["detail"]
    r = await client.request("DELETE", "/delete", json={"filter": {"source": "chat"}}, headers=AUTH)
    assert r.json() == {"success": True, "deleted": 1}
    r = await client.request("DELETE", "/delete", json={"ids": ["vpn", "nope"]}, headers=AUTH)
    assert r.json() == {"success": True, "deleted": 1}
    r = await client.post("/query", json={"queries": [{"query": "VPN"}]}, headers=AUTH)
    assert r.json()["results"][0]["results"] == []


async def test_uploaded_files_become_one_document_each(client: httpx.AsyncClient) -> None:
    text = b"# Backups\n\nNightly backups run at 02:00 and are kept for 30 days.\n"
    r = await client.post(
        "/upsert-file",
        files={"file": ("../../ops/backups.md", text, "text/markdown")},
        data={"metadata": '{"source": "file", "author": "it"}'},
        headers=AUTH,
    )
    assert r.status_code == 200, r.text
    (doc_id,) = r.json()["ids"]
    r = await client.post(
        "/query", json={"queries": [{"query": "how long are backups kept"}]}, headers=AUTH
    )
    (hit,) = r.json()["results"][0]["results"]
    assert hit["metadata"]["document_id"] == doc_id and hit["metadata"]["author"] == "it"
    assert "30 days" in hit["text"]
    r = await client.post(
        "/upsert-file", files={"file": ("broken.pdf", b"%PDF-1.7 not really")}, headers=AUTH
    )
    assert r.status_code == 422 and "broken.pdf" in r.json()["detail"]


async def test_browser_origins_are_allowed_only_when_configured(tmp_path: Path) -> None:
    preflight = {
        "Origin": "https://chat.example.org",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    for origins, allowed in (([], False), (["https://chat.example.org"], True)):
        app = _app(tmp_path / str(allowed), server_cors_origins=origins)
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            r = await c.options("/query", headers=preflight)
            got = r.headers.get("access-control-allow-origin")
            assert (got == "https://chat.example.org") is allowed, (origins, r.headers)


async def test_tokenize_detokenize_and_props_use_the_served_model(tmp_path: Path) -> None:
    from llamachain.chat_models import ChatLlama
    from llamachain.testing import FakeEngine

    engine = FakeEngine(n_ctx=3072, model_name="fake-served")
    s = Settings(home=tmp_path / "home", server_token=SecretStr(TOKEN), server_max_tokens=77)
    state = ServerState(s, chat_model=ChatLlama(engine=engine), embeddings=FakeEmbeddings())
    transport = httpx.ASGITransport(app=create_app(state=state))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        r = await c.post("/tokenize", json={"content": "hello big world"}, headers=AUTH)
        ids = r.json()["tokens"]
        assert ids == engine.tokenize("hello big world") and len(ids) == 3
        r = await c.post("/tokenize", json={"content": "x", "add_special": True}, headers=AUTH)
        assert r.json()["tokens"][0] == 0
        r = await c.post("/detokenize", json={"tokens": ids}, headers=AUTH)
        assert r.json()["content"] == engine.detokenize(ids)
        props = (await c.get("/props", headers=AUTH)).json()
        assert props["n_ctx"] == 3072 and props["max_tokens"] == 77
        assert props["model"] == "fake-served" and props["knowledge_base"] == "default"
        assert (await c.post("/tokenize", json={"content": "x"})).status_code == 401
        r = await c.post("/tokenize", json={"text": "x"}, headers=AUTH)
        assert r.status_code == 422 and "content" in r.json()["detail"]


async def test_undecodable_bodies_are_422_too(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/query", content=b"\xff\xfe{", headers={**AUTH, "content-type": "application/json"}
    )
    assert r.status_code == 422 and "UTF-8" in r.json()["detail"]
    r = await client.post(
        "/v1/embeddings", content=b"\xff{", headers={**AUTH, "content-type": "application/json"}
    )
    assert r.status_code == 422 and "UTF-8" in r.json()["error"]["message"]
    r = await client.get("/no-such-route", headers=AUTH)
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}


async def test_flags_must_be_json_booleans_not_strings_or_numbers(tmp_path: Path) -> None:
    # pydantic's lax mode would read "yes", "false", 1 or 0 as booleans: {"delete_all": 1}
    # emptied the knowledge base; a typed-by-hand flag is refused instead of guessed
    from llamachain.chat_models import ChatLlama
    from llamachain.testing import FakeEngine

    s = Settings(home=tmp_path / "home", server_token=SecretStr(TOKEN))
    state = ServerState(s, chat_model=ChatLlama(engine=FakeEngine()), embeddings=FakeEmbeddings())
    transport = httpx.ASGITransport(app=create_app(state=state))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        docs = {"documents": [{"id": "keep", "text": "The VPN listens on port 443."}]}
        assert (await c.post("/upsert", json=docs, headers=AUTH)).status_code == 200
        for flag in ("false", "yes", 1, 0):
            r = await c.request("DELETE", "/delete", json={"delete_all": flag}, headers=AUTH)
            assert r.status_code == 422 and "delete_all" in r.json()["detail"], flag
        hits = await c.post("/query", json={"queries": [{"query": "VPN port"}]}, headers=AUTH)
        hit_ids = [h["metadata"]["document_id"] for h in hits.json()["results"][0]["results"]]
        assert hit_ids == ["keep"]
        r = await c.post("/ask", json={"question": "Which port?", "stream": 0}, headers=AUTH)
        assert r.status_code == 422 and "stream" in r.json()["detail"]
        msgs = [{"role": "user", "content": "hi"}]
        for extra in (
            {"stream": "true"},
            {"logprobs": 1},
            {"stream_options": {"include_usage": "1"}},
        ):
            body = {"messages": msgs, **extra}
            r = await c.post("/v1/chat/completions", json=body, headers=AUTH)
            assert r.status_code == 422, (extra, r.text)
            assert next(iter(extra)) in r.json()["error"]["message"], (extra, r.json())
        r = await c.post("/tokenize", json={"content": "x", "add_special": "yes"}, headers=AUTH)
        assert r.status_code == 422 and "add_special" in r.json()["detail"]
        # real booleans still work
        r = await c.post("/tokenize", json={"content": "x", "add_special": True}, headers=AUTH)
        assert r.status_code == 200
