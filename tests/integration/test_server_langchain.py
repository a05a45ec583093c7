"""Generation scaled out: GroundedQA with LangChain's ChatOpenAI pointed at `llamachain serve`,
counting tokens with the served model's tokenizer (RemoteTokenizer over /tokenize).

Retrieval runs here, in this process, over a local knowledge base; generation runs in the server
process through its OpenAI-compatible endpoint.  The answer must match what the same chain gives
with the in-process ChatLlama (both greedy, same model, same prompt).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from llamachain_server import start_llamachain_server

from llamachain import ChatLlama, ConfigError, KnowledgeBase, LlamaChainError, Settings
from llamachain.qa import GroundedQA
from llamachain.remote import RemoteTokenizer

DOCS = Path(__file__).resolve().parents[2] / "examples" / "data" / "pallets-mini"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    s = start_llamachain_server(
        tmp_path_factory.mktemp("lc-server"), env={"LLAMACHAIN_N_THREADS": "2"}
    )
    yield s
    s.stop()


def test_grounded_qa_over_chatopenai_matches_the_local_model(
    server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from langchain_openai import ChatOpenAI

    settings = Settings(home=tmp_path / "home", n_threads=2)
    kb = KnowledgeBase("pallets-mini", settings=settings)
    kb.ingest([DOCS])
    tokenizer = RemoteTokenizer(server.url, api_key=server.token)
    n_ctx = tokenizer.n_ctx
    remote = ChatOpenAI(
        base_url=server.url + "/v1",
        api_key=server.token,
        model="served-model",
        temperature=0,
        max_retries=0,
        timeout=120,
        custom_get_token_ids=tokenizer.token_ids,
    )
    question = "Which class adds time information to a signature so that it can expire?"
    over_http = GroundedQA.from_knowledge_base(kb, llm=remote, context_window=n_ctx)(question)
    local_model = ChatLlama(settings=settings, temperature=0.0, seed=0, n_ctx=n_ctx)
    local = GroundedQA.from_knowledge_base(kb, llm=local_model)(question)
    # Counted by the served model's own tokenizer: no estimate, the same packing as locally.
    assert "cannot count tokens" not in caplog.text
    assert [(c.id, c.tokens) for c in over_http.chunks] == [(c.id, c.tokens) for c in local.chunks]

    assert not over_http.abstained, over_http.answer
    assert "TimestampSigner" in over_http.answer
    assert over_http.citations and all(
        c.chunk_id in {ch.id for ch in over_http.chunks} for c in over_http.citations
    )
    assert over_http.model_answer == local.model_answer
    assert [c.chunk_id for c in over_http.citations] == [c.chunk_id for c in local.citations]
    # Streaming goes through the server's SSE chunks and ends with the same result.
    chain = GroundedQA.from_knowledge_base(kb, llm=remote, context_window=n_ctx)
    pieces = list(chain.stream(question))
    assert len(pieces) > 2 and pieces[-1].result is not None
    assert "".join(p.text for p in pieces).strip()
    assert pieces[-1].result.model_answer == over_http.model_answer
    local_model.close()


def test_remote_tokenizer_counts_like_the_model_and_reports_errors(server) -> None:
    from llamachain.engine import LlamaEngine

    text = "Signed values carry a timestamp: TimestampSigner.unsign(max_age=10)."
    with RemoteTokenizer(server.url + "/v1/", api_key=server.token) as tokenizer:
        ids = tokenizer.token_ids(text)
        assert tokenizer.token_ids(text) == ids  # cached, same answer
        with server.client() as c:
            back = c.post("/detokenize", json={"tokens": ids}).json()["content"]
            assert back == text
            assert c.post("/detokenize", json={"tokens": [10**9]}).status_code == 422
    engine = LlamaEngine(n_ctx=512, n_threads=1)
    assert ids == engine.tokenize(text)
    engine.close()
    bad = RemoteTokenizer(server.url, api_key="wrong")
    with bad, pytest.raises(LlamaChainError, match="401"):
        bad.count("x")
    unreachable = RemoteTokenizer("http://127.0.0.1:9", timeout=2)
    with unreachable, pytest.raises(LlamaChainError, match="cannot reach"):
        unreachable.count("x")
    with pytest.raises(ConfigError):
        RemoteTokenizer("localhost:8080")
