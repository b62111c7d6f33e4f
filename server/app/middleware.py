"""The server's own middleware (the MCP SDK's ``MCPServer(middleware=[…])``): the refusal of a tool this server does
not offer, and the warm start's hooks (:mod:`server.app.warmup`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

from mcp import MCPError
from mcp_types.jsonrpc import INTERNAL_ERROR

from server.errors import OrchestrationError


def refuse_tools(messages: Mapping[str, str]) -> Callable[..., Any]:
    """A server middleware: a ``tools/call`` of a tool in ``messages`` (one this server does not offer) answers
    its message instead of the SDK's bare "Unknown tool" (the SDK's own error result, its text replaced)."""

    async def middleware(ctx: Any, call_next: Callable[[Any], Any]) -> Any:
        result = await call_next(ctx)
        if ctx.method != "tools/call" or not isinstance(result, dict) or not result.get("isError"):
            return result
        name = (ctx.params or {}).get("name")
        if isinstance(name, str) and name in messages:
            result["content"] = [{"type": "text", "text": messages[name]}]
        return result

    return middleware


HANDSHAKE_METHODS = ("initialize", "server/discover")
"""The handshake era's opening request, and the 2026-07-28 revision's discovery: the warm start waits past them."""
WITHOUT_STORED_STATE = (*HANDSHAKE_METHODS, "ping", "tools/list", "logging/setLevel", "tools/call")
"""Requests answered without waiting for the stored state (a tool call waits in its tool: ``overhead_ms``
counts it)."""


async def warm_start(ctx: Any, call_next: Callable[[Any], Any]) -> Any:
    """A server middleware: once the first request after the handshake is answered, the warm start begins
    (:mod:`server.app.warmup`), so nothing competes with the handshake and the first ``tools/list``; a request
    that reads the stored state (resources, prompts, completions, tasks) first waits for it
    (:class:`~server.app.warmup.Readiness`); a tool call in flight holds the warm start's next step back
    (:meth:`~server.app.warmup.WarmUp.call`)."""
    deps = getattr(ctx, "lifespan_context", None)
    readiness = getattr(deps, "readiness", None)
    if (readiness is not None and not readiness.ready and ctx.request_id is not None  # not a notification
            and ctx.method not in WITHOUT_STORED_STATE):
        try:
            await readiness.wait()
        except OrchestrationError as exc:
            raise MCPError(code=INTERNAL_ERROR, message=str(exc)) from None
    warm_up = getattr(deps, "warm_up", None)
    if warm_up is None:
        return await call_next(ctx)
    with warm_up.call() if ctx.method == "tools/call" else contextlib.nullcontext():
        result = await call_next(ctx)
    if ctx.method not in HANDSHAKE_METHODS and ctx.request_id is not None:
        warm_up.begin()
    return result
