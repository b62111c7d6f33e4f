"""The MCP tools: thin functions that validate, call one core service and map core errors to ``ToolError``."""

from __future__ import annotations

from mcp.server import MCPServer

from tools import monitor, orchestrate


def register(mcp: MCPServer) -> None:
    """Register every tool on ``mcp``."""
    orchestrate.register(mcp)
    monitor.register(mcp)
