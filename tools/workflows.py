"""The ``run_workflow``, ``workflow_run`` and ``save_workflow`` tools."""

import json
from typing import TYPE_CHECKING, Annotated, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp_types import ToolAnnotations
from pydantic import Field, JsonValue

from server.models import DeferredModel
from server.security import caller
from server.workflows.approval_prompts import wait_asking
from server.workflows.model import ToolStepsForbidden
from server.workflows.results import RUN_ID_PATTERN, RunProgress, RunStatus, SavedWorkflow, StepReport
from tools._arguments import Guard
from tools._context import AS_TASK, core_errors, dependencies, make_tool, require_role
from tools._elicitation import approver_asker

if TYPE_CHECKING:  # the service (and the workflow engine under it) loads with the first workflow call
    from server.workflows.service import WorkflowService

RUN_DESCRIPTION = """Run a durable workflow: a DAG of steps (orchestrate, consensus, pattern, tool, workflow,
approval, agent, team). `workflow`: a saved name or a definition like {"name":"b","steps":[{"id":"a","kind":
"orchestrate","with":{"prompt":"Sum up {{ inputs.text }}"}},{"id":"c","kind":"pattern","depends_on":["a"],
"with":{...}}],"outputs":{"s":"{{ steps.a.output.text }}"}}; steps may add when, retry, timeout_s, on_error.
Returns after `wait_s` at most; the run goes on (see workflow_run)."""

RUN_ACTION_DESCRIPTION = """A workflow run's status, or cancel / approve / reject it (`step`: which approval;
you are the approver). Without `run_id`: recent runs, newest first, by `status`, paged."""

SAVE_DESCRIPTION = """Validate a workflow definition (an object or JSON/YAML text; every problem is listed) and
save it as its name's next version. Needs admin."""


DEFAULT_WAIT_S = 45.0


class WorkflowRunResult(DeferredModel):
    """One run's status (with `run_id`), or a page of recent runs (without)."""

    run_id: str | None = None
    workflow: str | None = None
    status: str | None = None
    outputs: dict[str, JsonValue] | None = None
    error: str | None = None
    steps: list[StepReport] | None = None
    progress: RunProgress | None = None
    created_at: float | None = None
    updated_at: float | None = None
    runtime: str | None = None
    runs: list[RunStatus] | None = None
    next_offset: int | None = None

    @classmethod
    def of(cls, status: RunStatus) -> "WorkflowRunResult":
        """``status``'s fields as they are: already validated, so a run of a thousand steps is not dumped and
        validated again on the event loop."""
        return cls.model_construct(**{name: getattr(status, name) for name in RunStatus.model_fields})


def _service(ctx: Context) -> "WorkflowService":
    service = dependencies(ctx).workflows
    if service is None:
        raise ToolError("workflows are not available in this server")
    return service


async def run_workflow(
    ctx: Context,
    workflow: str | dict[str, JsonValue],
    inputs: Annotated[dict[str, JsonValue] | None, Field(description="Free-form JSON.")] = None,
    wait: bool = True,
    wait_s: Annotated[float, Guard(gt=0, le=3600)] = DEFAULT_WAIT_S,
    run_id: Annotated[str | None, Field(description="Idempotency key.", pattern=RUN_ID_PATTERN)] = None,
) -> RunStatus:
    service = _service(ctx)
    principal = caller(ctx)
    with core_errors():
        try:
            started_id, _ = await service.start(workflow, inputs, run_id, caller=principal)
        except ToolStepsForbidden:
            require_role(ctx, "admin", "run_workflow with tool steps")
            raise
        if not wait or AS_TASK.get():  # as a task, the task follows the run
            return await service.status(started_id, principal)

        async def progress(done: float, total: float, message: str) -> None:
            await ctx.report_progress(done, total, message)

        ask = approver_asker(ctx)  # approvals the caller may decide are put to the person behind the client
        if ask is not None:
            return await wait_asking(service, started_id, wait_s, progress, principal, ask)
        return await service.wait(started_id, wait_s, progress, principal)


