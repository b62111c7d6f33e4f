"""The product's task backend: a ``run_workflow`` call as an MCP task is the workflow run itself.

The task id is the run id; ``tasks/get`` reads the run's status (its durable record and the runtime's step
records), so a task survives a restart and answers from any replica; ``tasks/cancel`` cancels the run. Who may see
a task is who may see the run: its starter, and admins (the run record's owner, checked by the workflow service).

Status mapping (SEP-2663): pending, running and waiting (an approval open) → ``working`` with the run's progress
as ``statusMessage``; completed → ``completed`` with the run's status as the tool result; failed → ``completed``
with ``isError`` (the tool ran and reports the failure; ``failed`` is for protocol errors); cancelled →
``cancelled``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mcp import MCPError
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp_types import CallToolRequestParams, CallToolResult
from mcp_types.jsonrpc import INVALID_PARAMS

from server.app.tasks import TaskSupport, TaskView, principal_of, tool_result
from tools._context import AS_TASK

if TYPE_CHECKING:
    from server.workflows.service import RunStatus, WorkflowService

TASK_TOOLS: Mapping[str, TaskSupport] = {"run_workflow": "optional"}


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
        return task_view(status)

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
        if view is not None and responses:
            raise MCPError(code=INVALID_PARAMS, message=f"task {task_id} asks for no input; decide approvals with "
                                                        "workflow_run approve/reject")
        return view


def task_view(status: RunStatus) -> TaskView:
    """The task a run's status shows (see the module docstring for the mapping)."""
    created = status.created_at or 0.0
    updated = status.updated_at or created
    if status.status == "completed":
        return TaskView(task_id=status.run_id, status="completed", created_at=created, updated_at=updated,
                        result=tool_result(status.model_dump(mode="json")))
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


def _service(ctx: ServerRequestContext[Any, Any]) -> WorkflowService | None:
    return getattr(ctx.lifespan_context, "workflows", None)
