"""``llamachain doctor``: is this llama.cpp build safe on this CPU, and does every type run?"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from llamachain.cli._common import dump_json, json_option, settings, table, wants_json

if TYPE_CHECKING:
    from llamachain.diagnostics import BuildReport, VariantReport

# Relevant /proc/cpuinfo flags for the human view (the JSON view has them all).
# fmt: off
_SHOWN_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "bmi2", "avx_vnni", "avx512f", "avx512bw",
    "avx512vbmi", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16",
)
# fmt: on


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _print_build(b: BuildReport) -> None:
    on = [k for k, v in b.features.items() if v]
    flags = [f for f in _SHOWN_FLAGS if f in b.cpu_flags]
    click.echo("llama.cpp build")
    click.echo(f"  llama-cpp-python:  {b.llama_cpp_version or 'unknown'}")
    click.echo(f"  backends:          {', '.join(b.backends) or 'unknown'}")
    click.echo(f"  compiled features: {' '.join(on) or 'unknown'}")
    click.echo(f"  AMX compiled in:   {_yes(b.amx_compiled)}")
    click.echo(f"  CPU flags:         {' '.join(flags) or 'unknown'}")
    click.echo(f"  CPU has AMX:       {_yes(b.cpu_has_amx)}")
    if b.ok:
        click.echo("  check:             ok (no instruction the CPU lacks, no AMX)")
    for problem in b.problems:
        click.echo(f"  problem:           {problem}")


def _variant_row(v: VariantReport) -> list[str]:
    status = v.status + (f" ({v.signal})" if v.signal else "")
    tps = f"{v.tokens_per_second:.1f}" if v.tokens_per_second is not None else "-"
    note = repr(v.text.strip()) if v.ok and v.text is not None else (v.error or "")
    return [v.qtype, status, tps, f"{v.seconds:.1f}", note]


@click.command(short_help="Check the llama.cpp build and run every quantization type.")
@click.option(
    "--type",
    "types",
    multiple=True,
    metavar="TYPE",
    help="Check only this quantization (repeatable); default: F16 Q8_0 Q4_0 Q4_1 Q4_K_M.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=120.0,
    show_default=True,
    help="Seconds each child process may take.",
)
@json_option
@click.pass_context
def doctor(ctx: click.Context, types: tuple[str, ...], timeout: float) -> None:
    """Check the llama.cpp build against this CPU and run each quantization of the default
    model in a child process (exit code 1 if any of them crashes or fails)."""
    from llamachain.diagnostics import DEFAULT_VARIANTS, run_doctor

    as_json = wants_json(ctx)
    header = ["TYPE", "STATUS", "TOK/S", "SECONDS", "OUTPUT / ERROR"]

    def progress(v: VariantReport) -> None:
        if not as_json:
            click.echo(f"  {v.qtype:<7} {v.status}", err=True)

    if not as_json:
        click.echo("checking the build and running each variant in a child process ...", err=True)
    report = run_doctor(
        settings(ctx), types or DEFAULT_VARIANTS, timeout=timeout, on_variant=progress
    )
    if as_json:
        click.echo(dump_json(report.to_dict()))
    else:
        _print_build(report.build)
        click.echo("\nvariants of the default model (temperature 0, 8 tokens)")
        click.echo(table([_variant_row(v) for v in report.variants], header))
        for v in report.variants:
            if v.diagnosis:
                click.echo(f"\n{v.qtype}: {v.diagnosis}\n  fix: {v.fix}")
        click.echo("\n" + ("all good" if report.ok else "problems found (see above)"))
    if not report.ok:
        ctx.exit(1)
