"""Reaching the server's dependencies from a tool call, and mapping core errors to ``ToolError``.

Errors reach a client in exactly two ways: a :class:`server.errors.OrchestrationError` (the root of every domain
error) as a tool error with its message, written for the caller; anything else — a bug — as
``internal error (ref <id>)``, with the traceback logged under the same ref for whoever runs the server.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp_types import ToolAnnotations

from server.dependencies import Dependencies
from server.errors import OrchestrationError
from server.operations.telemetry import SPAN_TOOL, span
from server.security import Forbidden, Principal, Role, caller
from server.security import require_role as check_role
from tools._schema import compact_schema

logger = logging.getLogger(__name__)

AS_TASK: ContextVar[bool] = ContextVar("as_task", default=False)
"""Set while a tool call becomes an MCP task (:mod:`server.app.tasks`): a tool that supports tasks starts its
work and returns at once (``run_workflow`` returns the started run's status), and the task follows the work."""


def dependencies(ctx: Context) -> Dependencies:
    """The :class:`server.app.assembly.Dependencies` the lifespan built."""
    return ctx.request_context.lifespan_context


@contextmanager
def core_errors() -> Iterator[None]:
    """Turn the core's errors into ``ToolError`` (the only kind whose message reaches the model): a domain error
    (:class:`~server.errors.OrchestrationError`) with its message, anything else as :func:`internal_error`."""
    try:
        yield
    except ToolError:
        raise
    except OrchestrationError as exc:
        raise ToolError(str(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - a bug: the client gets a reference, the log the traceback
        raise internal_error(exc) from exc


def internal_error(exc: BaseException) -> ToolError:
    """Log ``exc`` with its traceback under a new reference, and return the tool error the client gets:
    ``internal error (ref <id>)`` (nothing of the exception's text, which was not written for a caller)."""
    ref = uuid.uuid4().hex[:12]
    logger.error("internal error (ref %s): %s", ref, type(exc).__name__, exc_info=exc)
    return ToolError(f"internal error (ref {ref}): the server logged the details under this reference")


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
                with core_errors():
                    return await body(**kwargs)

        tool.fn = traced
    elif tool.is_async:
        tool.fn = _guarded_async(tool.fn)
    else:
        tool.fn = _guarded(tool.fn)
    tool.parameters = compact_schema(tool.parameters)
    if tool.fn_metadata.output_schema is not None:
        tool.fn_metadata.output_schema = compact_schema(tool.fn_metadata.output_schema)
    return tool


def _guarded_async(body: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(body)
    async def call(**kwargs: Any) -> Any:
        with core_errors():
            return await body(**kwargs)
    return call


def _guarded(body: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(body)
    def call(**kwargs: Any) -> Any:
        with core_errors():
            return body(**kwargs)
    return call
