"""A real Chroma server for tests: ``chroma run`` from this virtualenv, on a free local port.

Use it from a test module with ``pytest_plugins = ["chroma_server"]`` and a ``chroma_server``
argument (one server for the whole session), or call :func:`start_chroma_server` for a server
of your own (to stop or restart it).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROMA = Path(sys.executable).parent / "chroma"
HOST = "127.0.0.1"


@dataclass
class ChromaServer:
    host: str
    port: int
    path: Path
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


def free_port() -> int:
    """A local TCP port that nothing listens on (right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _heartbeat(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/api/v2/heartbeat", timeout=2) as resp:
            body = json.loads(resp.read())
    except (OSError, urllib.error.URLError, ValueError):
        return False
    return isinstance(body, dict) and any("heartbeat" in key for key in body)


def start_chroma_server(path: Path, port: int | None = None, timeout: float = 60.0) -> ChromaServer:
    """Start ``chroma run --path path`` and wait until it answers its heartbeat."""
    path.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = path.parent / f"chroma-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHROMA_")}
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [str(CHROMA), "run", "--path", str(path), "--host", HOST, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    server = ChromaServer(HOST, port, path, log, process)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if _heartbeat(server.url):
            return server
        time.sleep(0.1)
    server.stop()
    tail = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"chroma run did not come up on {server.url}:\n{tail}")


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    """One Chroma server for the session (data in a temporary directory)."""
    server = start_chroma_server(tmp_path_factory.mktemp("chroma-server") / "data")
    try:
        yield server
    finally:
        server.stop()
