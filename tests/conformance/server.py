"""The conformance fixture server: the product's server plus the official suite's fixture tools.

    python tests/conformance/server.py --port N [--database PATH]

Builds the product's MCP server (``server.app.assembly.build_server``: its tools, resources, prompts, the tasks
extension, ``logging/setLevel`` and the SDK's per-request capability checks) and serves it over Streamable HTTP
on 127.0.0.1:N at ``/mcp``, with the fixture tools the conformance suite 0.2.0-alpha.12 calls by name (``greet``,
``slow_compute``, ``failing_job``, ``protocol_error_job``, ``confirm_delete``, ``multi_input``,
``test_tool_with_task``, ``test_missing_capability``, ``test_tool_with_logging``, ``test_trigger_*_change``). Their tasks run in memory (:class:`JobTasks`, a task
backend of this file); the product's own tasks are workflow runs. Nothing here ships in the installed product.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any

import anyio
from anyio.abc import TaskGroup
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mcp import MCPError  # noqa: E402
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext  # noqa: E402
from mcp.server.mcpserver import Context, Elicit, Resolve, Sample  # noqa: E402
from mcp.server.mcpserver.exceptions import ToolError  # noqa: E402
from mcp_types import CallToolRequestParams, CreateMessageResult, SamplingMessage, TextContent  # noqa: E402
from mcp_types.jsonrpc import INTERNAL_ERROR  # noqa: E402

from server.app.protocol_logging import ProtocolLog  # noqa: E402
from server.app.tasks import TaskSupport, TaskView, principal_of  # noqa: E402

SUPPORT: Mapping[str, TaskSupport] = {
    "slow_compute": "optional", "failing_job": "required", "protocol_error_job": "optional",
    "confirm_delete": "optional", "multi_input": "optional", "test_tool_with_task": "required",
}
_JOB: ContextVar[Job | None] = ContextVar("job", default=None)
PROTOCOL_LOG = ProtocolLog()


class Job:
    """One fixture task: runs the tool call in the background; parks in ``input_required`` while it asks."""

    def __init__(self, owner: str | None) -> None:
        self.id, self.owner = f"job-{uuid.uuid4().hex}", owner
        self.created_at = self.updated_at = time.time()
        self.status = "working"
        self.result: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.pending: dict[str, Any] = {}
        self.answers: dict[str, Any] = {}
        self.answered = anyio.Event()
        self.began = anyio.Event()
        self.scope = anyio.CancelScope()

    def view(self) -> TaskView:
        return TaskView(task_id=self.id, status=self.status, created_at=self.created_at, updated_at=self.updated_at,
                        result=self.result, error=self.error, input_requests=dict(self.pending) or None)

    def settle(self, status: str, **fields: Any) -> None:
        if self.status in ("completed", "failed", "cancelled"):
            return
        self.status, self.updated_at = status, time.time()
        for name, value in fields.items():
            setattr(self, name, value)

    async def ask(self, requests: Mapping[str, Any]) -> dict[str, Any]:
        """Park the task until every request in ``requests`` is answered through ``tasks/update``."""
        self.pending.update(requests)
        self.settle("input_required")
        while any(key not in self.answers for key in requests):
            self.answered = anyio.Event()
            await self.answered.wait()
        self.status, self.updated_at = "working", time.time()
        return {key: self.answers[key] for key in requests}


def began() -> Job | None:
    """Called by a fixture tool's body when it starts: the call has become a task (its inputs are resolved)."""
    job = _JOB.get()
    if job is not None:
        job.began.set()
    return job


