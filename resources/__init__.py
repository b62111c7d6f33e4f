"""MCP resources. The pattern library, workflow definitions and operations summaries join as they land."""

from __future__ import annotations

from mcp.server import MCPServer


def register(mcp: MCPServer) -> None:
    """Register every resource on ``mcp`` (none yet in this release)."""
