"""Reaching the server's dependencies from a tool call, and mapping core errors to ``ToolError``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError

from server.app import Dependencies
from server.errors import OrchestrationError
from server.pool import pool_error_message


def dependencies(ctx: Context) -> Dependencies:
    """The :class:`server.app.Dependencies` the lifespan built."""
    return ctx.request_context.lifespan_context


@contextmanager
def core_errors() -> Iterator[None]:
    """Turn the core's expected errors into ``ToolError`` (the only kind whose message reaches the model)."""
    try:
        yield
    except OrchestrationError as exc:
        raise ToolError(pool_error_message(exc)) from exc
    except ValueError as exc:
        raise ToolError(str(exc)) from exc
