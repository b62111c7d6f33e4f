"""MCP Tasks: long tool calls as tasks the client polls (SEP-2663, the ``io.modelcontextprotocol/tasks`` extension
of the 2026-07-28 revision), served through the SDK's extension hook (:class:`mcp.server.extension.Extension`).

What the wire looks like (as the official conformance suite 0.2.0-alpha.12 checks it):

- The server advertises the extension under ``capabilities.extensions``. A client opts in per request by naming it
  in ``_meta["io.modelcontextprotocol/clientCapabilities"].extensions``.
- ``tools/call`` of a task-supporting tool from a client that opted in returns a ``CreateTaskResult``: a flat
  ``{resultType: "task", taskId, status, createdAt, lastUpdatedAt, ttlMs, pollIntervalMs}``, once the task is
  durable (a ``tasks/get`` right after it resolves). Without the opt-in the tool runs synchronously as before;
  a tool that can only run as a task answers -32021 naming the extension.
- ``tasks/get`` returns the task with, once ``completed``, the tool's result inlined under ``result`` (a tool
  error is ``completed`` with ``result.isError``); ``failed`` carries a JSON-RPC ``error`` instead; an
  ``input_required`` task lists its ``inputRequests``. ``tasks/update`` delivers ``inputResponses``;
  ``tasks/cancel`` asks a task to stop. Both answer an empty ``{resultType: "complete"}``; the state is seen on
  the next ``tasks/get``. An unknown task id (or another principal's) is -32602. ``tasks/result`` and
  ``tasks/list`` (removed in SEP-2663) are not served: -32601. Every ``tasks/*`` request without the opt-in is
  -32021. An ``Mcp-Name`` header, when sent, must equal ``taskId`` (-32020, SEP-2243).
- Handshake-era connections get no tasks: the SDK shapes every handshake-era ``tools/call`` result into a
  ``CallToolResult``, so the 2025-11-25 experimental task calls are not offered.

Where tasks live is a :class:`TaskBackend`'s business; the product's is :class:`RunTasks`: a ``run_workflow``
task *is* the workflow run (task id = run id), so it survives restarts and is visible from every replica, and it
is scoped like the run (its owner, and admins).
"""

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from mcp import MCPError
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver import require_client_extension
from mcp_types import CallToolRequestParams, RequestParams
from mcp_types.jsonrpc import HEADER_MISMATCH, INVALID_PARAMS
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, Field

from server.security import LOCAL, Principal, principal_from_scope

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
POLL_INTERVAL_MS = 500
"""The poll interval the server suggests, milliseconds."""

TaskStatus = Literal["working", "input_required", "completed", "failed", "cancelled"]
TaskSupport = Literal["optional", "required"]
"""``optional``: a task when the client opted in, else a synchronous call; ``required``: only ever a task."""


class TaskView(BaseModel):
    """A task as ``tasks/get`` shows it. Times: Unix seconds.

    Attributes:
        result: the tool's ``CallToolResult`` in wire form (``completed`` only).
        error: a JSON-RPC error object ``{code, message, data?}`` (``failed`` only).
        input_requests: server-made key → request (``elicitation/create`` …) (``input_required`` only).
    """

    task_id: str
    status: TaskStatus
    created_at: float
    updated_at: float
    status_message: str | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    input_requests: dict[str, Any] | None = None


