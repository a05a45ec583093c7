"""``llamachain convert`` (Hugging Face checkpoint -> GGUF) and ``llamachain export-hf``."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from llamachain.cli._common import emit, human_size, json_option, progress_option, settings

# Plain tuples of names: importing them loads neither gguf nor torch.
_OUTTYPES = ("f32", "f16", "q8_0")
_DTYPES = ("float32", "float16")


@contextlib.contextmanager
def _bar(enabled: bool, desc: str) -> Iterator[Callable[[int, int, str], None] | None]:
    """A per-tensor tqdm bar on stderr, as a progress callback (None when disabled)."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=0, unit="tensor", desc=desc, file=sys.stderr, dynamic_ncols=True)

    def update(done: int, total: int, name: str) -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix_str(name, refresh=False)
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()


@click.command("convert", short_help="Convert a Hugging Face LLaMA checkpoint to GGUF.")
@click.argument("src", metavar="CHECKPOINT_DIR", type=click.Path(path_type=Path))
@click.argument("dst", metavar="OUT.gguf", type=click.Path(path_type=Path))
@click.option(
    "--outtype",
    type=click.Choice(_OUTTYPES, case_sensitive=False),
    default="f16",
    show_default=True,
    help="Weight type: f32 (exact), f16 (2-D weights F16, norms F32) or q8_0.",
)
@click.option("--name", help="general.name to store (default: the directory's name).")
@click.option("--overwrite", is_flag=True, help="Replace OUT.gguf if it exists.")
@progress_option
@json_option
@click.pass_context
def convert_cmd(
    ctx: click.Context,
    src: Path,
    dst: Path,
    outtype: str,
    name: str | None,
    overwrite: bool,
    progress: bool,
) -> None:
    """Convert CHECKPOINT_DIR (config.json, safetensors or PyTorch weights, tokenizer files)
    of a LlamaForCausalLM-compatible model into the GGUF file OUT.gguf."""
    from llamachain.models.convert import convert

    with _bar(progress, "converting") as callback:
        result = convert(
            src, dst, outtype=outtype, name=name, overwrite=overwrite, progress=callback
        )

    def human() -> None:
        click.echo(
            f"wrote {result.dst} ({result.outtype.upper()}, {result.tensors} tensors, "
            f"{result.parameters:,} parameters, vocab {result.vocab_size} ({result.tokenizer})"
            f"{', chat template' if result.chat_template else ''}, "
            f"{human_size(result.dst_size)}) in {result.seconds:.1f} s"
        )

    emit(ctx, result.to_dict(), human)


@click.command("export-hf", short_help="Export a llama GGUF model as a Hugging Face checkpoint.")
@click.argument("model", metavar="MODEL")
@click.argument("dst", metavar="OUT_DIR", type=click.Path(path_type=Path))
@click.option(
    "--dtype",
    type=click.Choice(_DTYPES),
    default="float32",
    show_default=True,
    help="Type of the safetensors weights (every tensor is dequantized first).",
)
@click.option("--overwrite", is_flag=True, help="Replace OUT_DIR if it is not empty.")
@progress_option
@json_option
@click.pass_context
def export_hf_cmd(
    ctx: click.Context, model: str, dst: Path, dtype: str, overwrite: bool, progress: bool
) -> None:
    """Write MODEL (a GGUF path or a known model name) as a Hugging Face LlamaForCausalLM
    checkpoint directory OUT_DIR: config.json, safetensors, tokenizer files."""
    from llamachain.models.export_hf import export_hf
    from llamachain.models.registry import resolve_model_path

    path = resolve_model_path(model, settings(ctx).home)
    with _bar(progress, "exporting") as callback:
        result = export_hf(path, dst, dtype=dtype, overwrite=overwrite, progress=callback)

    def human() -> None:
        shards = f"{result.shards} shards" if result.shards > 1 else "1 file"
        click.echo(
            f"wrote {result.dst} ({result.dtype}, {result.tensors} tensors in {shards}, "
            f"{result.parameters:,} parameters, {human_size(result.size)}) "
            f"in {result.seconds:.1f} s"
        )

    emit(ctx, result.to_dict(), human)
