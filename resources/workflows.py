"""Workflow definitions and runs as MCP resources.

| URI | content |
| --- | --- |
| ``workflows://definitions`` | every saved workflow: name, version, steps, URI (JSON) |
| ``workflows://definitions/{name}`` | a saved definition with a Mermaid diagram of its DAG (JSON) |
| ``workflows://runs/{run_id}`` | a run's status, outputs and steps (JSON; the same as ``workflow_run``) |
"""

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceNotFoundError

from server.dependencies import Dependencies
from server.security import caller

if TYPE_CHECKING:
    from server.workflows import WorkflowService


def _json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2)


def register(mcp: MCPServer, dependencies: Callable[[], Dependencies]) -> None:
    """Register the workflow resources on ``mcp``."""

    def service() -> "WorkflowService":
        workflows = dependencies().workflows
        if workflows is None:
            raise ResourceNotFoundError("workflows are not available in this server")
        return workflows

    @mcp.resource("workflows://definitions", name="workflow-definitions", mime_type="application/json",
                  description="Every saved workflow: name, version, number of steps, description, resource URI.")
    async def definitions() -> str:
        from server.workflows.service import definition_uri  # the workflow engine loads at first use

        records = await service().store.list_workflows()
        return _json({"count": len(records), "workflows": [{
            "name": r.name, "version": r.version, "steps": len(r.definition.get("steps", [])),
            "description": r.definition.get("description", ""), "uri": definition_uri(r.name)} for r in records]})

    @mcp.resource("workflows://definitions/{name}", name="workflow-definition", mime_type="application/json",
                  description="A saved workflow definition with a Mermaid diagram (flowchart) of its DAG.")
    async def definition(name: str) -> str:
        from server.workflows import WorkflowNotFound, mermaid

        try:
            parsed, record = await service().definition(name)
        except WorkflowNotFound as exc:
            raise ResourceNotFoundError(str(exc)) from exc
        return _json({"name": record.name, "version": record.version, "updated_at": record.updated_at,
                      "definition": record.definition, "mermaid": mermaid(parsed)})

    @mcp.resource("workflows://runs/{run_id}", name="workflow-run", mime_type="application/json",
                  description="A workflow run: status, outputs, and every step's status, attempts, output, error "
                              "and timings.")
    async def run(run_id: str, ctx: Context) -> str:
        from server.workflows.service import RunNotFound, run_uri

        try:  # another owner's run is "not found", like an unknown id
            status = await service().status(run_id, caller(ctx))
        except RunNotFound as exc:
            raise ResourceNotFoundError(str(exc)) from exc
        return _json({**status.model_dump(mode="json"), "uri": run_uri(run_id)})
