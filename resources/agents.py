"""Agents as MCP resources.

| URI | content |
| --- | --- |
| ``agents://registry`` | every agent: name, version, description, capabilities, source, availability, URI (JSON) |
| ``agents://registry/{name}`` | one agent's current version, whole, with its availability (JSON) |
| ``agents://registry{?capability,min_version}`` | discovery: agents with every listed capability (comma-separated) |
|  | and at least ``min_version``, listed as the index lists them (JSON) |
"""

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError

from server.dependencies import Dependencies

if TYPE_CHECKING:
    from server.agents import AgentService

INDEX_URI = "agents://registry"


def _json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2)


def register(mcp: MCPServer, dependencies: Callable[[], Dependencies]) -> None:
    """Register the agent resources on ``mcp``."""

    def service() -> "AgentService":
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

    @mcp.resource(INDEX_URI + "{?capability,min_version}", name="agents_discovery", mime_type="application/json",
                  description="Agents with every one of `capability` (comma-separated) and at least `min_version`, "
                              "e.g. agents://registry?capability=code,review&min_version=2; listed as the index does.")
    async def discover(capability: str = "", min_version: str = "") -> str:
        agents = service()
        wanted = [c.strip() for c in capability.split(",") if c.strip()]
        if min_version and not (min_version.isdigit() and len(min_version) <= 9):
            raise ResourceError(f"min_version is a version number (1, 2 …); got {min_version[:40]!r}")
        least = int(min_version) if min_version else None
        found = await agents.registry.discover(wanted, least)
        return _json({"count": len(found), "capabilities": wanted, "min_version": least, "agents": [
            {**a.summary(), "available": agents.registry.available(a)} for a in found]})

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
