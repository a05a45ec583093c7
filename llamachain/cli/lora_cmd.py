"""``llamachain lora``: convert PEFT LoRA adapters to GGUF and inspect GGUF adapters; and the
``--lora PATH[:SCALE]`` option that ``generate`` and ``chat`` share."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from llamachain.cli._common import emit, human_size, json_option, progress_option, settings

F = TypeVar("F", bound=Callable[..., Any])


def parse_lora(value: str) -> tuple[str, float]:
    """``adapter.gguf`` -> (path, 1.0); ``adapter.gguf:0.5`` -> (path, 0.5)."""
    path, sep, scale = value.rpartition(":")
    if sep and path:
        try:
            number = float(scale)
        except ValueError:
            return value, 1.0  # a ':' that is part of the path
        if not math.isfinite(number):
            raise click.BadParameter(f"the scale in {value!r} must be a finite number")
        return path, number
    return value, 1.0


def _lora_callback(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> list[tuple[str, float]]:
    return [parse_lora(v) for v in values]


def lora_option(f: F) -> F:
    """``--lora PATH[:SCALE]``, repeatable: GGUF LoRA adapters applied with their scales."""
    return click.option(
        "--lora",
        "lora",
        metavar="PATH[:SCALE]",
        multiple=True,
        callback=_lora_callback,
        help="Apply a GGUF LoRA adapter (scale 1.0 unless :SCALE is given); repeatable.",
    )(f)


@click.group("lora", short_help="Convert and inspect LoRA adapters.")
def lora() -> None:
    """LoRA adapters: convert a PEFT adapter to GGUF, show what a GGUF adapter holds.

    Apply adapters with `llamachain generate --lora ADAPTER.gguf[:SCALE]` (or `chat`)."""


@lora.command("convert")
@click.argument("peft_dir", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option(
    "--base",
    metavar="MODEL",
    help="The GGUF model the adapter was trained for (path or known name); default: "
    "base_model_name_or_path from adapter_config.json, if that is a local GGUF file.",
)
@click.option(
    "--outtype",
    type=click.Choice(["f32", "f16"]),
    default="f32",
    show_default=True,
    help="Type of the written LoRA matrices.",
)
@progress_option
@json_option
@click.pass_context
def convert_cmd(
    ctx: click.Context,
    peft_dir: Path,
    out: Path,
    base: str | None,
    outtype: str,
    progress: bool,
) -> None:
    """Convert the PEFT LoRA adapter in PEFT_DIR (adapter_config.json +
    adapter_model.safetensors or .bin) to the GGUF LoRA adapter OUT."""
    from llamachain.models.lora import convert_peft_lora

    bar: Any = None
    callback = None
    if progress:
        from tqdm import tqdm

        def callback(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                bar = tqdm(total=total, unit="tensor", desc="converting", leave=False)
            bar.update(done - bar.n)

    try:
        result = convert_peft_lora(
            peft_dir, out, base=base, outtype=outtype, home=settings(ctx).home, progress=callback
        )
    finally:
        if bar is not None:
            bar.close()
    emit(
        ctx,
        result.to_dict(),
        lambda: click.echo(
            f"wrote {result.dst}: {result.tensors} adapted weights, rank "
            f"{'/'.join(map(str, result.ranks))}, alpha {result.alpha:g}, {result.outtype} "
            f"({result.architecture}, for {result.base})"
        ),
    )


@lora.command("info")
@click.argument("adapter", type=click.Path(path_type=Path))
@json_option
@click.pass_context
def info_cmd(ctx: click.Context, adapter: Path) -> None:
    """Show what the GGUF LoRA adapter ADAPTER holds (validated)."""
    from llamachain.models.lora import read_lora_info

    info = read_lora_info(adapter)

    def human() -> None:
        click.echo(f"{info.path}  ({human_size(info.file_size)})")
        click.echo(f"architecture  {info.architecture}")
        click.echo(f"alpha         {info.alpha:g}")
        click.echo(f"ranks         {', '.join(map(str, info.ranks))}")
        click.echo(f"types         {', '.join(f'{k} x{v}' for k, v in info.tensor_types.items())}")
        click.echo(f"weights       {len(info.tensors)}")
        for name, (a, b) in info.tensors.items():
            click.echo(f"  {name}  A {a[0]}x{a[1]}  B {b[0]}x{b[1]}")

    emit(ctx, info.to_dict(), human)
