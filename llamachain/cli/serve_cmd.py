"""``llamachain serve``: the HTTP server (retrieval plugin, /ask, OpenAI-compatible endpoints)."""

from __future__ import annotations

import errno
import socket

import click

from llamachain.cli._common import settings
from llamachain.errors import ConfigError, LlamaChainError


def _check_port_free(host: str, port: int) -> None:
    """A clear error now rather than uvicorn's log line and exit after loading everything."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ConfigError(f"cannot bind to {host!r}: {e.strerror}; pass --host ADDRESS") from None
    with socket.socket(infos[0][0], socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(infos[0][4])
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise LlamaChainError(
                    f"port {port} on {host} is already in use; pick another with --port"
                ) from None
            raise LlamaChainError(f"cannot listen on {host}:{port}: {e.strerror}") from None


@click.command("serve")
@click.option("--host", metavar="ADDRESS", help="Address to bind (default: 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default: 8080).")
@click.option(
    "--kb",
    "kb_name",
    metavar="NAME",
    help="Knowledge base to serve (default: 'default'; created if missing).",
)
@click.option("--model", "-m", metavar="PATH_OR_NAME", help="GGUF file or known model.")
@click.option(
    "--token",
    envvar="LLAMACHAIN_SERVER_TOKEN",
    show_envvar=True,
    metavar="TOKEN",
    help="Bearer token clients must send (prefer the environment variable: a command-line "
    "argument is visible to other users).",
)
@click.option(
    "--allow-no-token",
    is_flag=True,
    help="Serve a non-loopback address without a token (only on a trusted network).",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
)
@click.pass_context
def serve(
    ctx: click.Context,
    host: str | None,
    port: int | None,
    kb_name: str | None,
    model: str | None,
    token: str | None,
    allow_no_token: bool,
    log_level: str,
) -> None:
    """Serve a knowledge base over HTTP.

    The retrieval-plugin API (POST /upsert, /upsert-file, /query, DELETE /delete), grounded
    answers with citations (POST /ask, streamed with "stream": true), OpenAI-compatible
    /v1/chat/completions, /v1/embeddings and /v1/models, and GET /healthz.  Every endpoint but
    /healthz needs "Authorization: Bearer TOKEN" when a token is set.
    """
    try:
        import fastapi  # noqa: F401
        import multipart  # noqa: F401
        import uvicorn
    except ImportError as e:
        raise ConfigError(
            f"the server needs FastAPI, uvicorn and python-multipart ({e.name} is missing): "
            "pip install 'llamachain[server]'"
        ) from None
    from pydantic import SecretStr

    from llamachain.server import check_bind, create_app

    updates: dict[str, object] = {}
    if host:
        updates["server_host"] = host
    if port:
        updates["server_port"] = port
    if kb_name:
        updates["server_kb"] = kb_name
    if model:
        updates["model"] = model
    if token:
        updates["server_token"] = SecretStr(token)
    s = settings(ctx).model_copy(update=updates)
    check_bind(s.server_host, s, allow_no_token=allow_no_token)
    _check_port_free(s.server_host, s.server_port)
    app = create_app(s)
    shown = f"[{s.server_host}]" if ":" in s.server_host else s.server_host
    click.echo(
        f"llamachain: serving knowledge base {s.server_kb!r} on http://{shown}:{s.server_port} "
        f"({'bearer token required' if s.server_token else 'no token'}); Ctrl-C stops",
        err=True,
    )
    uvicorn.run(
        app,
        host=s.server_host,
        port=s.server_port,
        log_level=log_level,
        timeout_graceful_shutdown=10,
    )
