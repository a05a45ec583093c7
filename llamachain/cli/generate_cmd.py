"""``llamachain generate``: stream a completion (or a chat reply) to stdout."""

from __future__ import annotations

import sys

import click

from llamachain.cli._common import dump_json, json_option, settings, wants_json
from llamachain.cli.lora_cmd import lora_option
from llamachain.errors import ConfigError


@click.command()
@click.argument("prompt")
@click.option("--model", "-m", metavar="PATH_OR_NAME", help="GGUF file or known model name.")
@click.option(
    "--max-tokens",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Most tokens to generate.",
)
@click.option(
    "--temperature",
    "-t",
    type=click.FloatRange(min=0),
    default=0.8,
    show_default=True,
    help="Sampling temperature; 0 is greedy and deterministic.",
)
@click.option("--seed", type=int, help="Random seed, for reproducible sampling.")
@click.option(
    "--chat/--raw",
    default=True,
    show_default=True,
    help="Chat: the prompt is one user message in the model's chat template. "
    "Raw: the prompt is passed on as it is.",
)
@lora_option
@json_option
@click.pass_context
def generate(
    ctx: click.Context,
    prompt: str,
    model: str | None,
    max_tokens: int,
    temperature: float,
    seed: int | None,
    chat: bool,
    lora: list[tuple[str, float]],
) -> None:
    """Generate text from PROMPT ("-" reads the prompt from stdin)."""
    from llamachain.engine import Completion, LlamaEngine, SamplingParams

    if prompt == "-":
        prompt = sys.stdin.read()
    if not prompt.strip():
        raise ConfigError("the prompt is empty; pass some text, or - to read it from stdin")
    params = SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed)
    with LlamaEngine(model, lora=lora, settings=settings(ctx)) as engine:
        if chat:
            chunks = engine.chat_stream([{"role": "user", "content": prompt}], params)
        else:
            chunks = engine.stream(prompt, params)
        if wants_json(ctx):
            done = Completion.from_chunks(chunks)
            usage = done.usage
            click.echo(
                dump_json(
                    {
                        "text": done.text,
                        "finish_reason": done.finish_reason,
                        "usage": {
                            "prompt_tokens": usage.prompt_tokens,
                            "completion_tokens": usage.completion_tokens,
                            "total_tokens": usage.total_tokens,
                            "cached_tokens": usage.cached_tokens,
                        },
                        "model": str(engine.model_path),
                    }
                )
            )
            return
        for chunk in chunks:
            click.echo(chunk.text, nl=False)
            sys.stdout.flush()
        click.echo()
