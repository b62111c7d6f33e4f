"""MCP resources. The pattern library, workflow definitions and operations summaries join as they land."""

from __future__ import annotations

from collections.abc import Callable

from mcp.server import MCPServer

from server.app import Dependencies
from server.pool_status import pool_state


def register(mcp: MCPServer, dependencies: Callable[[], Dependencies]) -> None:
    """Register every resource on ``mcp``.

    Args:
        dependencies: returns the running server's dependencies (static resources get no request context).
    """

    @mcp.resource("providers://pool", name="provider-pool", mime_type="application/json",
                  description="The provider pool's health: circuit state, cooldowns, in-flight calls, recent "
                              "latency and error rate, spend; no secrets.")
    async def provider_pool() -> str:
        deps = dependencies()
        return pool_state(deps.pool, deps.clock).model_dump_json(indent=2)
