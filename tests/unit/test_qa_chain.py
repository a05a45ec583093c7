"""GroundedQA end to end without a model: a scripted FakeEngine, FakeEmbeddings, real Chroma."""

from __future__ import annotations

import json

import pytest

from llamachain.chat_models import ChatLlama
from llamachain.knowledge import KnowledgeBase
from llamachain.llms import LlamaLLM
from llamachain.qa import ConversationMemory, GroundedQA, QAChunk, QAResult
from llamachain.qa.evaluate import QAItem, evaluate, load_questions, matches
from llamachain.settings import Settings
from llamachain.testing import FakeEmbeddings, FakeEngine

DOCS = {
    "debug.md": "# Debugger\n\nThe debugger shows a console in the browser. An explicit PIN "
    "can be set with the `WERKZEUG_DEBUG_PIN` environment variable. Set it to a number.\n",
    "server.md": "# Server\n\nThe development server listens on port 5000 by default. Pass "
    "`port=8080` to use another one. It reloads the code when a file changes.\n",
    "templates.md": "# Templates\n\nTemplates inherit from a layout with the extends tag. "
    "Blocks are overridden by child templates.\n",
}


@pytest.fixture
def kb(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text)
    settings = Settings(home=tmp_path / "home")
    base = KnowledgeBase("unit", settings=settings, embeddings=FakeEmbeddings())
    summary = base.ingest([folder])
    assert summary.added == 3
    return base


def chain(kb, engine, **cfg):
    llm = ChatLlama(engine=engine)
    return GroundedQA(
        retriever=kb.retriever(k=3), llm=llm, embeddings=kb.embeddings, **_config(cfg)
    )


def _config(cfg):
    from llamachain.qa import QAConfig

    return {"config": QAConfig(**cfg)} if cfg else {}


def test_answer_with_citation_quote_and_timings(kb):
    engine = FakeEngine(["Set `WERKZEUG_DEBUG_PIN` to a number [1]."])
    r = chain(kb, engine).invoke("Which environment variable sets the debugger PIN?")
    assert isinstance(r, QAResult) and not r.abstained
    assert "WERKZEUG_DEBUG_PIN" in r.answer and r.reply_shown
    assert r.citations and r.citations[0].file_name == "debug.md"
    assert r.citations[0].snippet and "WERKZEUG_DEBUG_PIN" in r.quote
    assert r.answer.count("[1]") == 2  # the reply's marker and the quote's
    assert r.chunks[0].n == 1 and r.chunks[0].tokens > 0
    for stage in ("retrieve", "pack", "prompt", "generate", "cite", "total", "first_token"):
        assert r.timings[stage] >= 0
    assert r.usage["output_tokens"] > 0
    prompt = engine.prompts[0]
    # stable instructions first, then numbered sources with their file and section
    assert prompt.index("Answer the question using only the sources") < prompt.index("[1]")
    assert "debug.md § Debugger" in prompt
    assert prompt.rstrip().endswith("assistant")


def test_citations_of_sources_that_were_not_packed_are_dropped(kb):
    engine = FakeEngine(["Use `WERKZEUG_DEBUG_PIN` [7]."])
    r = chain(kb, engine, max_sources=1).invoke("Which variable sets the debugger PIN?")
    assert "[7]" not in r.answer and "[7]" not in r.model_answer
    assert [c.n for c in r.chunks] == [1, 2, 3]  # packed first, then the rest retrieved
    assert [c.packed for c in r.chunks] == [True, False, False]
    assert {c.n for c in r.citations} <= {1, 2, 3}


def test_an_invented_reply_is_not_shown(kb):
    engine = FakeEngine(["Use FLASK_SECRET_PIN_CODE=4242 with hashlib.sha512."])
    r = chain(kb, engine).invoke("Which variable sets the debugger PIN?")
    assert not r.reply_shown and "FLASK_SECRET_PIN_CODE" not in r.answer
    assert r.answer.startswith("According to [1]") and "WERKZEUG_DEBUG_PIN" in r.answer
    r2 = chain(kb, FakeEngine(["Use FLASK_SECRET_PIN_CODE=4242."]), quote=False).invoke(
        "Which variable sets the debugger PIN?"
    )
    assert r2.abstained and r2.abstain_reason == "unsupported"


def test_weak_retrieval_abstains_without_calling_the_model(kb):
    engine = FakeEngine(["should not be used"])
    r = chain(kb, engine).invoke("Which Prometheus metrics does Kubernetes scrape?")
    assert r.abstained and r.abstain_reason == "weak_retrieval"
    assert engine.prompts == [] and r.citations == []
    assert "do not say" in r.answer


def test_the_model_can_abstain(kb):
    r = chain(kb, FakeEngine(["The documents do not say."])).invoke(
        "Which port does the development server use by default?"
    )
    assert r.abstained and r.abstain_reason == "model"
    r2 = chain(kb, FakeEngine(["The documents do not say."]), trust_model_abstention=False)
    assert not r2.invoke("Which port does the development server use?").abstained


