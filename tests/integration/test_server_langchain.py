"""Generation scaled out: GroundedQA with LangChain's ChatOpenAI pointed at `llamachain serve`.

Retrieval runs here, in this process, over a local knowledge base; generation runs in the server
process through its OpenAI-compatible endpoint.  The answer must match what the same chain gives
with the in-process ChatLlama (both greedy, same model, same prompt).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from llamachain_server import start_llamachain_server

from llamachain import ChatLlama, KnowledgeBase, Settings
from llamachain.qa import GroundedQA

DOCS = Path(__file__).resolve().parents[2] / "examples" / "data" / "pallets-mini"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    s = start_llamachain_server(
        tmp_path_factory.mktemp("lc-server"), env={"LLAMACHAIN_N_THREADS": "2"}
    )
    yield s
    s.stop()


def test_grounded_qa_over_chatopenai_matches_the_local_model(server, tmp_path: Path) -> None:
    from langchain_openai import ChatOpenAI

    settings = Settings(home=tmp_path / "home", n_threads=2)
    kb = KnowledgeBase("pallets-mini", settings=settings)
    kb.ingest([DOCS])
    remote = ChatOpenAI(
        base_url=server.url + "/v1",
        api_key=server.token,
        model="served-model",
        temperature=0,
        max_retries=0,
        timeout=120,
    )
    question = "Which class adds time information to a signature so that it can expire?"
    # The server's model has the settings' default context; tell the chain what it is.
    over_http = GroundedQA.from_knowledge_base(kb, llm=remote, context_window=8192)(question)
    local_model = ChatLlama(settings=settings, temperature=0.0, seed=0, n_ctx=8192)
    local = GroundedQA.from_knowledge_base(kb, llm=local_model, context_window=8192)(question)

    assert not over_http.abstained, over_http.answer
    assert "TimestampSigner" in over_http.answer
    assert over_http.citations and all(
        c.chunk_id in {ch.id for ch in over_http.chunks} for c in over_http.citations
    )
    assert over_http.model_answer == local.model_answer
    assert [c.chunk_id for c in over_http.citations] == [c.chunk_id for c in local.citations]
    # Streaming goes through the server's SSE chunks and ends with the same result.
    chain = GroundedQA.from_knowledge_base(kb, llm=remote, context_window=8192)
    pieces = list(chain.stream(question))
    assert len(pieces) > 2 and pieces[-1].result is not None
    assert "".join(p.text for p in pieces).strip()
    assert pieces[-1].result.model_answer == over_http.model_answer
    local_model.close()
