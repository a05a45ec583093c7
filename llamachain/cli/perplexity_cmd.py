"""``llamachain perplexity MODEL TEXTFILE``: how well a model predicts a text."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from llamachain.cli._common import emit, json_option, progress_option, settings

if TYPE_CHECKING:
    from llamachain.models.perplexity import Progress


@contextmanager
def _bar(show: bool) -> Iterator[Progress | None]:
    """A tqdm bar on stderr fed by perplexity's (done, total) callback; None when hidden."""
    if not show:
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=0, unit="tok", desc="scoring", file=sys.stderr)

    def update(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        bar.close()


@click.command("perplexity", short_help="Perplexity of a model on a text file.")
@click.argument("model", metavar="MODEL")
@click.argument("textfile", metavar="TEXTFILE", type=click.Path(path_type=Path))
@click.option(
    "--ctx",
    "n_ctx",
    type=click.IntRange(min=2),
    default=512,
    show_default=True,
    help="Tokens per window.",
)
@click.option(
    "--stride",
    type=click.IntRange(min=1),
    help="Tokens between window starts (default: half of --ctx).",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    help="Tokens per llama.cpp decode call (default: a whole window).",
)
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads (default: all cores).")
@progress_option
@json_option
@click.pass_context
def perplexity_cmd(
    ctx: click.Context,
    model: str,
    textfile: Path,
    n_ctx: int,
    stride: int | None,
    batch: int | None,
    threads: int | None,
    progress: bool,
) -> None:
    """Perplexity of MODEL (a .gguf path or a known model name) on TEXTFILE (UTF-8).

    Every token of the text is scored once from llama.cpp's logits, in windows of --ctx
    tokens that start every --stride tokens; lower is better.
    """
    from llamachain.models.perplexity import perplexity, read_text

    s = settings(ctx)
    text = read_text(textfile)  # file errors before the model is loaded
    with _bar(progress) as update:
        result = perplexity(
            model,
            text,
            n_ctx=n_ctx,
            stride=stride,
            batch=batch,
            n_threads=threads or s.n_threads,
            progress=update,
            home=s.home,
        )
    data = {**result.to_dict(), "text_path": str(textfile)}

    def human() -> None:
        click.echo(
            f"perplexity {result.ppl:.4f} +/- {result.ppl_stderr:.4f}  "
            f"(mean NLL {result.nll:.5f} +/- {result.nll_stderr:.5f} nats/token)"
        )
        click.echo(
            f"{result.tokens_scored:,} of {result.text_tokens:,} tokens scored in "
            f"{result.windows} windows (n_ctx {result.n_ctx}, stride {result.stride}); "
            f"{result.seconds:.1f} s, {result.tokens_per_second:.0f} tokens/s"
        )
        click.echo(f"model: {result.model_path} ({result.file_type})")

    emit(ctx, data, human)
