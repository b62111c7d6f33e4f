"""The ``run_workflow``, ``workflow_run`` and ``save_workflow`` tools."""

from __future__ import annotations

from typing import Annotated, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp_types import ToolAnnotations
from pydantic import Field, JsonValue

from server.models import DeferredModel
from server.security import caller
from server.workflows.service import (
    RUN_ID_PATTERN,
    RunProgress,
    RunStatus,
    SavedWorkflow,
    StepReport,
    ToolStepsForbidden,
    WorkflowService,
)
from tools._context import AS_TASK, core_errors, dependencies, make_tool, require_role

RUN_DESCRIPTION = """Run a workflow: a DAG of steps (orchestrate, consensus, pattern, tool on a downstream MCP
server, workflow = a saved sub-workflow, approval = wait for a human decision) with dependencies, parallel
branches, conditions, retries and timeouts. Runs are durable: they survive client timeouts and server restarts.

`workflow` is a saved workflow's name (see save_workflow) or a definition object:
{"name": "brief", "inputs": {JSON Schema}, "steps": [{"id": "a", "kind": "orchestrate",
"with": {"prompt": "Summarise {{ inputs.text }}"}}, {"id": "b", "kind": "pattern", "depends_on": ["a"],
"when": {"path": "steps.a.output.text", "op": "contains", "value": "risk"}, "with": {...},
"retry": {"max_attempts": 3, "backoff": 1}, "timeout_s": 60, "on_error": "fail|skip|continue"}],
"outputs": {"summary": "{{ steps.a.output.text }}"}, "max_parallel": 4}.

With `wait` (default) the call reports progress per step and returns when the run ends or after `wait_s`
seconds; then `status` is running (or waiting for an approval) and the run goes on: follow it with
workflow_run(run_id). Passing your own `run_id` makes the call idempotent: the same id and arguments never run
twice. The result has run_id, status, outputs, every step (status, attempts, output, error, timings), progress.
On an authenticated server, an inline definition with `tool` steps needs role admin; a saved one runs for any
user, and a run is visible only to the key that started it (and to admins)."""

RUN_ACTION_DESCRIPTION = """Follow or steer workflow runs. With `run_id`: action `status` (default) returns the
run's status, outputs and steps; `cancel` stops it; `approve` / `reject` decide its waiting approval step
(`step` names it when several wait; `comment` is kept with the decision). Without `run_id`: the recent runs,
newest first, filtered by `status` and paged with `limit` / `offset`."""

SAVE_DESCRIPTION = """Save a workflow definition under its `name` (create, or update as a new version), after
validating it: every problem is listed (cycles, unknown dependencies or kinds, duplicate ids, references to
steps that are not upstream, bad templates, missing step parameters). It becomes runnable by name with
run_workflow and readable with its Mermaid diagram at workflows://definitions/{name}. `definition` is the
JSON object, or JSON/YAML text. Sub-workflows it names must be saved first. Needs role admin on an
authenticated server."""

DEFAULT_WAIT_S = 45.0


class WorkflowRunResult(DeferredModel):
    """One run's status (with `run_id`), or a page of recent runs (without)."""

    run_id: str | None = None
    workflow: str | None = None
    status: str | None = Field(default=None, description="pending, running, waiting, completed, failed, cancelled")
    outputs: dict[str, JsonValue] | None = None
    error: str | None = None
    steps: list[StepReport] | None = None
    progress: RunProgress | None = None
    created_at: float | None = None
    updated_at: float | None = None
    runtime: str | None = None
    runs: list[RunStatus] | None = Field(default=None, description="listing: runs, newest first (steps left out)")
    next_offset: int | None = Field(default=None, description="listing: offset of the next page; null at the end")

    @classmethod
    def of(cls, status: RunStatus) -> WorkflowRunResult:
        return cls.model_validate(status.model_dump())


def _service(ctx: Context) -> WorkflowService:
    service = dependencies(ctx).workflows
    if service is None:
        raise ToolError("workflows are not available in this server")
    return service


