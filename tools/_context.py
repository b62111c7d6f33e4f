"""Reaching the server's dependencies from a tool call, and mapping core errors to ``ToolError``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError

from server.dependencies import Dependencies
from server.errors import OrchestrationError
from server.pool.pool import pool_error_message
from server.security import Forbidden, Principal, Role, caller
from server.security import require_role as check_role
from tools._tool import call_started, make_tool

__all__ = ["call_started", "core_errors", "dependencies", "make_tool", "require_role"]


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
