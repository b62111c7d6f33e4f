"""Agents as MCP resources.

| URI | content |
| --- | --- |
| ``agents://registry`` | every agent: name, version, description, capabilities, source, availability, URI (JSON) |
| ``agents://registry/{name}`` | one agent's current version, whole, with its availability (JSON) |
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError

from server.dependencies import Dependencies

if TYPE_CHECKING:
    from server.agents import AgentService

INDEX_URI = "agents://registry"


def _json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2)


def register(mcp: MCPServer, dependencies: Callable[[], Dependencies]) -> None:
    """Register the agent resources on ``mcp``."""

    def service() -> AgentService:
        agents = dependencies().agents
        if agents is None:
            raise ResourceNotFoundError("agents are not available in this server")
        return agents

    @mcp.resource(INDEX_URI, name="agents", mime_type="application/json",
                  description="Every agent: name, version, description, capabilities, source, whether it is "
                              "available now, resource URI.")
    async def index() -> str:
        agents = service()
        listed = await agents.registry.list()
        return _json({"count": len(listed), "agents": [
            {**a.summary(), "available": agents.registry.available(a)} for a in listed]})

    @mcp.resource(INDEX_URI + "/{name}", name="agent", mime_type="application/json",
                  description="One agent (current version): description, system prompt, capabilities, preferred "
                              "providers, models and strategy, allowed tools, metadata, availability.")
    async def agent(name: str) -> str:
        from server.agents import UnknownAgent

        agents = service()
        try:
            found = await agents.registry.get(name)
        except UnknownAgent as exc:
            raise ResourceNotFoundError(str(exc)) from exc
        return _json({"name": found.name, "version": found.version, "source": found.source,
                      "updated_at": found.updated_at, "available": agents.registry.available(found),
                      **found.spec.model_dump(mode="json")})
