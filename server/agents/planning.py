"""The ``plan_workflow`` service: plan (:mod:`server.agents.planner`), then optionally save the plan as a workflow
and start a run of it, as ``save_workflow`` and ``run_workflow`` would."""

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import Field, JsonValue

from server.models import DeferredModel
from server.security import Principal

if TYPE_CHECKING:  # the planner (and the workflow validator under it) loads with the first plan
    from server.agents.planner import Planner
    from server.workflows import WorkflowService


class PlanResult(DeferredModel):
    """A valid plan: its definition, Mermaid diagram and rationale; where it was saved and the run it started."""

    definition: dict[str, JsonValue]
    mermaid: str
    rationale: str = ""
    attempts: int = Field(default=1, description="drafts made; 1 means valid at once")
    estimated_cost_usd: float = Field(default=0.0, description="the upper bound max_cost_usd is checked against")
    cost_usd: float = Field(default=0.0, description="what the planning calls cost")
    saved_as: str | None = None
    version: int | None = None
    run_id: str | None = None
    status: str | None = None


async def plan_workflow(planner: "Planner", workflows: "WorkflowService | None", goal: str, principal: Principal, *,
                        constraints: Mapping[str, Any] | None = None, agents: Sequence[str] | None = None,
                        save_as: str | None = None, run: bool = False) -> PlanResult:
    """Plan a workflow for ``goal``; with ``save_as``, save it under that name (its next version); with ``run``,
    start a run of it (the saved workflow, else the definition inline) and report its id and first status.

    Raises:
        PlanFailed: no valid plan (lists the last problems); nothing saved or started.
        InvalidRequest: a bad goal or constraints.
        WorkflowError: saving or starting failed (the plan is then not returned: ask again with the same goal).
    """
    from server.agents.planner import constraints_from

    plan = await planner.plan(goal, constraints_from(constraints, agents), principal, name=save_as)
    result = PlanResult(definition=plan.definition, mermaid=plan.mermaid, rationale=plan.rationale,
                        attempts=plan.attempts, estimated_cost_usd=plan.estimated_cost_usd,
                        cost_usd=plan.planning_cost_usd)
    if (save_as or run) and workflows is None:
        from server.agents.registry import AgentError

        raise AgentError("workflows are not available in this server: plan without save_as and run")
    if save_as and workflows is not None:
        saved = await workflows.save(plan.definition)
        result.saved_as, result.version = saved.name, saved.version
    if run and workflows is not None:
        run_id, _ = await workflows.start(save_as or plan.definition, {}, caller=principal)
        result.run_id = run_id
        result.status = (await workflows.status(run_id, principal)).status
    return result
