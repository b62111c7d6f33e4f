"""The MCP tasks extension through the in-memory client (2026-07-28): a ``run_workflow`` task's states on
``tasks/get`` (working with progress, completed with the result inlined, a failed run as completed + isError,
cancelled), gating without the opt-in, unknown ids, removed methods."""

from __future__ import annotations

from typing import Any

import pytest
from mcp import Client, MCPError
from mcp_types import Request
from pydantic import TypeAdapter

from server.app.assembly import build_server
from server.app.tasks import TaskParams
from server.store.memory import MemoryStore
from tests.fakes import Reply, fail, fake_config, fake_entry, fleet_for
from tests.services import until
from tests.tasks_client import CreatedTask, TasksClient, start_task, tasks_request

pytestmark = pytest.mark.anyio

GATE = {"name": "gate", "steps": [{"id": "review", "kind": "approval"}]}
ONE = {"name": "one", "steps": [{"id": "ask", "kind": "orchestrate", "with": {"prompt": "hi"}}],
       "outputs": {"text": "{{ steps.ask.output.text }}"}}


def server() -> tuple[Any, Any]:
    config = fake_config(fake_entry("alpha", model="a"))
    fleet = fleet_for(config)
    return build_server(config, store_factory=MemoryStore, provider_factory=fleet), fleet


async def settled(client: Client, task_id: str) -> dict[str, Any]:
    async def outcome() -> dict[str, Any] | None:
        task = await tasks_request(client, "tasks/get", task_id)
        return None if task["status"] == "working" else task

    return await until(outcome, 10, f"task {task_id} settled", interval_s=0.02)


async def test_a_run_as_a_task_moves_from_working_to_its_outcome() -> None:
    mcp, fleet = server()
    fleet["alpha"].script(Reply("hello"), fail("invalid_request"))
    async with Client(mcp, extensions=[TasksClient()]) as client:
        gate = await start_task(client, "run_workflow", {"workflow": GATE})
        assert isinstance(gate, CreatedTask) and gate.status == "working" and gate.ttl_ms is None
        working = await tasks_request(client, "tasks/get", gate.task_id)
        assert working["status"] == "working" and "result" not in working and "error" not in working
        assert await tasks_request(client, "tasks/cancel", gate.task_id) == {"resultType": "complete",
                                                                             "_meta": working["_meta"]}
        assert (await settled(client, gate.task_id))["status"] == "cancelled"
        await tasks_request(client, "tasks/cancel", gate.task_id)  # again: the same empty ack
        done = await settled(client, (await start_task(client, "run_workflow", {"workflow": ONE})).task_id)
        assert done["status"] == "completed" and done["result"]["isError"] is False
        assert done["result"]["structuredContent"]["outputs"] == {"text": "hello"}
        failed = await settled(client, (await start_task(client, "run_workflow", {"workflow": ONE})).task_id)
        assert failed["status"] == "completed" and failed["result"]["isError"] is True
        assert failed["result"]["structuredContent"]["status"] == "failed"
        with pytest.raises(MCPError) as unknown:
            await tasks_request(client, "tasks/get", "run-unknown")
        assert unknown.value.error.code == -32602
        for removed in ("tasks/result", "tasks/list"):
            with pytest.raises(MCPError) as missing:
                await client.session.send_request(Request[Any, str](method=removed, params=TaskParams(
                    task_id=gate.task_id)), TypeAdapter(dict[str, Any]))
            assert missing.value.error.code == -32601


async def test_without_the_opt_in_the_call_is_synchronous_and_tasks_methods_are_refused() -> None:
    mcp, _ = server()
    async with Client(mcp) as client:
        result = await client.call_tool("run_workflow", {"workflow": GATE, "wait_s": 0.2})
        assert result.structured_content["status"] == "waiting"  # the tool's own answer, no task
        with pytest.raises(MCPError) as refused:
            await tasks_request(client, "tasks/get", result.structured_content["run_id"])
        assert refused.value.error.code == -32021
        assert refused.value.error.data["requiredCapabilities"] == {
            "extensions": {"io.modelcontextprotocol/tasks": {}}}


async def test_a_refused_start_is_the_tools_error_and_no_task() -> None:
    mcp, _ = server()
    async with Client(mcp, extensions=[TasksClient()]) as client:
        result = await start_task(client, "run_workflow", {"workflow": "no-such-workflow"})
        assert not isinstance(result, CreatedTask) and result.is_error
