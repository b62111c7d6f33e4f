"""Reaching the server's dependencies from a tool call, and mapping core errors to ``ToolError``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp_types import ToolAnnotations

from server.dependencies import Dependencies
from server.errors import OrchestrationError
from server.pool.pool import pool_error_message
from server.operations.telemetry import SPAN_TOOL, span
from server.security import Forbidden, Principal, Role, caller
from server.security import require_role as check_role
from tools._schema import compact_schema


def dependencies(ctx: Context) -> Dependencies:
    """The :class:`server.app.assembly.Dependencies` the lifespan built."""
    return ctx.request_context.lifespan_context


@contextmanager
def core_errors() -> Iterator[None]:
    """Turn the core's expected errors into ``ToolError`` (the only kind whose message reaches the model)."""
    try:
        yield
    except OrchestrationError as exc:
        raise ToolError(pool_error_message(exc)) from exc
    except PermissionError as exc:  # server.security.Forbidden: a role the caller lacks
        raise ToolError(str(exc)) from exc
    except ValueError as exc:
        raise ToolError(str(exc)) from exc


def require_role(ctx: Context, role: Role, action: str) -> Principal:
    """The caller, if it has ``role``; else ``ToolError`` naming the role (see :mod:`server.security`)."""
    principal = caller(ctx)
    try:
        check_role(principal, role, action)
    except Forbidden as exc:
        raise ToolError(str(exc)) from exc
    return principal


def make_tool(fn: Callable[..., Any], *, name: str, description: str, annotations: ToolAnnotations) -> Tool:
    """A tool from ``fn`` with compact input and output schemas (see :mod:`tools._schema`), traced as
    ``ai_orchestration.tool.<name>`` when telemetry is on (:func:`tools.all_tools` lists it from the schema
    cache of :mod:`tools._lazy` and builds it at its first call)."""
    tool = Tool.from_function(fn, name=name, description=description, annotations=annotations)
    if tool.context_kwarg is not None and tool.is_async:
        context_kwarg, body = tool.context_kwarg, tool.fn

        async def traced(**kwargs: Any) -> Any:
            deps = dependencies(kwargs[context_kwarg])
            with span(getattr(deps, "telemetry", None), SPAN_TOOL.format(name=name), {"gen_ai.tool.name": name}):
                return await body(**kwargs)

        tool.fn = traced
    tool.parameters = compact_schema(tool.parameters)
    if tool.fn_metadata.output_schema is not None:
        tool.fn_metadata.output_schema = compact_schema(tool.fn_metadata.output_schema)
    return tool
