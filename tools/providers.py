"""The ``list_providers`` tool."""

from __future__ import annotations

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.tools import Tool
from mcp_types import ToolAnnotations

from server.pool.status import PoolState, pool_state
from tools._context import dependencies, make_tool

DESCRIPTION = """List the configured LLM providers with their health: kind, model, priority, readiness
(missing key), circuit breaker state (closed/open/half_open), whether each may take a call now and why
not (cooling down after a rate limit, over its requests/tokens per minute or daily budget), calls in
flight, recent latency (EWMA, ms), recent error rate and today's spend in USD. No secrets."""


async def list_providers(ctx: Context) -> PoolState:
    deps = dependencies(ctx)
    return pool_state(deps.pool, deps.clock)


def tool() -> Tool:
    """The ``list_providers`` tool."""
    return make_tool(
        list_providers,
        name="list_providers",
        description=DESCRIPTION,
        annotations=ToolAnnotations(title="Provider pool health", read_only_hint=True, destructive_hint=False,
                                    idempotent_hint=True, open_world_hint=False),
    )
