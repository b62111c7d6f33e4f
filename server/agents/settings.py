"""The configuration of agents, of routing to them and of the planner: ``[agents.NAME]``, ``[agent_routing]`` and
``[planner]``. Pydantic only, so :mod:`server.config` can hold them without importing the agent machinery.

::

    [agents.coder]
    description = "Writes and fixes code"
    system_prompt = "You are a careful senior engineer."
    capabilities = ["code"]
    providers = ["openai-mini"]          # preferred, tried in this order
    tools = ["github.create_issue"]      # downstream MCP tools it may call (server.tool; "github.*" for all)

    [agent_routing]
    default = "general"                  # the agent a routing failure falls back to
    providers = ["openai-mini"]          # the routing model (default: the pool's routing)
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

AGENT_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
AgentName = Annotated[str, Field(pattern=AGENT_NAME_PATTERN)]
"""An agent's name: 1-64 of a-z, 0-9, ``_`` and ``-``, starting with a letter or digit."""
TOOL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\.(\*|[A-Za-z0-9][A-Za-z0-9_./-]{0,127})$"
"""A tool an agent may use: ``server.tool`` (a downstream MCP server of ``[mcp_servers]`` and one of its tools), or
``server.*`` for every tool of that server."""
StrategyName = Literal["priority", "weighted", "least_latency", "least_cost", "least_busy", "round_robin"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgentSpec(_Strict):
    """An agent: a named role with its own system prompt, preferred providers and the tools it may use.

    What ``[agents.NAME]`` and ``register_agent`` take (the name is the table's key, or the tool's ``name``).
    """

    description: str = Field(min_length=1, max_length=1_000)
    system_prompt: str = Field(default="", max_length=20_000)
    capabilities: tuple[str, ...] = Field(default=(), max_length=32)
    providers: tuple[str, ...] = Field(default=(), max_length=32)
    """Preferred providers, tried in this order (empty: the pool's routing chooses)."""
    models: tuple[str, ...] = Field(default=(), max_length=8)
    """Preferred models: only providers configured with one of these (empty: any)."""
    strategy: StrategyName | None = None
    tools: tuple[str, ...] = Field(default=(), max_length=64)
    """Downstream MCP tools the agent may call in workflow steps (:data:`TOOL_PATTERN`)."""
    metadata: dict[str, JsonValue] = Field(default_factory=dict, max_length=32)

    @field_validator("capabilities", "providers", "models")
    @classmethod
    def _short_names(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in values if not 0 < len(v) <= 200]
        if bad:
            raise ValueError("names are 1 to 200 characters")
        return values

    @field_validator("tools")
    @classmethod
    def _tool_names(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        import re

        bad = [v for v in values if not re.fullmatch(TOOL_PATTERN, v)]
        if bad:
            raise ValueError(f"tools are written server.tool or server.* (got {', '.join(map(repr, bad[:5]))})")
        return values

    def dump(self) -> dict[str, Any]:
        """JSON data, defaults left out (what the store keeps: identical content stores nothing)."""
        return self.model_dump(mode="json", exclude_defaults=True)


class AgentRoutingSettings(_Strict):
    """``[agent_routing]``: how ``orchestrate(agent="auto")`` picks an agent."""

    default: str | None = Field(default=None, pattern=AGENT_NAME_PATTERN)
    """The agent a routing failure falls back to (default: the first agent by name)."""
    providers: tuple[str, ...] = ()
    """The routing model's providers (empty: the pool's routing)."""
    model: str | None = Field(default=None, max_length=200)
    max_tokens: int = Field(default=200, ge=16, le=4_000)
    timeout_s: float = Field(default=20.0, gt=0, le=600)
    cache_ttl_s: float = Field(default=3600.0, gt=0, le=30 * 86_400)
    cache_entries: int = Field(default=10_000, ge=0, le=1_000_000)


class PlannerSettings(_Strict):
    """``[planner]``: the model ``plan_workflow`` drafts with, and how often it may repair a draft."""

    providers: tuple[str, ...] = ()
    model: str | None = Field(default=None, max_length=200)
    max_repairs: int = Field(default=2, ge=0, le=10)
    max_tokens: int = Field(default=4_000, ge=256, le=200_000)
    timeout_s: float = Field(default=120.0, gt=0, le=600)
