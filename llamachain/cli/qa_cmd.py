"""``llamachain ask`` (a grounded answer, streamed, with its sources) and ``llamachain eval``."""

from __future__ import annotations

import sys
from typing import Any

import click

from llamachain.cli._common import (
    dump_json,
    emit,
    json_option,
    progress_option,
    settings,
    wants_json,
)

_KB = click.option(
    "--kb",
    "kb_name",
    default="default",
    show_default=True,
    metavar="NAME",
    help="Knowledge base to answer from (see `llamachain kb list`).",
)
_MODEL = click.option("--model", "-m", metavar="PATH_OR_NAME", help="GGUF file or known model.")
_K = click.option("-k", "k", type=click.IntRange(min=1), help="Chunks to retrieve (default: 4).")


def qa_options(f: Any) -> Any:
    for option in reversed(
        [
            _KB,
            _MODEL,
            _K,
            click.option(
                "--max-sources", type=click.IntRange(min=1), help="Chunks packed at most."
            ),
            click.option(
                "--max-tokens", type=click.IntRange(min=1), help="The answer's max tokens."
            ),
            click.option("--quote/--no-quote", default=None, help="Quote the supporting passage."),
            click.option(
                "--min-coverage",
                type=click.FloatRange(0, 1),
                help="Abstain below this share of the question's words in the sources.",
            ),
            click.option(
                "--structured", is_flag=True, help="JSON {answer, citations} from the model."
            ),
            click.option(
                "--prompt-lookup",
                type=click.IntRange(min=0),
                help="Prompt-lookup draft tokens (0: off).",
            ),
        ]
    ):
        f = option(f)
    return f


def make_chain(
    ctx: click.Context, kb_name: str, model: str | None, memory: Any = None, **options: Any
) -> Any:
    from llamachain.chat_models import ChatLlama
    from llamachain.qa import GroundedQA

    s = settings(ctx)
    # flash attention keeps prompt-lookup answers identical to plain decoding
    lookup = bool(options.get("prompt_lookup"))
    llm = ChatLlama(model_path=model, settings=s, temperature=0.0, seed=0, flash_attn=lookup)
    renamed = {
        "k": options.get("k"),
        "max_sources": options.get("max_sources"),
        "answer_tokens": options.get("max_tokens"),
        "quote": options.get("quote"),
        "min_coverage": options.get("min_coverage"),
        "structured": options.get("structured") or None,
        "prompt_lookup": options.get("prompt_lookup"),
    }
    return GroundedQA.from_knowledge_base(kb_name, llm=llm, settings=s, memory=memory, **renamed)


def print_result(result: Any, streamed: str) -> None:
    """After the streamed reply: what became of it, the quote and the sources."""
    if streamed and not streamed.endswith("\n"):
        click.echo()
    if result.abstained:
        if streamed:
            click.echo("(not answered from the documents)", err=True)
        click.echo(result.answer)
        return
    if streamed and not result.reply_shown:
        click.echo("(that reply is not supported by the sources; what they say:)", err=True)
    if not streamed and result.reply_shown and not result.quote:
        click.echo(result.answer)
    if result.quote:
        if not streamed or not result.reply_shown:
            click.echo(result.answer)
        else:
            n = result.citations[0].n if result.citations else "?"
            click.echo(f"\n“{result.quote}” [{n}]")
    if result.citations:
        click.echo("\nSources:")
        for c in result.citations:
            click.echo(f"  [{c.n}] {c.label}")
            click.echo(f"      {c.source}")


@click.command("ask", short_help="Answer a question from a knowledge base, citing sources.")
@click.argument("question")
@qa_options
@json_option
@click.pass_context
def ask(ctx: click.Context, question: str, kb_name: str, model: str | None, **options: Any) -> None:
    """Answer QUESTION from the knowledge base with the local model: the reply streams, then
    the supporting passage and the sources are printed.  It says so when the documents do not
    answer it.  "-" reads the question from stdin."""
    if question == "-":
        question = sys.stdin.read().strip()
    chain = make_chain(ctx, kb_name, model, **options)
    if wants_json(ctx):
        result = chain.invoke(question)
        click.echo(dump_json(result.to_dict()))
        return
    streamed: list[str] = []
    result = None
    for chunk in chain.stream(question):
        if chunk.text:
            streamed.append(chunk.text)
            click.echo(chunk.text, nl=False)
            sys.stdout.flush()
        if chunk.result is not None:
            result = chunk.result
    assert result is not None
    print_result(result, "".join(streamed))


@click.command("eval", short_help="Evaluate answers on a question file (JSON lines).")
@click.argument("questions", type=click.Path(dir_okay=False), metavar="QA.jsonl")
@qa_options
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N questions.")
@progress_option
@json_option
@click.pass_context
def eval_cmd(
    ctx: click.Context,
    questions: str,
    kb_name: str,
    model: str | None,
    limit: int | None,
    progress: bool,
    **options: Any,
) -> None:
    """Ask every question of QA.jsonl ({"id", "question", "answers", "source"} per line;
    empty answers = unanswerable) and report retrieval hit@1/hit@k, answer accuracy, citation
    precision, abstention and latency."""
    from llamachain.qa.evaluate import evaluate, load_questions

    items = load_questions(questions)
    if limit:
        items = items[:limit]
    chain = make_chain(ctx, kb_name, model, **options)
    bar = None
    callback = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), unit="q", desc="evaluating", file=sys.stderr)
        correct = [0, 0]

        def callback(i: int, n: int, row: Any) -> None:
            if row.answerable:
                correct[0] += bool(row.correct)
                correct[1] += 1
            bar.set_postfix(accuracy=f"{correct[0]}/{correct[1]}", refresh=False)
            bar.update(1)

    try:
        report = evaluate(chain, items, progress=callback)
    finally:
        if bar is not None:
            bar.close()
    report.meta.update({"questions_file": questions, "kb": kb_name})
    emit(ctx, report.to_dict(), lambda: click.echo(report.table()))
