"""MCP prompts: every knowledge pattern becomes a prompt (arrives with the pattern library)."""

from __future__ import annotations

from mcp.server import MCPServer


def register(mcp: MCPServer) -> None:
    """Register every prompt on ``mcp`` (none yet in this release)."""