def test_stream_yields_the_reply_then_the_result(kb):
    engine = FakeEngine(["It listens on port 5000 [1]."])
    chunks = list(chain(kb, engine).stream("Which port does the development server use?"))
    assert all(isinstance(c, QAChunk) for c in chunks)
    assert chunks[-1].result is not None and all(c.result is None for c in chunks[:-1])
    assert "".join(c.text for c in chunks) == "It listens on port 5000 [1]."
    assert "5000" in chunks[-1].result.answer


async def test_async_paths(kb):
    engine = FakeEngine(["Port 5000 [1].", "Port 5000 [1]."])
    qa = chain(kb, engine)
    r = await qa.ainvoke("Which port does the development server use?")
    assert "5000" in r.answer and not r.abstained
    pieces = [c async for c in qa.astream("Which port does the development server use?")]
    assert pieces[-1].result is not None and "5000" in pieces[-1].result.answer


def test_a_looping_reply_is_cut(kb):
    engine = FakeEngine(["The answer is:\nThe answer is:\nThe answer is:\nThe answer is:"])
    r = chain(kb, engine).invoke("Which port does the development server use?")
    assert r.finish_reason == "repetition"
    assert r.model_answer.count("The answer is:") == 1


def test_the_prompt_never_overflows_a_small_context(kb):
    engine = FakeEngine(["Port 5000 [1]."], n_ctx=160)
    qa = chain(kb, engine, answer_tokens=32, max_source_tokens=None, min_coverage=0.0)
    r = qa.invoke("Which port does the development server use?")
    assert r.usage["input_tokens"] + 32 <= 160
    assert all(c.tokens < 160 for c in r.chunks)


def test_structured_mode_limits_citations_with_a_schema(kb):
    reply = json.dumps({"answer": "Port 5000.", "citations": [1]})
    engine = FakeEngine([reply])
    r = chain(kb, engine, structured=True).invoke("Which port does the server use?")
    schema = engine.params[0].json_schema
    packed = [c.n for c in r.chunks if c.packed]
    assert schema["properties"]["citations"]["items"]["enum"] == packed
    assert r.model_answer == "Port 5000." and "5000" in r.answer


def test_plain_llms_get_one_text_prompt(kb):
    engine = FakeEngine(["Port 5000 [1]."])
    qa = GroundedQA(retriever=kb.retriever(k=2), llm=LlamaLLM(engine=engine))
    r = qa.invoke({"question": "Which port does the development server use?"})
    assert "5000" in r.answer
    assert engine.prompts[0].rstrip().endswith("Answer:")


def test_follow_up_questions_are_rewritten(kb):
    engine = FakeEngine(
        [
            "An explicit PIN can be set with `WERKZEUG_DEBUG_PIN` [1].",
            "How do I set the debugger PIN to a number?",
            "Set `WERKZEUG_DEBUG_PIN` to a number [1].",
        ]
    )
    memory = ConversationMemory()
    qa = chain(kb, engine)
    qa.memory = memory
    qa.invoke("How do I set the debugger PIN?")
    r = qa.invoke("And can it be a number?")
    assert r.standalone_question == "How do I set the debugger PIN to a number?"
    assert "Rewrite the last question" in engine.prompts[1]
    assert len(memory) == 2


def test_bad_input_is_a_clear_error(kb):
    from llamachain.errors import ConfigError

    qa = chain(kb, FakeEngine())
    with pytest.raises(ConfigError, match="empty"):
        qa.invoke("   ")
    with pytest.raises(ConfigError, match="question"):
        qa.invoke(42)


def test_evaluate_scores_answers_abstentions_and_retrieval(kb, tmp_path):
    path = tmp_path / "qa.jsonl"
    rows = [
        {
            "id": "a",
            "question": "Which port does the development server use?",
            "answers": ["5000"],
            "source": "server.md",
        },
        {
            "id": "b",
            "question": "Which variable sets the debugger PIN?",
            "answers": ["WERKZEUG_DEBUG_PIN"],
            "source": "debug.md",
        },
        {
            "id": "c",
            "question": "Which Prometheus metrics are exported to Kubernetes?",
            "answers": [],
            "source": None,
        },
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    items = load_questions(path)
    assert items[2] == QAItem("c", rows[2]["question"], (), None)
    engine = FakeEngine(["Port 5000 [1].", "I do not know."])
    seen = []
    report = evaluate(chain(kb, engine), items, progress=lambda i, n, row: seen.append(i))
    m = report.metrics()
    assert seen == [1, 2, 3]
    assert m["questions"] == 3 and m["answerable"] == 2 and m["unanswerable"] == 1
    assert m["hit@1"] == 1.0 and m["accuracy"] == 0.5
    assert m["abstention_rate"] == 1.0 and m["false_abstention_rate"] == 0.5
    assert m["citation_precision"] == 1.0
    assert "answer accuracy" in report.table()
    assert json.loads(json.dumps(report.to_dict()))["metrics"]["accuracy"] == 0.5


def test_question_files_are_checked(tmp_path):
    from llamachain.errors import ConfigError

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\n')
    with pytest.raises(ConfigError, match=r"bad\.jsonl:1"):
        load_questions(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_questions(tmp_path / "missing.jsonl")
    assert matches("It is ``WERKZEUG_DEBUG_PIN``.", ["werkzeug_debug_pin"])
    assert not matches("nothing", ["5000"])
