"""schemathesis against a real ``llamachain serve`` process, from the server's own /openapi.json.

Every operation of the spec (plugin routes, /ask, the OpenAI-compatible routes, health) gets
schemathesis' examples, coverage (boundary and invalid values of every field), fuzzing and
stateful phases with the bearer token, checked for no 5xx on any input and for responses that
match the documented schemas.  The generating routes are bounded: the server caps
``max_tokens`` at 16 (``LLAMACHAIN_SERVER_MAX_TOKENS``) and they get fewer examples.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from llamachain_server import LlamachainServer, start_llamachain_server

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
GENERATING = r"^/(ask|v1/chat/completions)$"
CHECKS = "not_a_server_error,response_schema_conformance"
CORPUS = [
    {"id": "vpn", "text": "The office VPN only accepts connections on port 443."},
    {"id": "lunch", "text": "The canteen serves lunch from noon until two o'clock."},
    {"id": "printer", "text": "The third-floor printer jams on glossy paper."},
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamachainServer]:
    env = {
        "LLAMACHAIN_SERVER_MAX_TOKENS": "16",
        "LLAMACHAIN_N_THREADS": "1",
        "LLAMACHAIN_N_CTX": "1024",
        "LLAMACHAIN_QA_ANSWER_TOKENS": "16",
    }
    s = start_llamachain_server(tmp_path_factory.mktemp("schemathesis-home"), env=env)
    try:
        with s.client() as c:  # something for /query and /ask to find
            assert c.post("/upsert", json={"documents": CORPUS}).status_code == 200
        yield s
    finally:
        s.stop()


def _schemathesis(
    server: LlamachainServer, tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    command = [
        str(SCHEMATHESIS),
        "run",
        f"{server.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {server.token}",
        "--checks",
        CHECKS,
        "--seed",
        "20261202",
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--request-timeout",
        "120",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)


def _verdict(server: LlamachainServer, done: subprocess.CompletedProcess[str]) -> str:
    """What to show when a run fails: schemathesis' report and the server's tracebacks."""
    log = server.log_text()
    tracebacks = re.findall(r"(?ms)^ERROR.*?(?=^\S|\Z)|Traceback.*?(?=^\S|\Z)", log)
    return (
        f"schemathesis exited {done.returncode}\n{done.stdout[-20000:]}\n{done.stderr[-3000:]}"
        f"\n--- server log tracebacks ---\n" + "\n".join(tracebacks[-5:])
    )


def _tested(done: subprocess.CompletedProcess[str]) -> int:
    match = re.search(r"Tested:\s+(\d+)", done.stdout)
    return int(match.group(1)) if match else 0


def test_no_server_errors_and_documented_responses(
    server: LlamachainServer, tmp_path: Path
) -> None:
    """Every non-generating operation, 40 examples each plus the coverage phase's cases."""
    done = _schemathesis(
        server, tmp_path, "--max-examples", "40", "--exclude-path-regex", GENERATING
    )
    assert done.returncode == 0, _verdict(server, done)
    assert _tested(done) >= 8, done.stdout  # the plugin routes, embeddings, models, health
    assert "Traceback" not in server.log_text()


@pytest.mark.parametrize(
    ("mode", "examples"),
    [("all", "12"), ("positive", "30")],
    ids=["valid-and-invalid", "valid-only"],
)
def test_generating_routes_never_fail_either(
    server: LlamachainServer, tmp_path: Path, mode: str, examples: str
) -> None:
    """/ask and /v1/chat/completions, fewer examples: each valid one runs the model (at most 16
    tokens).  The valid-only run makes sure odd but valid sampling options reach the model."""
    done = _schemathesis(
        server,
        tmp_path,
        "--max-examples",
        examples,
        "--mode",
        mode,
        "--include-path-regex",
        GENERATING,
        "--phases",
        "examples,coverage,fuzzing",
    )
    if _tested(done) == 0 and "No operations" in done.stdout + done.stderr:
        pytest.skip("the server has no /ask or /v1/chat/completions yet")
    assert done.returncode == 0, _verdict(server, done)
    assert _tested(done) == 2, done.stdout
    assert "Traceback" not in server.log_text()
