"""The MCP tools: thin functions that validate, call one core service and map core errors to ``ToolError``."""

import importlib
from collections.abc import Iterable

from tools._tool import SurfaceTool

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
    ("register_agent", "tools.agents", "register_tool"),
    ("plan_workflow", "tools.agents", "plan_tool"),
)
"""(tool name, module, factory) of every tool, in listing order."""

TOOL_NAMES: tuple[str, ...] = tuple(name for name, _, _ in _FACTORIES)
"""Every tool's name, in listing order (what ``--tools`` chooses from)."""


def all_tools(names: Iterable[str] | None = None) -> list[SurfaceTool]:
    """The tools the server offers, built fresh (each server gets its own instances): all of them, or those named
    in ``names`` (in listing order; a module is imported only when one of its tools is wanted).

    Raises:
        ValueError: a name that is no tool's (the message lists the valid ones).
    """
    wanted = set(TOOL_NAMES if names is None else names)
    unknown = sorted(wanted - set(TOOL_NAMES))
    if unknown:
        raise ValueError(f"unknown tool(s) {', '.join(unknown)}; valid: {', '.join(TOOL_NAMES)}")
    return [getattr(importlib.import_module(module), factory)() for name, module, factory in _FACTORIES
            if name in wanted]
