#!/usr/bin/env bash
# Install a pinned copy of the official MCP conformance suite into a local cache dir.
#
# Usage: scripts/install-conformance.sh [DIR]   (DIR default: <repo>/.cache/conformance)
#
# Afterwards DIR/bin/mcp-conformance runs the suite offline; the wrapper's path is printed on stdout:
#   DIR/bin/mcp-conformance server --url http://127.0.0.1:PORT/mcp --scenario dns-rebinding-protection
# See scripts/install-npm-pinned.sh.
set -euo pipefail

CONFORMANCE_VERSION="0.1.16"   # npm view @modelcontextprotocol/conformance version

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec bash "$repo_root/scripts/install-npm-pinned.sh" "${1:-$repo_root/.cache/conformance}" mcp-conformance \
  @modelcontextprotocol/conformance "$CONFORMANCE_VERSION" dist/index.js
