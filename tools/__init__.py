"""The MCP tools: thin functions that validate, call one core service and map core errors to ``ToolError``."""

from __future__ import annotations

from mcp.server.mcpserver.tools import Tool

from tools import consensus, monitor, orchestrate, patterns, providers


SIMPLE_MODE_TOOLS: frozenset[str] = frozenset({
    "orchestrate", "consensus", "register_pattern", "search_patterns", "monitor_operations", "list_providers",
    # TODO(issue 6 merge): add "run_workflow" (and "workflow_run" / "save_workflow" if they should be offered):
    # simple mode runs workflows on the in-memory runtime (Dependencies.simple tells the tool which runtime).
})
"""The tools ``--simple`` offers: this set is the one place that decides. A tool of :func:`all_tools` left out
of it answers "needs full mode" in simple mode (see :func:`server.simple.build_simple_server`)."""


def all_tools() -> list[Tool]:
    """Every tool the server offers, built fresh (each server gets its own instances)."""
    return [orchestrate.tool(), consensus.tool(), monitor.tool(), providers.tool(), patterns.register_tool(),
            patterns.search_tool()]
