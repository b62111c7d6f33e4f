"""The ``register_agent`` and ``plan_workflow`` tools."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp_types import ToolAnnotations
from pydantic import ConfigDict, Field, JsonValue

from server.agents.planning import PlanResult
from server.agents.settings import AGENT_NAME_PATTERN, StrategyName
from server.models import DeferredModel
from server.security import caller
from tools._arguments import Guard
from tools._context import core_errors, dependencies, make_tool, require_role

if TYPE_CHECKING:
    from server.agents import AgentService

REGISTER_DESCRIPTION = """Save an agent: a named role with a system prompt, preferred providers, models and
strategy, and the downstream tools (server.tool) it may use in workflows. Identical content keeps the version.
orchestrate(agent=name) answers as it. Needs admin with auth on."""

PLAN_DESCRIPTION = """Draft a workflow for a goal with a planning model: a valid definition with its Mermaid
diagram and rationale. save_as saves it (admin); run starts it (see workflow_run)."""

Names = Annotated[list[Annotated[str, Field(max_length=200)]], Field(max_length=64)]


class AgentSaved(DeferredModel):
    """The agent as stored."""

    name: str
    version: int
    changed: bool
    uri: str


class Constraints(DeferredModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")  # a misspelled constraint is refused, not dropped

    max_steps: Annotated[int | None, Guard(ge=1, le=1_000)] = None
    max_cost_usd: Annotated[float | None, Guard(ge=0)] = None
    agents: Names | None = None
    tools: Names | None = Field(default=None, description="server.tool")
    deadline_s: Annotated[float | None, Guard(gt=0, le=3_600)] = None


def _agents(ctx: Context) -> AgentService:
    service = dependencies(ctx).agents
    if service is None:
        raise ToolError("agents are not available in this server")
    return service


async def register_agent(
    ctx: Context,
    name: Annotated[str, Field(pattern=AGENT_NAME_PATTERN)],
    description: Annotated[str, Field(max_length=1_000)],
    system_prompt: Annotated[str, Field(max_length=20_000)] = "",
    capabilities: Names | None = None,
    providers: Names | None = None,
    models: Names | None = None,
    strategy: StrategyName | None = None,
    tools: Names | None = None,
    metadata: Annotated[dict[str, JsonValue] | None, Field(max_length=32)] = None,
) -> AgentSaved:
    require_role(ctx, "admin", "register_agent")
    spec = {key: value for key, value in (("description", description), ("system_prompt", system_prompt),
            ("capabilities", capabilities), ("providers", providers), ("models", models), ("strategy", strategy),
            ("tools", tools), ("metadata", metadata)) if value is not None}
    with core_errors():
        agent, changed = await _agents(ctx).registry.register(name, spec)
    if changed:
        try:
            await ctx.notify_resources_changed()
        except Exception:  # noqa: BLE001 - notification is best effort
            pass
    return AgentSaved(name=agent.name, version=agent.version, changed=changed, uri=agent.uri)


async def plan_workflow(
    ctx: Context,
    goal: Annotated[str, Field(max_length=20_000)],
    constraints: Constraints | None = None,
    agents: Names | None = None,
    save_as: Annotated[str | None, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")] = None,
    run: bool = False,
) -> PlanResult:
    from server.agents.planning import plan_workflow as plan

    if save_as is not None:
        require_role(ctx, "admin", "plan_workflow with save_as")
    deps = dependencies(ctx)
    with core_errors():
        return await plan(_agents(ctx).planner, deps.workflows, goal, caller(ctx),
                          constraints=constraints.model_dump(exclude_none=True) if constraints else None,
                          agents=agents, save_as=save_as, run=run)


def register_tool() -> Tool:
    """The ``register_agent`` tool."""
    return make_tool(register_agent, name="register_agent", description=REGISTER_DESCRIPTION,
                     annotations=ToolAnnotations(title="Save an agent", read_only_hint=False, destructive_hint=False,
                                                 idempotent_hint=True, open_world_hint=False))


def plan_tool() -> Tool:
    """The ``plan_workflow`` tool."""
    return make_tool(plan_workflow, name="plan_workflow", description=PLAN_DESCRIPTION,
                     annotations=ToolAnnotations(title="Plan a workflow", read_only_hint=False,
                                                 destructive_hint=False, idempotent_hint=False,
                                                 open_world_hint=True))
