"""The ``monitor_operations`` tool."""

from __future__ import annotations

from typing import Annotated, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.tools import Tool
from mcp_types import ToolAnnotations
from pydantic import Field

from server.operations import OperationsSummary, operations_summary
from tools._context import core_errors, dependencies, make_tool

DESCRIPTION = """Report how the provider calls went over a recent time window: per provider (or model,
or tool) the number of calls, errors and error rate, latency p50/p95/p99 in milliseconds, throughput
per minute, input/output tokens and cost in USD; alerts for configured thresholds crossed; and the
configured providers with their readiness. Example: window="1h", group_by="provider"."""


async def monitor_operations(
    ctx: Context,
    window: Annotated[str, Field(description="How far back: 15m, 1h, 24h, 7d …", max_length=16)] = "1h",
    group_by: Annotated[
        Literal["provider", "model", "tool", "ab_bucket"], Field(description="How to group the calls.")
    ] = "provider",
) -> OperationsSummary:
    deps = dependencies(ctx)
    with core_errors():
        return await operations_summary(
            deps.store, deps.pool.configs, deps.config.alerts, window=window, group_by=group_by, clock=deps.clock
        )


def tool() -> Tool:
    """The ``monitor_operations`` tool."""
    return make_tool(
        monitor_operations,
        name="monitor_operations",
        description=DESCRIPTION,
        annotations=ToolAnnotations(
            title="Operations metrics",
            read_only_hint=True,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=False,
        ),
    )
