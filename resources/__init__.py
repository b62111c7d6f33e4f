"""MCP resources: the provider pool's health and the knowledge pattern library (workflows and operations
summaries join as they land)."""

from collections.abc import Callable
from typing import Any

from mcp.server import MCPServer
from mcp_types import Completion, CompletionArgument, CompletionContext

from resources import agents, audit, knowledge, operations, workflows
from resources.knowledge import PatternResources
from server.dependencies import Dependencies


def register(mcp: MCPServer, dependencies: Callable[[], Dependencies]) -> PatternResources:
    """Register every resource on ``mcp``.

    Args:
        dependencies: returns the running server's dependencies (static resources get no request context).

    Returns:
        The per-pattern resource listing, which the app keeps in step with the pattern library.
    """

    @mcp.resource("providers://pool", name="provider-pool", mime_type="application/json",
                  description="The provider pool's health: circuit state, cooldowns, in-flight calls, recent "
                              "latency and error rate, spend; no secrets.")
    async def provider_pool() -> str:
        from server.pool.status import pool_state  # loads at the first read, not at start-up

        deps = dependencies()
        return pool_state(deps.pool, deps.clock).model_dump_json(indent=2)

    workflows.register(mcp, dependencies)
    agents.register(mcp, dependencies)
    operations.register(mcp, dependencies)
    audit.register(mcp, dependencies)
    return knowledge.register(mcp, dependencies)


async def complete(deps: Dependencies, ref: Any, argument: CompletionArgument,
                   context: CompletionContext | None) -> Completion | None:
    """Argument completion for resource templates; ``None`` when no template here knows the reference."""
    return await knowledge.complete(deps, ref, argument, context)
