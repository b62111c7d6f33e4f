#!/usr/bin/env bash
# Install everything the tests need into .venv (Python) and .cache/inspector (Node 22 + MCP Inspector)
# and .cache/conformance (the official MCP conformance suite),
# then run the whole suite. Extra arguments go to pytest. Idempotent: a second run reinstalls nothing new.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
MCP_INSPECTOR="$(bash scripts/install-inspector.sh)"
export MCP_INSPECTOR
MCP_SERVER_EVERYTHING="$(bash scripts/install-everything.sh)"
export MCP_SERVER_EVERYTHING
MCP_CONFORMANCE="$(bash scripts/install-conformance.sh)"
export MCP_CONFORMANCE
exec .venv/bin/python -m pytest "$@"
