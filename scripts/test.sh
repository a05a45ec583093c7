#!/usr/bin/env bash
# Run the whole test suite (unit + integration on the real bundled model).
# Sets everything up first if needed; extra arguments go to pytest (e.g. -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest "$@"
