"""The MCP tools: thin functions that validate, call one core service and map core errors to ``ToolError``."""

from __future__ import annotations

import functools
import importlib

from mcp.server.mcpserver.tools import Tool

from tools._lazy import cached_tool

SIMPLE_MODE_TOOLS: frozenset[str] = frozenset({
    "orchestrate", "consensus", "register_pattern", "search_patterns", "monitor_operations", "list_providers",
    "acknowledge_incident", "run_workflow", "workflow_run", "save_workflow",
    # Simple mode runs workflows on the in-memory runtime (the CLI passes no DBOS runtime when simple).
})
"""The tools ``--simple`` offers: this set is the one place that decides. A tool of :func:`all_tools` left out
of it answers "needs full mode" in simple mode (see :func:`server.app.simple.build_simple_server`)."""

_FACTORIES: tuple[tuple[str, str, str], ...] = (
    ("orchestrate", "tools.orchestrate", "tool"),
    ("consensus", "tools.consensus", "tool"),
    ("monitor_operations", "tools.monitor", "tool"),
    ("list_providers", "tools.providers", "tool"),
    ("register_pattern", "tools.patterns", "register_tool"),
    ("search_patterns", "tools.patterns", "search_tool"),
    ("acknowledge_incident", "tools.monitor", "acknowledge_tool"),
    ("run_workflow", "tools.workflows", "run_tool"),
    ("workflow_run", "tools.workflows", "run_action_tool"),
    ("save_workflow", "tools.workflows", "save_tool"),
)
"""(tool name, module, factory) of every tool, in listing order. Named rather than imported: with a current
schema cache the modules (and the core modules they need) load at a tool's first call, not at start-up."""


def all_tools() -> list[Tool]:
    """Every tool the server offers, built fresh (each server gets its own instances)."""
    return [cached_tool(name, functools.partial(_build, module, factory)) for name, module, factory in _FACTORIES]


def _build(module: str, factory: str) -> Tool:
    return getattr(importlib.import_module(module), factory)()
