"""``llamachain chat``: an interactive conversation, with or without a knowledge base."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from llamachain.cli._common import settings
from llamachain.cli.lora_cmd import lora_option
from llamachain.cli.qa_cmd import make_chain, print_result

HELP = "commands: /reset (forget the conversation), /exit (or Ctrl-D)"


def _read(prompt: str) -> str | None:
    click.echo(prompt, nl=False, err=True)
    sys.stderr.flush()
    line = sys.stdin.readline()
    if not line:
        return None
    return line.rstrip("\n")


def _stream(pieces: Any) -> tuple[str, Any]:
    """Echo text pieces as they come; Ctrl-C stops the reply (and the model) at once."""
    parts: list[str] = []
    last = None
    try:
        for piece in pieces:
            text = piece.text if hasattr(piece, "text") else str(piece.content)
            if text:
                parts.append(text)
                click.echo(text, nl=False)
                sys.stdout.flush()
            last = piece
    except KeyboardInterrupt:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()
        click.echo("\n(stopped)", err=True)
        return "".join(parts), None
    return "".join(parts), last


@click.command("chat", short_help="Chat with the model, optionally over a knowledge base.")
@click.option("--kb", "kb_name", metavar="NAME", help="Answer from this knowledge base.")
@click.option("--model", "-m", metavar="PATH_OR_NAME", help="GGUF file or known model name.")
@click.option(
    "--chat-format",
    metavar="NAME",
    help="Prompt format for models without a chat template (alpaca, vicuna, chatml, "
    "llama-2, llama-3, gemma); default: the model's own template, else alpaca.",
)
@click.option("--system", metavar="TEXT", help="System prompt (without --kb).")
@click.option("--max-tokens", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--temperature", "-t", type=click.FloatRange(min=0), default=0.7, show_default=True)
@click.option("--seed", type=int, help="Random seed.")
@lora_option
@click.pass_context
def chat(
    ctx: click.Context,
    kb_name: str | None,
    model: str | None,
    chat_format: str | None,
    system: str | None,
    max_tokens: int,
    temperature: float,
    seed: int | None,
    lora: list[tuple[str, float]],
) -> None:
    """Talk to the model line by line; the conversation is remembered (the oldest turns are
    dropped when the context fills up).  With --kb every question is answered from the
    knowledge base, follow-up questions included, with sources."""
    if kb_name:
        if lora:
            raise click.UsageError("--lora applies to chat without --kb only")
        _kb_chat(ctx, kb_name, model)
        return
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    from llamachain.chat_models import ChatLlama

    llm = ChatLlama(
        model_path=model,
        chat_format=chat_format,
        settings=settings(ctx),
        max_tokens=max_tokens,
        temperature=temperature,
        seed=seed,
        overflow="truncate",
        lora=lora,
    )
    history: list[Any] = [SystemMessage(content=system)] if system else []
    click.echo(f"chatting with {llm.model_name}; {HELP}", err=True)

    def forget() -> None:
        del history[1 if system else 0 :]

    for line in _questions(forget):
        history.append(HumanMessage(content=line))
        text, _ = _stream(llm.stream(history))
        click.echo()
        history.append(AIMessage(content=text))


def _questions(forget: Callable[[], None]) -> Iterator[str]:
    """The user's lines until end of input or /exit; /reset calls ``forget``."""
    while True:
        try:
            line = _read("you> ")
        except KeyboardInterrupt:
            line = None
        if line is None:
            click.echo(err=True)
            return
        command = line.strip()
        if not command:
            continue
        if command in ("/exit", "/quit"):
            return
        if command == "/reset":
            forget()
            click.echo("(forgotten)", err=True)
        elif command.startswith("/"):
            click.echo(HELP, err=True)
        else:
            yield line


def _kb_chat(ctx: click.Context, kb_name: str, model: str | None) -> None:
    from llamachain.qa import ConversationMemory

    memory = ConversationMemory()
    chain = make_chain(ctx, kb_name, model, memory=memory)
    click.echo(f"asking knowledge base {kb_name!r}; {HELP}", err=True)
    for line in _questions(memory.clear):
        streamed, last = _stream(chain.stream(line))
        if last is not None and last.result is not None:
            if last.result.standalone_question:
                click.echo(f"(searched for: {last.result.standalone_question})", err=True)
            print_result(last.result, streamed)
        click.echo()
