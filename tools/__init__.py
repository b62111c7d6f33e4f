"""The MCP tools: thin functions that validate, call one core service and map core errors to ``ToolError``."""

from __future__ import annotations

from mcp.server.mcpserver.tools import Tool

from tools import consensus, monitor, orchestrate, patterns, providers, workflows


def all_tools() -> list[Tool]:
    """Every tool the server offers, built fresh (each server gets its own instances)."""
    return [orchestrate.tool(), consensus.tool(), monitor.tool(), providers.tool(), patterns.register_tool(),
            patterns.search_tool(), monitor.acknowledge_tool(), workflows.run_tool(), workflows.run_action_tool(),
            workflows.save_tool()]
