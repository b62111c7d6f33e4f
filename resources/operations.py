"""Operations resources: ``operations://summary`` (the last hour by provider, as ``monitor_operations`` reports
it) and ``operations://incidents`` (recent incidents, newest first). Subscribers hear ``resources/updated`` for
both whenever an incident opens, is acknowledged or resolves."""

import json
from collections.abc import Callable

from mcp.server import MCPServer

from server.dependencies import Dependencies

SUMMARY_URI = "operations://summary"
INCIDENTS_URI = "operations://incidents"
URIS = (SUMMARY_URI, INCIDENTS_URI)


def register(mcp: MCPServer, dependencies: Callable[[], Dependencies]) -> None:
    """Register both resources on ``mcp``."""

    @mcp.resource(SUMMARY_URI, name="operations-summary", mime_type="application/json",
                  description="Calls, errors, latency percentiles, tokens and cost over the last hour per provider, "
                              "with active incidents and provider health.")
    async def summary() -> str:
        from server.operations.monitoring import summarize

        return (await summarize(dependencies(), window="1h", metrics=["calls", "errors", "latency", "throughput",
                                                                      "tokens", "cost", "previous"])
                ).model_dump_json(indent=2)

    @mcp.resource(INCIDENTS_URI, name="operations-incidents", mime_type="application/json",
                  description="Operations incidents (open, acknowledged, resolved), newest first, with the "
                              "automated responses taken.")
    async def incidents() -> str:
        deps = dependencies()
        found = await deps.incidents.recent() if deps.incidents is not None else []
        return json.dumps({"incidents": [i.model_dump(mode="json") for i in found]}, indent=2)
