"""A real ``llamachain serve`` process for tests, on a free 127.0.0.1 port with its own home.

Use it from a test module with ``pytest_plugins = ["llamachain_server"]`` and a
``llamachain_server`` argument (one server for the whole session, token ``TOKEN``), or call
:func:`start_llamachain_server` for a server of your own (other settings, to stop or restart it).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

LLAMACHAIN = Path(sys.executable).parent / "llamachain"
HOST = "127.0.0.1"
TOKEN = "test-token-5f0c1d"


@dataclass
class LlamachainServer:
    host: str
    port: int
    home: Path
    log: Path
    process: subprocess.Popen[bytes]
    token: str | None = None
    kb: str = "default"
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def client(self, **kwargs: object) -> httpx.Client:
        """An httpx client for this server, with its token."""
        kwargs.setdefault("timeout", 120.0)
        return httpx.Client(base_url=self.url, headers=self.headers, **kwargs)  # type: ignore[arg-type]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start_llamachain_server(
    home: Path,
    *,
    token: str | None = TOKEN,
    kb: str = "default",
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> LlamachainServer:
    """Start ``llamachain serve`` with ``LLAMACHAIN_HOME=home`` and wait for ``/healthz``."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = home / f"server-{port}.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMACHAIN_")}
    full_env.update({"LLAMACHAIN_HOME": str(home), "HF_HUB_OFFLINE": "1"})
    if token:
        full_env["LLAMACHAIN_SERVER_TOKEN"] = token
    full_env.update(env or {})
    command = [str(LLAMACHAIN), "serve", "--host", HOST, "--port", str(port), "--kb", kb]
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [*command, "--log-level", "warning", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
        )
    server = LlamachainServer(HOST, port, home, log, process, token, kb, dict(env or {}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"llamachain serve exited ({process.returncode}):\n{server.log_text()}"
            )
        try:
            if httpx.get(server.url + "/healthz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(
        f"llamachain serve did not answer within {timeout:.0f} s:\n{server.log_text()}"
    )


@pytest.fixture(scope="session")
def llamachain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamachainServer]:
    """One server for the session (token ``TOKEN``, knowledge base ``default``)."""
    server = start_llamachain_server(tmp_path_factory.mktemp("llamachain-server-home"))
    try:
        yield server
    finally:
        server.stop()
