#!/usr/bin/env bash
# Install everything the tests need into .venv (Python) and .cache/inspector (Node 22 + MCP Inspector)
# and .cache/conformance (the official MCP conformance suite), and Debian's Chromium, PostgreSQL and nginx (as root),
# then run the whole suite (the unit lane, then the integration lane). Extra arguments go to pytest. Idempotent: a second run reinstalls nothing new.
# `--fast`: only the unit lane (tests/unit: in-process, no sockets, no subprocesses), after installing the Python
# packages alone.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
if [[ "${1:-}" == "--fast" ]]; then
    shift
    exec .venv/bin/python -m pytest tests/unit "$@"
fi
bash scripts/install-services.sh  # PostgreSQL and nginx (Debian's packages) for tests/integration/team
MCP_INSPECTOR="$(bash scripts/install-inspector.sh)"
export MCP_INSPECTOR
MCP_SERVER_EVERYTHING="$(bash scripts/install-everything.sh)"
export MCP_SERVER_EVERYTHING
MCP_CONFORMANCE="$(bash scripts/install-conformance.sh)"
export MCP_CONFORMANCE
MCP_CONFORMANCE_NEXT="$(bash scripts/install-conformance.sh "" next)"  # 0.2.0-alpha.12: tasks, stateless, logging
export MCP_CONFORMANCE_NEXT
bash scripts/install-chromium.sh  # Debian's chromium + chromium-driver, for the dashboard's browser tests
LLAMA="$(bash scripts/install-llama.sh)"  # llama.cpp's server + SmolLM2's GGUF (issue 21); ~10 min the first time
LLAMA_PYTHON="${LLAMA%% *}" LLAMA_GGUF="${LLAMA#* }"
export LLAMA_PYTHON LLAMA_GGUF
# The lanes run as two processes: the integration lane leaves background threads behind (a session-wide DBOS, the
# store's writer threads) that the unit lane's property tests must not share a process with.
for arg in "$@"; do  # tests named explicitly: one run of exactly those
    if [[ -e "${arg%%::*}" ]]; then exec .venv/bin/python -m pytest "$@"; fi
done
status=0
.venv/bin/python -m pytest tests/unit "$@" || status=$?
.venv/bin/python -m pytest tests/integration "$@" || status=$?
exit "$status"
