"""Reaching the server's dependencies from a tool call, and mapping core errors to ``ToolError``
(:mod:`tools._errors`)."""

from contextvars import ContextVar

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError

from server.dependencies import Dependencies
from server.security import Forbidden, Principal, Role, caller
from server.security import require_role as check_role
from tools._errors import core_errors, internal_error
from tools._tool import TaskStarted, call_started, make_tool

__all__ = ["AS_TASK", "TaskStarted", "call_started", "core_errors", "dependencies", "internal_error", "make_tool",
           "require_role"]

AS_TASK: ContextVar[bool] = ContextVar("as_task", default=False)
"""Set while a tool call becomes an MCP task (:mod:`server.app.tasks`): a tool that supports tasks starts its
work and returns at once (``run_workflow`` returns the started run's status, ``consensus`` a
:class:`TaskStarted`), and the task follows the work."""


def dependencies(ctx: Context) -> Dependencies:
    """The :class:`server.app.assembly.Dependencies` the lifespan built."""
    return ctx.request_context.lifespan_context


def require_role(ctx: Context, role: Role, action: str) -> Principal:
    """The caller, if it has ``role``; else ``ToolError`` naming the role (see :mod:`server.security`)."""
    principal = caller(ctx)
    try:
        check_role(principal, role, action)
    except Forbidden as exc:
        raise ToolError(str(exc)) from exc
    return principal