class JobTasks:
    """:class:`server.app.tasks.TaskBackend` for the fixture tools, in memory, for this process's life."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.group: TaskGroup | None = None

    def support(self, tool: str) -> TaskSupport | None:
        return SUPPORT.get(tool)

    async def create(self, ctx: ServerRequestContext[Any, Any], params: CallToolRequestParams,
                     call_next: CallNext) -> TaskView | HandlerResult:
        assert self.group is not None
        job = Job(principal_of(ctx).owner_id)
        ended = anyio.Event()
        outcome: list[HandlerResult] = []

        async def run() -> None:
            _JOB.set(job)
            with job.scope:
                try:
                    result = await call_next(ctx)
                    outcome.append(result)
                    dumped = result.model_dump(by_alias=True, mode="json", exclude_none=True) \
                        if isinstance(result, BaseModel) else dict(result or {})
                    job.settle("completed", result=dumped)
                except MCPError as exc:
                    job.settle("failed", error={"code": exc.error.code, "message": exc.error.message})
                except Exception as exc:  # noqa: BLE001 - a protocol-level failure of the task
                    job.settle("failed", error={"code": INTERNAL_ERROR, "message": type(exc).__name__})
            if job.scope.cancelled_caught:
                job.settle("cancelled")
            ended.set()

        self.group.start_soon(run)
        with anyio.fail_after(30):
            async with anyio.create_task_group() as first:
                async def on(event: anyio.Event) -> None:
                    await event.wait()
                    first.cancel_scope.cancel()
                first.start_soon(on, job.began)
                first.start_soon(on, ended)
        if not job.began.is_set() and outcome and _input_required(outcome[0]):
            return outcome[0]  # a multi-round-trip round before the task exists
        self.jobs[job.id] = job
        return job.view()

    def _find(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> Job | None:
        job = self.jobs.get(task_id)
        return job if job is not None and job.owner == principal_of(ctx).owner_id else None

    async def get(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> TaskView | None:
        job = self._find(ctx, task_id)
        return None if job is None else job.view()

    async def cancel(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> TaskView | None:
        job = self._find(ctx, task_id)
        if job is None:
            return None
        job.settle("cancelled")
        job.scope.cancel()
        return job.view()

    async def update(self, ctx: ServerRequestContext[Any, Any], task_id: str,
                     responses: Mapping[str, Any]) -> TaskView | None:
        job = self._find(ctx, task_id)
        if job is None:
            return None
        for key, value in responses.items():
            if key in job.pending:
                job.pending.pop(key)
                job.answers[key] = value
        job.answered.set()
        return job.view()


def _input_required(result: HandlerResult) -> bool:
    kind = getattr(result, "result_type", None) if isinstance(result, BaseModel) else (result or {}).get("resultType")
    return kind == "input_required"


def _elicit(message: str, **properties: Any) -> dict[str, Any]:
    return {"method": "elicitation/create", "params": {"mode": "form", "message": message, "requestedSchema": {
        "type": "object", "properties": properties}}}


# --- the suite's fixture tools ------------------------------------------------------------------------------

def greet(name: str) -> str:
    """Greet someone by name (sync only)."""
    return f"Hello, {name}!"


async def slow_compute(seconds: float = 1, label: str = "") -> str:
    """Sleep `seconds` seconds, then answer (runs as a task when the client supports tasks)."""
    began()
    await anyio.sleep(seconds)  # bounded-wait, pacing: the work this tool stands for takes `seconds`
    return f"computed {label} after {seconds}s"


async def failing_job() -> str:
    """Fail with a tool execution error after about a second (task only)."""
    began()
    await anyio.sleep(1)  # bounded-wait, pacing: the job works a second before it fails (the scenario watches it working)
    raise ToolError("failing_job failed, as it always does")


async def protocol_error_job() -> str:
    """Fail with a protocol-level error (a task that ends failed)."""
    began()
    raise MCPError(code=INTERNAL_ERROR, message="protocol_error_job: internal failure")


async def confirm_delete(filename: str = "file.txt") -> str:
    """Ask for confirmation through the task's inputRequests, then answer."""
    job = began()
    if job is None:
        return f"{filename} not deleted: confirmation needs a task"
    answers = await job.ask({"confirm": _elicit(f"Delete {filename}?", confirm={"type": "boolean"})})
    return f"{filename} deleted" if answers["confirm"].get("action") == "accept" else f"{filename} kept"


async def multi_input() -> str:
    """Ask two questions at once through the task's inputRequests."""
    job = began()
    if job is None:
        return "multi_input needs a task"
    answers = await job.ask({"name": _elicit("Your name?", name={"type": "string"}),
                             "confirm": _elicit("Proceed?", confirm={"type": "boolean"})})
    return f"answers: {sorted(answers)}"


class UserName(BaseModel):
    name: str


def ask_user_name() -> Elicit[UserName]:
    return Elicit("What is your name?", UserName)


async def test_tool_with_task(user_name: Annotated[UserName, Resolve(ask_user_name)]) -> str:
    """Ask for a name (a multi-round-trip round), then run as a task that greets it."""
    began()
    await anyio.sleep(0.2)  # bounded-wait, pacing: the task's work, after the elicited name
    return f"Hello, {user_name.name}, from a task!"


def sample_hello() -> Sample:
    return Sample([SamplingMessage(role="user", content=TextContent(type="text", text="Say hello"))], max_tokens=20)


async def test_missing_capability(answer: Annotated[CreateMessageResult, Resolve(sample_hello)]) -> str:
    """Needs the client's sampling capability (undeclared: -32021)."""
    return getattr(answer.content, "text", "")


async def test_tool_with_logging(ctx: Context) -> str:
    """Send three info log messages while running (through the product's ProtocolLog)."""
    session, request_id = ctx.request_context.session, ctx.request_context.request_id
    for message in ("Tool execution started", "Tool processing data", "Tool execution completed"):
        await PROTOCOL_LOG.send(session, "info", message, "conformance", related_request_id=request_id)
        await anyio.sleep(0.05)  # bounded-wait, pacing: three messages spread over the call, as the scenario expects
    return "logged three messages"


async def test_trigger_prompt_change(ctx: Context) -> str:
    """Announce a change of the prompt list (to subscriptions/listen streams)."""
    await ctx.notify_prompts_changed()
    return "prompt list changed"


async def test_trigger_tool_change(ctx: Context) -> str:
    """Announce a change of the tool list (to subscriptions/listen streams)."""
    await ctx.notify_tools_changed()
    return "tool list changed"


FIXTURES = (greet, slow_compute, failing_job, protocol_error_job, confirm_delete, multi_input, test_tool_with_task,
            test_missing_capability, test_tool_with_logging, test_trigger_prompt_change, test_trigger_tool_change)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database", default=None, help="SQLite file (default: a fresh one in a temp folder)")
    args = parser.parse_args(argv)
    import tempfile

    from server.app.assembly import build_server, open_dependencies, open_store
    from server.app.transports import serve
    from server.config import Config

    database = Path(args.database or Path(tempfile.mkdtemp(prefix="conformance-")) / "state.db")
    config = Config()
    jobs = JobTasks()

    async def run() -> None:
        async with open_dependencies(config, store_factory=lambda: open_store(database)) as deps, \
                anyio.create_task_group() as group:
            jobs.group = group
            mcp = build_server(config, store_factory=lambda: deps.store, shared=deps, task_backends=[jobs],
                               protocol_log=PROTOCOL_LOG)
            for fixture in FIXTURES:
                mcp.add_tool(fixture)
            await serve(mcp, "http", host="127.0.0.1", port=args.port)
            group.cancel_scope.cancel()

    anyio.run(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
