"""The audit trail as MCP resources (read only: no tool writes or edits the trail).

| URI | content |
| --- | --- |
| ``audit://runs/{run_id}`` | a workflow run's lineage: who started it, each step's inputs and output hashes, the model that answered, guardrail decisions, approvals, and a Mermaid diagram (JSON) |
"""

import json
from collections.abc import Callable

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceNotFoundError

from server.dependencies import Dependencies
from server.security import caller


def register(mcp: MCPServer, dependencies: Callable[[], Dependencies]) -> None:
    """Register the audit resources on ``mcp``."""

    @mcp.resource("audit://runs/{run_id}", name="run-lineage", mime_type="application/json",
                  description="A workflow run's lineage from the audit trail: who started it, what each step saw "
                              "and produced (SHA-256), which model answered, who approved, as JSON and Mermaid.")
    async def run_lineage(run_id: str, ctx: Context) -> str:
        from server.operations.lineage import run_lineage as lineage
        from server.workflows.service import RunNotFound

        deps = dependencies()
        if deps.workflows is None or deps.audit is None:
            raise ResourceNotFoundError("workflows are not available in this server")
        try:  # another owner's run is "not found", like an unknown id
            record = await deps.workflows.record_of(run_id, caller(ctx))
        except RunNotFound as exc:
            raise ResourceNotFoundError(str(exc)) from exc
        entries = await deps.audit.trail.audit_of(record.run_id)
        return json.dumps(lineage(run_id, entries), ensure_ascii=False, indent=2)
