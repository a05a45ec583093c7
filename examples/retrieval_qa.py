"""Answer questions from a folder of documents with the local model, citing the sources.

Run:  .venv/bin/python examples/retrieval_qa.py ["your question" ...]

It ingests ``examples/data/pallets-mini`` (the ItsDangerous and MarkupSafe documentation,
BSD-3-Clause) into the knowledge base ``example-docs`` -- embedded locally with
all-MiniLM-L6-v2, stored in Chroma under LLAMACHAIN_HOME (default ~/.llamachain); a second run
only checks that nothing changed -- then answers each question with the bundled
SmolLM2-135M-Instruct model through :class:`llamachain.qa.GroundedQA`: the reply streams, then
the supporting passage and its source are printed.  A question the documents do not answer is
declined instead of answered from thin air.  Nothing is downloaded.

Point it at your own folder with ``--docs DIR --kb NAME``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from llamachain.errors import LlamaChainError
from llamachain.knowledge import KnowledgeBase
from llamachain.qa import GroundedQA

HERE = Path(__file__).resolve().parent
DOCS = HERE / "data" / "pallets-mini"
QUESTIONS = [
    "How is a signature attached to the string it signs?",
    "Which exception is raised when a timed signature is too old?",
    "What does escape() do with a string that is already safe?",
    "How do I store signed data in a PostgreSQL database?",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("questions", nargs="*", help="questions to ask (default: a few)")
    parser.add_argument("--docs", type=Path, default=DOCS, help="folder of documents")
    parser.add_argument("--kb", default="example-docs", help="knowledge base name")
    args = parser.parse_args()

    kb = KnowledgeBase(args.kb)
    print(f"knowledge base {args.kb!r} in {kb.location}; ingesting {args.docs} ...")
    summary = kb.ingest(
        [args.docs],
        include=["**/*.rst", "**/*.md", "**/*.txt"],
        exclude=["README.md", "**/LICENSE.txt"],
        progress=sys.stderr.isatty(),
    )
    print(
        f"  {summary.added} added, {summary.updated} updated, {summary.skipped} unchanged "
        f"({kb.stats()['chunks']} chunks)"
    )

    qa = GroundedQA.from_knowledge_base(kb)
    info = qa.llm.engine.info
    print(f"model: {info.name} ({info.parameters_label} parameters, {info.file_type})\n")
    for question in args.questions or QUESTIONS:
        print(f"Q: {question}\nA: ", end="", flush=True)
        started = time.perf_counter()
        streamed = []
        result = None
        for chunk in qa.stream(question):
            if chunk.text:
                streamed.append(chunk.text)
                print(chunk.text, end="", flush=True)
            result = chunk.result or result
        assert result is not None
        if streamed:
            print()
        if result.abstained:
            print(result.answer)
        elif result.quote:
            if not result.reply_shown:
                print("   (not supported by the documents; what they say instead:)")
            print(f"   “{result.quote}” [{result.citations[0].n}]")
        for c in result.citations:
            print(f"   [{c.n}] {c.label}")
        t = result.timings
        first = t.get("first_token")
        print(
            f"   ({time.perf_counter() - started:.1f} s"
            + (f", first token after {first:.2f} s" if first is not None else "")
            + ")\n"
        )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except LlamaChainError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