class TaskBackend(Protocol):
    """Where tasks of some tools run and are kept. Every method takes the request's context (the caller is
    :func:`principal_of` it); a task of another principal is "unknown" (``None``), like a task that never was."""

    def support(self, tool: str) -> TaskSupport | None:
        """How ``tool`` runs as a task here (``None``: not a task of this backend)."""
        ...

    async def create(self, ctx: ServerRequestContext[Any, Any], params: CallToolRequestParams,
                     call_next: CallNext) -> TaskView | HandlerResult:
        """Start the call as a task, durable on return; or return a result to send as it is (a tool error, or an
        ``input_required`` round before the task exists)."""
        ...

    async def get(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> TaskView | None: ...

    async def cancel(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> TaskView | None:
        """Ask the task to stop (a finished task stays as it is)."""
        ...

    async def update(self, ctx: ServerRequestContext[Any, Any], task_id: str,
                     responses: Mapping[str, Any]) -> TaskView | None:
        """Deliver the client's answers to some of the task's ``inputRequests``."""
        ...


class TaskParams(RequestParams):
    """``tasks/get`` and ``tasks/cancel`` params."""

    task_id: str = Field(min_length=1, max_length=200)


class TaskUpdateParams(TaskParams):
    """``tasks/update`` params: answers keyed by the ``inputRequests`` keys they answer."""

    input_responses: dict[str, Any]


def principal_of(ctx: ServerRequestContext[Any, Any]) -> Principal:
    """The authenticated principal of a request (:data:`LOCAL` without authentication)."""
    scope = getattr(ctx.request, "scope", None)
    return LOCAL if scope is None else principal_from_scope(scope)


def client_opted_in(ctx: ServerRequestContext[Any, Any]) -> bool:
    """Whether this request's client declared the tasks extension (and speaks an era that can carry tasks)."""
    capabilities = ctx.session.client_capabilities
    declared = capabilities.extensions if capabilities is not None else None
    return bool(declared) and TASKS_EXTENSION in declared and ctx.protocol_version in MODERN_PROTOCOL_VERSIONS


class TasksExtension(Extension):
    """The tasks extension over one or more backends (asked in order; a tool belongs to the first that supports
    it, a task id to the first that knows it)."""

    identifier = TASKS_EXTENSION

    def __init__(self, backends: Sequence[TaskBackend]) -> None:
        self.backends = list(backends)

    def methods(self) -> Sequence[MethodBinding]:
        versions = frozenset(MODERN_PROTOCOL_VERSIONS)
        return (MethodBinding("tasks/get", TaskParams, self._get, versions),
                MethodBinding("tasks/update", TaskUpdateParams, self._update, versions),
                MethodBinding("tasks/cancel", TaskParams, self._cancel, versions))

    async def intercept_tool_call(self, params: CallToolRequestParams, ctx: ServerRequestContext[Any, Any],
                                  call_next: CallNext) -> HandlerResult:
        found = next(((b, s) for b in self.backends if (s := b.support(params.name)) is not None), None)
        if found is None:
            return await call_next(ctx)
        backend, support = found
        if not client_opted_in(ctx):
            if support == "required":
                require_client_extension(ctx, TASKS_EXTENSION)  # raises -32021 when not declared
                raise MCPError(code=INVALID_PARAMS, message=f"tool {params.name!r} runs only as a task, which "
                               f"needs protocol version {MODERN_PROTOCOL_VERSIONS[-1]}")
            return await call_next(ctx)
        outcome = await backend.create(ctx, params, call_next)
        if isinstance(outcome, TaskView):
            return {"resultType": "task", **_envelope(outcome)}
        return outcome

    async def _get(self, ctx: ServerRequestContext[Any, Any], params: TaskParams) -> dict[str, Any]:
        view = await self._each(ctx, params, lambda b: b.get(ctx, params.task_id))
        detail = _envelope(view)
        if view.status == "completed" and view.result is not None:
            detail["result"] = view.result
        elif view.status == "failed":
            detail["error"] = view.error or {"code": -32603, "message": "the task failed"}
        elif view.status == "input_required":
            detail["inputRequests"] = view.input_requests or {}
        return detail

    async def _cancel(self, ctx: ServerRequestContext[Any, Any], params: TaskParams) -> dict[str, Any]:
        await self._each(ctx, params, lambda b: b.cancel(ctx, params.task_id))
        return {}

    async def _update(self, ctx: ServerRequestContext[Any, Any], params: TaskUpdateParams) -> dict[str, Any]:
        await self._each(ctx, params, lambda b: b.update(ctx, params.task_id, params.input_responses))
        return {}

    async def _each(self, ctx: ServerRequestContext[Any, Any], params: TaskParams, ask: Any) -> TaskView:
        require_client_extension(ctx, TASKS_EXTENSION)
        headers = getattr(ctx.request, "headers", None)
        named = headers.get("mcp-name") if headers is not None else None
        if named is not None and named.strip() != params.task_id:
            raise MCPError(code=HEADER_MISMATCH, message="Mcp-Name header does not match params.taskId")
        for backend in self.backends:
            view = await ask(backend)
            if view is not None:
                return view
        raise MCPError(code=INVALID_PARAMS, message=f"unknown task {params.task_id!r}")


def _envelope(view: TaskView) -> dict[str, Any]:
    """The ``Task`` fields every task-shaped answer carries. Tasks are kept as long as their records
    (``ttlMs`` null: no expiry)."""
    fields: dict[str, Any] = {"taskId": view.task_id, "status": view.status, "createdAt": _iso(view.created_at),
                              "lastUpdatedAt": _iso(view.updated_at), "ttlMs": None,
                              "pollIntervalMs": POLL_INTERVAL_MS}
    if view.status_message:
        fields["statusMessage"] = view.status_message
    return fields


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def tool_result(structured: Mapping[str, Any], *, is_error: bool = False) -> dict[str, Any]:
    """A ``CallToolResult`` (wire form) carrying ``structured`` as structured content and as JSON text, the way
    the SDK answers a tool with an output schema."""
    text = json.dumps(structured, ensure_ascii=False, default=str)
    return {"content": [{"type": "text", "text": text}], "structuredContent": dict(structured), "isError": is_error}