async def run_workflow(
    ctx: Context,
    workflow: Annotated[str | dict[str, JsonValue], Field(
        description="A saved workflow's name, or a definition object (see the tool description).")],
    inputs: Annotated[dict[str, JsonValue] | None, Field(description="Values for the workflow's inputs.")] = None,
    wait: Annotated[bool, Field(description="Wait for the run to end (bounded by wait_s).")] = True,
    wait_s: Annotated[float, Field(description="Longest wait, seconds; then the run goes on in the background.",
                                   gt=0, le=3600)] = DEFAULT_WAIT_S,
    run_id: Annotated[str | None, Field(description="Your own id for the run (idempotency key).",
                                        pattern=RUN_ID_PATTERN)] = None,
) -> RunStatus:
    service = _service(ctx)
    principal = caller(ctx)
    owner_filter = principal.owner_filter
    with core_errors():
        try:
            started_id, _ = await service.start(workflow, inputs, run_id, owner=principal.owner_id,
                                                owner_filter=owner_filter,
                                                inline_tool_steps=principal.role == "admin")
        except ToolStepsForbidden:
            require_role(ctx, "admin", "run_workflow with tool steps")
            raise
        if not wait or AS_TASK.get():  # as a task, the task follows the run
            return await service.status(started_id, owner_filter)

        async def progress(done: float, total: float, message: str) -> None:
            await ctx.report_progress(done, total, message)

        return await service.wait(started_id, wait_s, progress, owner_filter)


async def workflow_run(
    ctx: Context,
    run_id: Annotated[str | None, Field(description="The run (from run_workflow); omit to list recent runs.",
                                        pattern=RUN_ID_PATTERN)] = None,
    action: Annotated[Literal["status", "cancel", "approve", "reject"], Field(
        description="What to do with the run.")] = "status",
    step: Annotated[str | None, Field(description="approve/reject: the waiting approval step's id.",
                                      max_length=600)] = None,
    comment: Annotated[str | None, Field(description="approve/reject: kept with the decision.",
                                         max_length=2_000)] = None,
    by: Annotated[str | None, Field(description="approve/reject: who decides.", max_length=200)] = None,
    status: Annotated[Literal["pending", "running", "waiting", "completed", "failed", "cancelled"] | None, Field(
        description="Listing: only runs in this status.")] = None,
    limit: Annotated[int, Field(description="Listing: runs per page.", ge=1, le=100)] = 20,
    offset: Annotated[int, Field(description="Listing: runs to skip.", ge=0)] = 0,
) -> WorkflowRunResult:
    service = _service(ctx)
    owner_filter = caller(ctx).owner_filter  # another owner's run is "not found", like an unknown id
    with core_errors():
        if run_id is None:
            if action != "status":
                raise ToolError(f"action {action!r} needs a run_id")
            runs = await service.list(status, limit + 1, offset, owner_filter)
            more = len(runs) > limit
            return WorkflowRunResult(runs=runs[:limit], next_offset=offset + limit if more else None)
        if action == "cancel":
            return WorkflowRunResult.of(await service.cancel(run_id, owner_filter))
        if action in ("approve", "reject"):
            return WorkflowRunResult.of(await service.decide(
                run_id, "approved" if action == "approve" else "rejected", step=step, by=by, comment=comment,
                owner_filter=owner_filter))
        return WorkflowRunResult.of(await service.status(run_id, owner_filter))


async def save_workflow(
    ctx: Context,
    definition: Annotated[dict[str, JsonValue] | str, Field(
        description="The definition object (name, inputs, steps, outputs, max_parallel), or JSON/YAML text.")],
) -> SavedWorkflow:
    require_role(ctx, "admin", "save_workflow")
    service = _service(ctx)
    with core_errors():
        saved = await service.save(definition)
    if saved.changed:
        try:
            await ctx.notify_resources_changed()
        except Exception:  # noqa: BLE001 - notification is best effort
            pass
    return saved


def run_tool() -> Tool:
    """The ``run_workflow`` tool."""
    return make_tool(run_workflow, name="run_workflow", description=RUN_DESCRIPTION,
                     annotations=ToolAnnotations(title="Run a workflow", read_only_hint=False,
                                                 destructive_hint=False, idempotent_hint=False,
                                                 open_world_hint=True))


def run_action_tool() -> Tool:
    """The ``workflow_run`` tool."""
    return make_tool(workflow_run, name="workflow_run", description=RUN_ACTION_DESCRIPTION,
                     annotations=ToolAnnotations(title="Follow, cancel or approve a workflow run",
                                                 read_only_hint=False, destructive_hint=True,
                                                 idempotent_hint=False, open_world_hint=False))


def save_tool() -> Tool:
    """The ``save_workflow`` tool."""
    return make_tool(save_workflow, name="save_workflow", description=SAVE_DESCRIPTION,
                     annotations=ToolAnnotations(title="Save a workflow definition", read_only_hint=False,
                                                 destructive_hint=False, idempotent_hint=True,
                                                 open_world_hint=False))

