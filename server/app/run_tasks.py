"""The product's task backend: a ``run_workflow`` call as an MCP task is the workflow run itself, and a
``consensus`` call as a task is a one-step consensus run (:mod:`server.workflows.consensus_runs`).

The task id is the run id; ``tasks/get`` reads the run's status (its durable record and the runtime's step
records), so a task survives a restart and answers from any replica; ``tasks/cancel`` cancels the run. Who may see
a task is who may see the run: its starter, and admins (the run record's owner, checked by the workflow service).

Status mapping (SEP-2663): pending, running and waiting (an approval open) → ``working`` with the run's progress
as ``statusMessage``; completed → ``completed`` with the run's status as the tool result (a consensus run: the
consensus result, as the direct call returns it); failed → ``completed`` with ``isError`` (the tool ran and reports the failure; ``failed`` is for protocol errors); cancelled →
``cancelled``.

Approvals (SEP-2663 ``input_required``): while a run waits on approval steps that the caller may decide (the
same separation-of-duties rules as ``workflow_run`` approve/reject) and the request declares form elicitation,
the task is ``input_required`` and lists one ``elicitation/create`` form per step (approve/reject + comment,
keyed ``approve:<step>``); ``tasks/update`` with an accepted form decides the step as the authenticated caller.
Anyone else sees ``working`` and decides with ``workflow_run``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mcp import MCPError
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.elicitation import render_elicitation_schema
from mcp_types import CallToolRequestParams, CallToolResult, ElicitRequest, ElicitRequestFormParams, ElicitResult
from mcp_types.jsonrpc import INVALID_PARAMS
from pydantic import ValidationError

from server.app.tasks import TaskSupport, TaskView, principal_of, tool_result
from server.workflows.consensus_runs import consensus_output
from tools._context import AS_TASK
from tools._elicitation import ApprovalForm

if TYPE_CHECKING:
    from server.workflows.service import RunStatus, WorkflowService

TASK_TOOLS: Mapping[str, TaskSupport] = {"run_workflow": "optional", "consensus": "optional"}
APPROVAL_KEY = "approve:"
"""The ``inputRequests`` key of an approval step: this, then the step's id."""


class RunTasks:
    """:class:`server.app.tasks.TaskBackend` over the workflow service of the request's dependencies."""

    def support(self, tool: str) -> TaskSupport | None:
        return TASK_TOOLS.get(tool)

    async def create(self, ctx: ServerRequestContext[Any, Any], params: CallToolRequestParams,
                     call_next: CallNext) -> TaskView | HandlerResult:
        token = AS_TASK.set(True)  # the tool validates and starts the run as always, and returns at once
        try:
            result = await call_next(ctx)
        finally:
            AS_TASK.reset(token)
        if not isinstance(result, CallToolResult) or result.is_error or not result.structured_content:
            return result  # refused before a run existed: the error as the tool gave it
        view = await self.get(ctx, str(result.structured_content["run_id"]))
        if view is None:  # the run was recorded before its id was returned: it cannot be missing
            raise MCPError(code=INVALID_PARAMS, message="the started run is not visible to its starter")
        return view

    async def get(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> TaskView | None:
        service = _service(ctx)
        if service is None:
            return None
        from server.workflows.service import RunNotFound

        try:
            status = await service.status(task_id, principal_of(ctx))
        except RunNotFound:
            return None
        view = task_view(status)
        if status.status == "waiting" and _elicits(ctx):
            _, steps = await service.approvals_for(task_id, principal_of(ctx))
            if steps:
                requests = {APPROVAL_KEY + step: approval_request(task_id, step) for step in steps}
                return view.model_copy(update={"status": "input_required", "input_requests": requests})
        return view

    async def cancel(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> TaskView | None:
        service = _service(ctx)
        if service is None:
            return None
        from server.workflows.service import RunConflict

        view = await self.get(ctx, task_id)
        if view is None or view.status in ("completed", "failed", "cancelled"):
            return view  # unknown, or finished already: cancelling again is a no-op
        try:
            return task_view(await service.cancel(task_id, principal_of(ctx)))
        except RunConflict:  # finished meanwhile
            return await self.get(ctx, task_id)

    async def update(self, ctx: ServerRequestContext[Any, Any], task_id: str,
                     responses: Mapping[str, Any]) -> TaskView | None:
        view = await self.get(ctx, task_id)
        if view is None or not responses:
            return view
        asked = view.input_requests or {}
        unknown = sorted(set(responses) - set(asked))
        if unknown:
            raise MCPError(code=INVALID_PARAMS, message=f"task {task_id} asks for no input {unknown[0]!r}"
                           f"{'; it asks for ' + ', '.join(sorted(asked)) if asked else ''}")
        for key, response in responses.items():
            try:
                answer = ElicitResult.model_validate(response)
                form = ApprovalForm.model_validate(answer.content) if answer.action == "accept" else None
            except ValidationError as exc:
                raise MCPError(code=INVALID_PARAMS, message=f"{key}: not an answer to the approval form "
                                                            f"({exc.error_count()} problem(s))") from None
            if form is not None:  # declined or cancelled: the step waits, as without elicitation
                await self._decide(ctx, task_id, key.removeprefix(APPROVAL_KEY), form)
        return await self.get(ctx, task_id)

    async def _decide(self, ctx: ServerRequestContext[Any, Any], task_id: str, step: str, form: ApprovalForm) -> None:
        from server.errors import OrchestrationError

        service = _service(ctx)
        assert service is not None
        try:
            await service.decide(task_id, "approved" if form.decision == "approve" else "rejected", step=step,
                                 comment=form.comment or None, caller=principal_of(ctx))
        except OrchestrationError as exc:  # decided meanwhile, or no longer the caller's to decide
            raise MCPError(code=INVALID_PARAMS, message=str(exc)) from None


def task_view(status: RunStatus) -> TaskView:
    """The task a run's status shows (see the module docstring for the mapping)."""
    created = status.created_at or 0.0
    updated = status.updated_at or created
    if status.status == "completed":
        consensus = consensus_output(status)
        return TaskView(task_id=status.run_id, status="completed", created_at=created, updated_at=updated,
                        result=tool_result(status.model_dump(mode="json") if consensus is None else consensus))
    if status.status == "failed":
        return TaskView(task_id=status.run_id, status="completed", created_at=created, updated_at=updated,
                        status_message=status.error, result=tool_result(status.model_dump(mode="json"),
                                                                        is_error=True))
    if status.status == "cancelled":
        return TaskView(task_id=status.run_id, status="cancelled", created_at=created, updated_at=updated)
    message = status.progress.message
    if status.status == "waiting":
        message = f"{message} (approve or reject with workflow_run)"
    return TaskView(task_id=status.run_id, status="working", created_at=created, updated_at=updated,
                    status_message=message)


def approval_request(run_id: str, step: str) -> dict[str, Any]:
    """The ``elicitation/create`` form that asks for a decision on ``step`` (wire form)."""
    message = f"Run {run_id} waits for your approval of step {step!r}. Approve or reject it."
    request = ElicitRequest(params=ElicitRequestFormParams(message=message,
                                                           requested_schema=render_elicitation_schema(ApprovalForm)))
    return request.model_dump(by_alias=True, mode="json", exclude_none=True)


def _elicits(ctx: ServerRequestContext[Any, Any]) -> bool:
    """Whether this request's client declared form elicitation."""
    capabilities = ctx.session.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    return elicitation is not None and (elicitation.form is not None or elicitation.url is None)


def _service(ctx: ServerRequestContext[Any, Any]) -> WorkflowService | None:
    return getattr(ctx.lifespan_context, "workflows", None)
