"""The client side of the MCP tasks extension for tests: a real ``mcp.Client`` that declares
``io.modelcontextprotocol/tasks``, gets ``CreateTaskResult`` back from ``tools/call``, and sends ``tasks/*``."""

from __future__ import annotations

from typing import Any, Literal

from mcp import Client
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp_types import CallToolResult, Request, Result
from pydantic import TypeAdapter

from server.app.tasks import TASKS_EXTENSION, TaskParams, TaskUpdateParams


class CreatedTask(Result):
    """A ``CreateTaskResult`` (SEP-2663)."""

    result_type: Literal["task"] = "task"
    task_id: str
    status: str
    created_at: str
    last_updated_at: str
    ttl_ms: int | None = None
    poll_interval_ms: int | None = None
    status_message: str | None = None


async def _unresolved(result: CreatedTask, ctx: ClaimContext) -> CallToolResult:
    raise AssertionError("tests read tasks with tasks/get; call tools with allow_claimed=True")


class TasksClient(ClientExtension):
    """Declares the tasks extension and parses the ``task`` result type."""

    identifier = TASKS_EXTENSION

    def claims(self) -> tuple[ResultClaim[Any], ...]:
        return (ResultClaim(result_type="task", model=CreatedTask, resolve=_unresolved),)


_ANY = TypeAdapter(dict[str, Any])


async def start_task(client: Client, tool: str, arguments: dict[str, Any]) -> CreatedTask | CallToolResult:
    return await client.session.call_tool(tool, arguments, allow_claimed=True)


async def tasks_request(client: Client, method: str, task_id: str, **responses: Any) -> dict[str, Any]:
    """``tasks/get`` / ``tasks/cancel`` (or ``tasks/update`` with ``input_responses``), the raw result."""
    params = TaskUpdateParams(task_id=task_id, input_responses=responses["input_responses"]) \
        if method == "tasks/update" else TaskParams(task_id=task_id)
    return await client.session.send_request(Request[Any, str](method=method, params=params), _ANY)