async def workflow_run(
    ctx: Context,
    run_id: Annotated[str | None, Field(pattern=RUN_ID_PATTERN)] = None,
    action: Literal["status", "cancel", "approve", "reject"] = "status",
    step: Annotated[str | None, Field(max_length=600)] = None,
    comment: Annotated[str | None, Field(max_length=2_000)] = None,
    status: Literal["pending", "running", "waiting", "completed", "failed", "cancelled"] | None = None,
    limit: Annotated[int, Guard(ge=1, le=100)] = 20,
    offset: Annotated[int, Guard(ge=0)] = 0,
) -> WorkflowRunResult:
    service = _service(ctx)
    principal = caller(ctx)  # another owner's run is "not found", like an unknown id
    with core_errors():
        if run_id is None:
            if action != "status":
                raise ToolError(f"action {action!r} needs a run_id")
            runs = await service.list(status, limit + 1, offset, principal)
            more = len(runs) > limit
            return WorkflowRunResult(runs=runs[:limit], next_offset=offset + limit if more else None)
        if action == "cancel":
            return WorkflowRunResult.of(await service.cancel(run_id, principal))
        if action in ("approve", "reject"):  # the approver is the authenticated caller, never an argument
            return WorkflowRunResult.of(await service.decide(
                run_id, "approved" if action == "approve" else "rejected", step=step, comment=comment,
                caller=principal))
        return WorkflowRunResult.of(await service.status(run_id, principal))


async def save_workflow(
    ctx: Context,
    definition: dict[str, JsonValue] | str,
) -> SavedWorkflow:
    require_role(ctx, "admin", "save_workflow")
    service = _service(ctx)
    with core_errors():
        saved = await service.save(definition, caller=caller(ctx))
    if saved.changed:
        try:
            await ctx.notify_resources_changed()
        except Exception:  # noqa: BLE001 - notification is best effort
            pass
    return saved


_LISTED_AT_MOST = 10
"""Steps (waiting, failed) and runs a text rendering names one by one; the structured content has them all."""
_OUTPUTS_CHARS = 2_000
"""How long an error or outputs line of a text rendering may be."""


def render_run(result: RunStatus | WorkflowRunResult) -> str:
    """The text content of a run's status, or of a page of runs: a few lines whatever the run's size (a run of a
    thousand steps is serialised once, as the structured content, not a second time as its text)."""
    if isinstance(result, WorkflowRunResult) and result.run_id is None:
        runs = result.runs or []
        lines = [f"{len(runs)} run(s)" + (f"; more from offset {result.next_offset}" if result.next_offset else "")]
        lines += [f"- {_headline(run)}" for run in runs]
        return "\n".join(lines)
    lines = [_headline(result)]
    steps = result.steps or []
    for label, status in (("waiting for a decision", "waiting"), ("failed", "failed")):
        named = [step for step in steps if step.status == status]
        if named:
            shown = ", ".join(step.id + (f" ({step.error_class or step.error})" if status == "failed" and
                                         (step.error_class or step.error) else "") for step in named[:_LISTED_AT_MOST])
            more = f" and {len(named) - _LISTED_AT_MOST} more" if len(named) > _LISTED_AT_MOST else ""
            lines.append(f"{label}: {shown}{more}")
    if result.error:
        lines.append(_cut(f"error: {result.error}"))
    if result.outputs:
        lines.append(_cut("outputs: " + json.dumps(result.outputs, ensure_ascii=False, separators=(",", ":"),
                                                   default=str)))
    return "\n".join(lines)


def _cut(line: str) -> str:
    if len(line) <= _OUTPUTS_CHARS:
        return line
    return line[:_OUTPUTS_CHARS] + "… (the whole result is the structured content)"


def _headline(run: RunStatus | WorkflowRunResult) -> str:
    progress = run.progress
    told = "" if progress is None else f"; {progress.message or f'{progress.done}/{progress.total} steps done'}"
    return f"run {run.run_id} ({run.workflow}): {run.status}{told}"


def run_tool() -> Tool:
    """The ``run_workflow`` tool."""
    return make_tool(run_workflow, name="run_workflow", description=RUN_DESCRIPTION, render=render_run,
                     annotations=ToolAnnotations(title="Run a workflow", read_only_hint=False,
                                                 destructive_hint=False, idempotent_hint=False,
                                                 open_world_hint=True),
                     redirects={"goal": "unknown argument `goal`: run_workflow runs `workflow` (a saved name or a "
                                        "definition); plan_workflow(goal=…) drafts a workflow from a goal"})


def run_action_tool() -> Tool:
    """The ``workflow_run`` tool."""
    return make_tool(workflow_run, name="workflow_run", description=RUN_ACTION_DESCRIPTION, render=render_run,
                     annotations=ToolAnnotations(title="Follow, cancel or approve a workflow run",
                                                 read_only_hint=False, destructive_hint=True,
                                                 idempotent_hint=False, open_world_hint=False))


def save_tool() -> Tool:
    """The ``save_workflow`` tool."""
    return make_tool(save_workflow, name="save_workflow", description=SAVE_DESCRIPTION,
                     annotations=ToolAnnotations(title="Save a workflow definition", read_only_hint=False,
                                                 destructive_hint=False, idempotent_hint=True,
                                                 open_world_hint=False))

