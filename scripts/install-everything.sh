#!/usr/bin/env bash
# Install a pinned @modelcontextprotocol/server-everything (the reference MCP test server) into a local cache
# dir, for the workflow tests' `tool` steps against a real third-party MCP server.
#
# Usage: scripts/install-everything.sh [DIR]      (DIR default: <repo>/.cache/everything)
#
# Afterwards DIR/bin/mcp-server-everything runs the server over stdio offline; the wrapper's path is printed
# on stdout. See scripts/install-npm-pinned.sh.
set -euo pipefail

EVERYTHING_VERSION="2026.8.31"   # npm view @modelcontextprotocol/server-everything version

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec bash "$repo_root/scripts/install-npm-pinned.sh" "${1:-$repo_root/.cache/everything}" mcp-server-everything \
  @modelcontextprotocol/server-everything "$EVERYTHING_VERSION" dist/index.js --ignore-scripts
