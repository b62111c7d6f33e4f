"""The ``list_providers`` tool."""

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.tools import Tool
from mcp_types import ToolAnnotations

from server.pool.status import PoolState, pool_state
from tools._context import dependencies, make_tool

DESCRIPTION = """The LLM providers and their health: circuit, whether each can take a call (or why not),
latency, error rate, spend today."""


async def list_providers(ctx: Context) -> PoolState:
    deps = dependencies(ctx)
    return pool_state(deps.pool, deps.clock)


def tool() -> Tool:
    """The ``list_providers`` tool."""
    return make_tool(
        list_providers,
        name="list_providers",
        description=DESCRIPTION,
        annotations=ToolAnnotations(title="Provider health", read_only_hint=True, destructive_hint=False,
                                    idempotent_hint=True, open_world_hint=False),
    )
