#!/usr/bin/env bash
# Install a pinned copy of the official MCP conformance suite into a local cache dir.
#
# Usage: scripts/install-conformance.sh [DIR] [stable|next]
#   stable (default): 0.1.16 into DIR (default <repo>/.cache/conformance): the protocol scenarios it has run since
#                     the server's first HTTP release (dns-rebinding-protection …)
#   next:             0.2.0-alpha.12 into DIR (default <repo>/.cache/conformance-next): the 2026-07-28 revision's
#                     scenarios (the tasks extension, server-stateless) and logging-set-level, run against the
#                     fixture server tests/conformance/server.py
#
# Afterwards DIR/bin/mcp-conformance runs the suite offline; the wrapper's path is printed on stdout:
#   DIR/bin/mcp-conformance server --url http://127.0.0.1:PORT/mcp --scenario dns-rebinding-protection
# See scripts/install-npm-pinned.sh.
set -euo pipefail

STABLE_VERSION="0.1.16"          # npm view @modelcontextprotocol/conformance version
NEXT_VERSION="0.2.0-alpha.12"    # npm view @modelcontextprotocol/conformance dist-tags

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
case "${2:-stable}" in
  stable) version="$STABLE_VERSION" default_dir="$repo_root/.cache/conformance" ;;
  next) version="$NEXT_VERSION" default_dir="$repo_root/.cache/conformance-next" ;;
  *) echo "usage: $0 [DIR] [stable|next]" >&2; exit 2 ;;
esac
dir="${1:-}"
exec bash "$repo_root/scripts/install-npm-pinned.sh" "${dir:-$default_dir}" mcp-conformance \
  @modelcontextprotocol/conformance "$version" dist/index.js
