"""The child process of ``llamachain doctor``: the parts that may crash llama.cpp.

``python -m llamachain.diagnostics_child build`` reports how llama.cpp was built;
``python -m llamachain.diagnostics_child run QTYPE HOME`` makes the default model's QTYPE
variant (if needed), loads it and generates a few tokens at temperature 0.

Each line on stdout is ``<kind> <payload>``: ``phase <name>`` before each step (so a crash can
be placed), then ``result <json>`` or ``error <message>``.  A crash kills only this process;
:mod:`llamachain.diagnostics` reads the signal from the exit status.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from llamachain.errors import LlamaChainError

PROMPT = "The capital of France is"
MAX_TOKENS = 8
N_CTX = 512


def _say(kind: str, payload: str) -> None:
    sys.stdout.write(f"{kind} {payload}\n")
    sys.stdout.flush()


def _build() -> dict[str, object]:
    from importlib.metadata import version

    _say("phase", "import")
    from llamachain.engine._native import backends, build_features, system_info

    return {
        "llama_cpp_version": version("llama-cpp-python"),
        "system_info": system_info(),
        "features": build_features(),
        "backends": backends(),
    }


def _run(qtype: str, home: str) -> dict[str, object]:
    from llamachain.engine import LlamaEngine, SamplingParams
    from llamachain.models.quantize import quantized_variant
    from llamachain.settings import Settings

    _say("phase", "prepare")
    path = quantized_variant(qtype, Path(home))
    _say("phase", "load")
    engine = LlamaEngine(path, n_ctx=N_CTX, settings=Settings(home=Path(home)))
    engine.load()
    _say("phase", "generate")
    with engine:
        out = engine.complete(PROMPT, SamplingParams(temperature=0, max_tokens=MAX_TOKENS))
    return {
        "path": str(path),
        "text": out.text,
        "completion_tokens": out.usage.completion_tokens,
        "tokens_per_second": out.timings.get("decode_tokens_per_second"),
        "prompt_tokens_per_second": out.timings.get("prompt_tokens_per_second"),
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        if args[:1] == ["build"]:
            result = _build()
        elif len(args) == 3 and args[0] == "run":
            result = _run(args[1], args[2])
        else:
            _say("error", "usage: diagnostics_child build | run QTYPE HOME")
            return 2
    except LlamaChainError as e:
        _say("error", " ".join(str(e).split()))
        return 1
    _say("result", json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
