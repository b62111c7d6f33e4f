"""The ``monitor_operations`` and ``acknowledge_incident`` tools."""

from __future__ import annotations

import base64
from typing import Annotated, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult, ImageContent, TextContent, ToolAnnotations
from pydantic import Field

from server.operations.incident_types import Incident
from server.operations.summary import Metric, OperationsSummary
from tools._context import core_errors, dependencies, make_tool, require_role

DESCRIPTION = """Report how the provider calls went over a recent time window, per provider (or model, tool,
A/B bucket, workflow): calls, errors and error rate, latency p50/p95/p99 in milliseconds, throughput per
minute, input/output tokens and cost in USD; a time series over the window; the previous window's figures
for comparison; thresholds crossed; open incidents; and each provider's health (circuit, cooldown, spend).
`metrics` picks a subset; include_chart=true adds a PNG of latency percentiles and error rate over time.
Example: window="24h", group_by="model"."""

ACK_DESCRIPTION = """Acknowledge an operations incident (from monitor_operations or operations://incidents) so
others know it is being handled; it still resolves itself once its metric stays normal for the cooldown. Needs
role admin on an authenticated server."""


async def monitor_operations(
    ctx: Context,
    window: Annotated[str, Field(description="How far back: 15m, 1h, 24h, 7d …", max_length=16)] = "1h",
    group_by: Annotated[
        Literal["provider", "model", "tool", "ab_bucket", "workflow"], Field(description="How to group the calls.")
    ] = "provider",
    metrics: Annotated[
        list[Metric] | None, Field(description="Only these figures (default all).", max_length=8)
    ] = None,
    include_chart: Annotated[bool, Field(description="Add a PNG chart of latency and error rate.")] = False,
) -> Annotated[CallToolResult, OperationsSummary]:
    deps = dependencies(ctx)
    with core_errors():
        from server.operations.monitoring import summarize

        summary = await summarize(deps, window=window, group_by=group_by, metrics=metrics)
    content: list = [TextContent(type="text", text=summary.model_dump_json())]
    if include_chart:
        if deps.simple:
            raise ToolError("include_chart needs full mode (charts use matplotlib): start the server without "
                            "--simple, with the full install (pip install ai-orchestration-mcp)")
        from server.operations.charts import render_chart

        try:
            png = render_chart(summary)
        except ImportError as exc:
            raise ToolError("include_chart needs matplotlib (pip install ai-orchestration-mcp)") from exc
        content.append(ImageContent(type="image", data=base64.b64encode(png).decode(), mime_type="image/png"))
    return CallToolResult(content=content, structured_content=summary.model_dump(mode="json"))


async def acknowledge_incident(
    ctx: Context,
    incident_id: Annotated[str, Field(description="The incident's id (inc-…).", pattern=r"^inc-[0-9a-f]{12}$")],
    note: Annotated[str | None, Field(description="What is being done about it.", max_length=2000)] = None,
    acknowledged_by: Annotated[str | None, Field(description="Who is handling it.", max_length=200)] = None,
) -> Incident:
    require_role(ctx, "admin", "acknowledge_incident")
    deps = dependencies(ctx)
    if deps.incidents is None:
        raise ToolError("incidents are not available in this server")
    with core_errors():
        return await deps.incidents.acknowledge(incident_id, by=acknowledged_by, note=note)


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


def acknowledge_tool() -> Tool:
    """The ``acknowledge_incident`` tool."""
    return make_tool(
        acknowledge_incident,
        name="acknowledge_incident",
        description=ACK_DESCRIPTION,
        annotations=ToolAnnotations(
            title="Acknowledge an incident",
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=False,
        ),
    )
