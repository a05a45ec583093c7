"""Shared CLI plumbing: the context object, ``--json``, and output helpers."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from llamachain.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class CliState:
    """What the group callback hands to every command through ``ctx.obj``."""

    settings: Settings | None = None
    json: bool = False


def state(ctx: click.Context) -> CliState:
    return ctx.ensure_object(CliState)


def settings(ctx: click.Context) -> Settings:
    st = state(ctx)
    if st.settings is None:  # a command invoked without the group (tests, embedding)
        from llamachain.cli.main import load_settings

        st.settings = load_settings()
    return st.settings


def _set_json(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        state(ctx).json = True


def json_option(f: F) -> F:
    """``--json``: print exactly one JSON document on stdout instead of the human view."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_set_json,
        help="Print one JSON document on stdout instead of the human view.",
    )(f)


def progress_option(f: F) -> F:
    """``--progress/--no-progress`` as a bool: by default, whether stderr is a terminal."""
    return click.option(
        "--progress/--no-progress",
        default=None,
        callback=lambda _ctx, _param, value: sys.stderr.isatty() if value is None else value,
        help="Show a progress bar on stderr (default: when stderr is a terminal).",
    )(f)


def wants_json(ctx: click.Context) -> bool:
    return state(ctx).json


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, default=str)


def emit(ctx: click.Context, data: Any, human: Callable[[], None]) -> None:
    """Print ``data`` as JSON with ``--json``, otherwise call ``human``."""
    if wants_json(ctx):
        click.echo(dump_json(data))
    else:
        human()


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover - unreachable


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)])
