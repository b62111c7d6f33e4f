"""The ``register_agent`` and ``plan_workflow`` tools."""

from typing import TYPE_CHECKING, Annotated

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp_types import ToolAnnotations
from pydantic import Field, JsonValue

from server.agents.planning import PlanResult
from server.agents.settings import AGENT_NAME_PATTERN
from server.models import DeferredModel
from server.security import caller
from tools._context import core_errors, dependencies, make_tool, require_role

if TYPE_CHECKING:
    from server.agents import AgentService

REGISTER_DESCRIPTION = """Save an agent, a role orchestrate(agent=name) answers as. `agent`: {description,
system_prompt, capabilities, providers, models, strategy, tools (server.tool), metadata}. Needs admin."""

PLAN_DESCRIPTION = """Draft a workflow for a goal with a planning model: a valid definition, Mermaid diagram and
rationale. save_as saves it (admin); run starts it."""

Names = Annotated[list[Annotated[str, Field(max_length=200)]], Field(max_length=64)]


class AgentSaved(DeferredModel):
    """The agent as stored."""

    name: str
    version: int
    changed: bool
    uri: str


def _agents(ctx: Context) -> "AgentService":
    service = dependencies(ctx).agents
    if service is None:
        raise ToolError("agents are not available in this server")
    return service


async def register_agent(
    ctx: Context,
    name: Annotated[str, Field(pattern=AGENT_NAME_PATTERN)],
    agent: Annotated[dict[str, JsonValue], Field(max_length=16)],
) -> AgentSaved:
    require_role(ctx, "admin", "register_agent")
    with core_errors():
        saved, changed = await _agents(ctx).registry.register(name, agent)
    if changed:
        audit = dependencies(ctx).audit
        if audit is not None:
            await audit.record("agent.registered", actor=caller(ctx).id, subject=f"agent:{saved.name}",
                               id=f"agent:{saved.name}:v{saved.version}", outputs={"agent": agent},
                               detail={"version": saved.version})
        try:
            await ctx.notify_resources_changed()
        except Exception:  # noqa: BLE001 - notification is best effort
            pass
    return AgentSaved(name=saved.name, version=saved.version, changed=changed, uri=saved.uri)


async def plan_workflow(
    ctx: Context,
    goal: Annotated[str, Field(max_length=20_000)],
    constraints: Annotated[dict[str, JsonValue] | None, Field(
        description="max_steps, max_cost_usd, agents, tools, deadline_s", max_length=8)] = None,
    agents: Names | None = None,
    save_as: Annotated[str | None, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")] = None,
    run: bool = False,
) -> PlanResult:
    from server.agents.planning import plan_workflow as plan

    if save_as is not None:
        require_role(ctx, "admin", "plan_workflow with save_as")
    deps = dependencies(ctx)
    with core_errors():
        return await plan(_agents(ctx).planner, deps.workflows, goal, caller(ctx), constraints=constraints,
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
