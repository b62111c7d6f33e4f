"""The MCP tools: thin functions that validate, call one core service and map core errors to ``ToolError``."""

from __future__ import annotations

from mcp.server.mcpserver.tools import Tool

from tools import consensus, monitor, orchestrate, patterns, providers, workflows


SIMPLE_MODE_TOOLS: frozenset[str] = frozenset({
    "orchestrate", "consensus", "register_pattern", "search_patterns", "monitor_operations", "list_providers",
    "acknowledge_incident", "run_workflow", "workflow_run", "save_workflow",
    # Simple mode runs workflows on the in-memory runtime (the CLI passes no DBOS runtime when simple).
})
"""The tools ``--simple`` offers: this set is the one place that decides. A tool of :func:`all_tools` left out
of it answers "needs full mode" in simple mode (see :func:`server.simple.build_simple_server`)."""


def all_tools() -> list[Tool]:
    """Every tool the server offers, built fresh (each server gets its own instances)."""
    return [orchestrate.tool(), consensus.tool(), monitor.tool(), providers.tool(), patterns.register_tool(),
            patterns.search_tool(), monitor.acknowledge_tool(), workflows.run_tool(), workflows.run_action_tool(),
            workflows.save_tool()]
