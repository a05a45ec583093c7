"""``llamachain``: the command group, and the one place where errors become one clean line."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from llamachain import __version__
from llamachain.cli._common import dump_json, json_option, state
from llamachain.errors import ConfigError, LlamaChainError

if TYPE_CHECKING:
    from llamachain.settings import Settings


def load_settings() -> Settings:
    """``Settings()`` from the environment; a bad ``LLAMACHAIN_*`` value is a ConfigError."""
    from pydantic import ValidationError

    from llamachain.settings import Settings

    try:
        return Settings()
    except ValidationError as e:
        problems = "; ".join(
            f"LLAMACHAIN_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in e.errors()
        )
        raise ConfigError(f"invalid setting: {problems}") from e


def _json_requested(args: Sequence[str]) -> bool:
    for arg in args:
        if arg == "--":
            return False
        if arg == "--json":
            return True
    return False


def _fail(message: str, code: int, args: Sequence[str]) -> int:
    line = " ".join(str(message).split()) or "unknown error"
    if _json_requested(args):
        click.echo(dump_json({"error": line}))
    click.echo(f"error: {line}", err=True)
    return code


def _usage_message(e: click.UsageError) -> str:
    hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
    return e.format_message().rstrip(".") + hint


class LlamaGroup(click.Group):
    """A group whose ``main`` turns every expected error into ``error: <message>``."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        code: int
        try:
            rv = super().main(
                argv, prog_name or "llamachain", complete_var, standalone_mode=False, **extra
            )
            code = rv if isinstance(rv, int) else 0
        except click.exceptions.NoArgsIsHelpError as e:
            e.show()
            code = e.exit_code
        except click.UsageError as e:
            code = _fail(_usage_message(e), e.exit_code, argv)
        except click.ClickException as e:
            code = _fail(e.format_message(), e.exit_code, argv)
        except click.Abort:
            code = _fail("interrupted", 130, argv)
        except LlamaChainError as e:
            code = _fail(str(e), 1, argv)
        except BrokenPipeError:
            # The reader went away (`llamachain ... | head`): stop quietly.
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            except (OSError, ValueError):
                pass
            code = 1
        if standalone_mode:
            sys.exit(code)
        return code


@click.group("llamachain", cls=LlamaGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="llamachain")
@json_option
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Run local GGUF models on a CPU through llama.cpp.

    Settings come from LLAMACHAIN_* environment variables (for example LLAMACHAIN_HOME,
    LLAMACHAIN_MODEL, LLAMACHAIN_N_THREADS).  Every command accepts --json.
    """
    state(ctx).settings = load_settings()


def _register() -> None:
    from llamachain.cli.chat_cmd import chat
    from llamachain.cli.convert_cmd import convert_cmd, export_hf_cmd
    from llamachain.cli.doctor_cmd import doctor
    from llamachain.cli.generate_cmd import generate
    from llamachain.cli.kb_cmd import ingest, kb, search
    from llamachain.cli.lora_cmd import lora
    from llamachain.cli.models_cmd import models, quantize_cmd
    from llamachain.cli.perplexity_cmd import perplexity_cmd
    from llamachain.cli.qa_cmd import ask, eval_cmd
    from llamachain.cli.serve_cmd import serve

    for command in (
        ask,
        chat,
        convert_cmd,
        doctor,
        eval_cmd,
        export_hf_cmd,
        generate,
        ingest,
        kb,
        lora,
        models,
        perplexity_cmd,
        quantize_cmd,
        search,
        serve,
    ):
        cli.add_command(command)


_register()


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: ``llamachain = "llamachain.cli.main:main"``."""
    cli.main(args=argv, prog_name="llamachain")
