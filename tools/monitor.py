"""The ``monitor_operations`` and ``acknowledge_incident`` tools."""

import base64
from typing import Annotated, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult, ImageContent, TextContent, ToolAnnotations
from pydantic import Field

from server.models import DeferredModel
from server.operations.incident_types import Incident
from server.operations.summary import Metric, OperationsSummary
from server.security import caller
from tools._context import core_errors, dependencies, make_tool, require_role

DESCRIPTION = """Call metrics over a window, by provider, model, tool, ab_bucket or workflow: calls, errors,
latency p50/p95/p99 ms, tokens, cost; alerts, incidents, provider health. `metrics` may add throughput, series
or previous (the window before)."""

ACK_DESCRIPTION = """Mark an incident as being handled (it resolves itself once its metric is normal). Needs
admin."""


DEFAULT_METRICS: tuple[Metric, ...] = ("calls", "errors", "latency", "tokens", "cost")


class ProviderHealth(DeferredModel):
    """One provider's health at the time of the report (list_providers has the full state)."""

    name: str
    status: str
    last_error_class: str | None = None
    circuit: str
    available: bool
    unavailable_reason: str | None = None
    recent_error_rate: float | None = None
    ewma_latency_ms: float | None = None
    spent_today_usd: float = 0.0


class MonitorResult(OperationsSummary):
    """The ``monitor_operations`` result: figures not asked for are left out."""

    providers: list[ProviderHealth]  # type: ignore[assignment]  # a compact view of server.pool.status.ProviderState


async def monitor_operations(
    ctx: Context,
    window: Annotated[str, Field(description="e.g. 15m, 24h, 7d.", max_length=16)] = "1h",
    group_by: Literal["provider", "model", "tool", "ab_bucket", "workflow"] = "provider",
    metrics: Annotated[list[Metric] | None, Field(
        description="Default: calls, errors, latency, tokens, cost.", max_length=8)] = None,
    include_chart: Annotated[bool, Field(description="Add a PNG chart.")] = False,
) -> Annotated[CallToolResult, MonitorResult]:
    deps = dependencies(ctx)
    if include_chart and deps.simple:
        raise ToolError("include_chart needs full mode (charts use matplotlib): start the server without "
                        "--simple, with the full install (pip install ai-orchestration-mcp)")
    wanted = list(metrics or DEFAULT_METRICS)
    if include_chart and "series" not in wanted:
        wanted.append("series")  # the chart is drawn from it
    with core_errors():
        from server.operations.monitoring import summarize

        summary = await summarize(deps, window=window, group_by=group_by, metrics=wanted)
    result = MonitorResult.model_validate({
        **{name: getattr(summary, name) for name in OperationsSummary.model_fields if name != "providers"},
        "providers": [ProviderHealth.model_validate(p.model_dump()) for p in summary.providers]})
    content: list = [TextContent(type="text", text=render(result))]
    if include_chart:
        from server.operations.charts import render_chart

        try:
            png = render_chart(summary)
        except ImportError as exc:
            raise ToolError("include_chart needs matplotlib (pip install ai-orchestration-mcp)") from exc
        content.append(ImageContent(type="image", data=base64.b64encode(png).decode(), mime_type="image/png"))
    return CallToolResult(content=content, structured_content=result.model_dump(mode="json", exclude_none=True))


def render(result: MonitorResult) -> str:
    """The text content: one line per group (and the totals), then alerts, incidents and provider health."""

    def cell(value: float | None, unit: str = "", digits: int = 0) -> str:
        return "-" if value is None else f"{value:,.{digits}f}{unit}"

    lines = [f"{result.window} by {result.group_by} ({result.percentiles}): calls, errors, p50/p95/p99 ms, "
             f"tokens in/out, cost"]
    for group in [*result.groups, result.totals]:
        figures = [f"{group.key or '(none)'}: {cell(group.calls)} calls"]
        if group.errors is not None:
            figures.append(f"{group.errors} errors ({cell((group.error_rate or 0) * 100, '%', 1)})")
        if group.latency_p50_ms is not None or group.latency_p95_ms is not None:
            figures.append("/".join(cell(v) for v in (group.latency_p50_ms, group.latency_p95_ms,
                                                      group.latency_p99_ms)) + " ms")
        if group.input_tokens is not None:
            figures.append(f"{group.input_tokens}/{group.output_tokens} tokens")
        if group.cost_usd is not None:
            figures.append(f"${group.cost_usd:.4f}")
        lines.append(", ".join(figures))
    lines += [f"alert: {a.group} {a.metric} {a.value:.4g} > {a.threshold:.4g}" for a in result.alerts]
    lines += [f"incident {i.id}: {i.status} {i.severity} {i.metric} {i.provider or ''}".rstrip()
              for i in result.incidents]
    health = [_health(p) for p in result.providers]
    if health:
        lines.append("providers: " + "; ".join(health))
    return "\n".join(lines)


def _health(provider: ProviderHealth) -> str:
    text = f"{provider.name} {provider.status}"
    if provider.status == "failing" and provider.last_error_class:
        text += f" ({provider.last_error_class})"
    text += f", circuit {provider.circuit}"
    return text if provider.available else f"{text} ({provider.unavailable_reason or 'unavailable'})"


async def acknowledge_incident(
    ctx: Context,
    incident_id: Annotated[str, Field(max_length=64)],
    note: Annotated[str | None, Field(description="What is being done about it.", max_length=2000)] = None,
    acknowledged_by: Annotated[str | None, Field(max_length=200)] = None,
) -> Incident:
    require_role(ctx, "admin", "acknowledge_incident")
    deps = dependencies(ctx)
    if deps.incidents is None:
        raise ToolError("incidents are not available in this server")
    with core_errors():
        return await deps.incidents.acknowledge(incident_id, by=acknowledged_by, note=note, actor=caller(ctx).id)


def tool() -> Tool:
    """The ``monitor_operations`` tool."""
    return make_tool(
        monitor_operations,
        name="monitor_operations",
        description=DESCRIPTION,
        annotations=ToolAnnotations(title="Operations metrics", read_only_hint=True, destructive_hint=False,
                                    idempotent_hint=True, open_world_hint=False),
    )


def acknowledge_tool() -> Tool:
    """The ``acknowledge_incident`` tool."""
    return make_tool(
        acknowledge_incident,
        name="acknowledge_incident",
        description=ACK_DESCRIPTION,
        annotations=ToolAnnotations(title="Acknowledge an incident", read_only_hint=False, destructive_hint=False,
                                    idempotent_hint=True, open_world_hint=False),
    )
