"""The MCP tasks extension through the in-memory client (2026-07-28): a ``run_workflow`` task's states on
``tasks/get`` (working with progress, completed with the result inlined, a failed run as completed + isError,
cancelled), gating without the opt-in, unknown ids, removed methods."""

from __future__ import annotations

from typing import Any

import anyio
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


def two_providers() -> tuple[Any, Any]:
    config = fake_config(fake_entry("alpha", model="a"), fake_entry("beta", model="b"))
    fleet = fleet_for(config)
    return build_server(config, store_factory=MemoryStore, provider_factory=fleet), fleet


async def test_a_consensus_as_a_task_is_a_durable_run_with_the_consensus_as_its_result() -> None:
    mcp, fleet = two_providers()
    fleet["alpha"].script(Reply("Paris"))
    fleet["beta"].script(Reply("paris"))
    async with Client(mcp, extensions=[TasksClient()]) as client:
        task = await start_task(client, "consensus", {"prompt": "Capital of {{France}}?", "choices": ["Paris"],
                                                      "max_providers": 2})
        assert isinstance(task, CreatedTask), task
        done = await settled(client, task.task_id)
        assert done["status"] == "completed" and done["result"]["isError"] is False
        result = done["result"]["structuredContent"]
        assert (result["status"], result["answer"], result["method"]) == ("consensus", "Paris", "vote")
        assert sorted(r["provider"] for r in result["responses"]) == ["alpha", "beta"]
        run = await client.call_tool("workflow_run", {"run_id": task.task_id})  # the task is the run
        assert run.structured_content["workflow"] == "consensus-task"
    # The prompt reached the providers as written: the caller's text is never rendered as a template.
    assert fleet["alpha"].requests[0].messages[0].content == "Capital of {{France}}?"


async def test_a_consensus_task_is_cancelled_and_bad_arguments_start_none() -> None:
    mcp, fleet = two_providers()
    fleet["alpha"].script(Reply("slow", latency_s=30))
    fleet["beta"].script(Reply("slow", latency_s=30))
    async with Client(mcp, extensions=[TasksClient()]) as client:
        task = await start_task(client, "consensus", {"prompt": "q", "max_providers": 2})
        assert isinstance(task, CreatedTask)
        await tasks_request(client, "tasks/cancel", task.task_id)
        assert (await settled(client, task.task_id))["status"] == "cancelled"
        refused = await start_task(client, "consensus", {"prompt": "q", "providers": ["alpha", "nobody"]})
        assert not isinstance(refused, CreatedTask) and refused.is_error and "nobody" in refused.content[0].text
        runs = await client.call_tool("workflow_run", {})
        assert [r["run_id"] for r in runs.structured_content["runs"]] == [task.task_id]  # the refused one: no run


async def no_form(context: Any, params: Any) -> Any:
    raise AssertionError("a task's approvals are asked through inputRequests, never mid-call")


async def test_a_waiting_approval_is_an_input_request_answered_through_tasks_update() -> None:
    mcp, _ = server()
    strict = {"name": "strict", "steps": [{"id": "review", "kind": "approval", "with": {"not_starter": True}}]}
    async with Client(mcp, extensions=[TasksClient()], elicitation_callback=no_form) as client:
        gate = await start_task(client, "run_workflow", {"workflow": GATE})
        kept = await start_task(client, "run_workflow", {"workflow": strict})
        assert isinstance(gate, CreatedTask) and isinstance(kept, CreatedTask)
        with anyio.fail_after(10):
            while (task := await tasks_request(client, "tasks/get", gate.task_id))["status"] == "working":
                await anyio.sleep(0.02)  # bounded-wait: the task's status, read by tasks/get; fail_after bounds it
        assert task["status"] == "input_required" and list(task["inputRequests"]) == ["approve:review"]
        form = task["inputRequests"]["approve:review"]
        assert form["method"] == "elicitation/create"
        assert set(form["params"]["requestedSchema"]["properties"]) == {"decision", "comment"}
        with pytest.raises(MCPError) as stray:
            await tasks_request(client, "tasks/update", gate.task_id, input_responses={"approve:other": {}})
        assert stray.value.error.code == -32602
        await tasks_request(client, "tasks/update", gate.task_id, input_responses={"approve:review": {
            "action": "accept", "content": {"decision": "approve", "comment": "fine"}}})
        done = await settled(client, gate.task_id)
        assert done["status"] == "completed", done
        decision = done["result"]["structuredContent"]["steps"][0]["output"]
        assert (decision["decision"], decision["by"], decision["comment"]) == ("approved", "local", "fine")
        # The starter may not decide a not_starter step: no input is asked of it, the task keeps working.
        with anyio.fail_after(10):
            while "approve or reject" not in ((task := await tasks_request(client, "tasks/get", kept.task_id))
                                              .get("statusMessage") or ""):
                await anyio.sleep(0.02)  # bounded-wait: the task's status, read by tasks/get; fail_after bounds it
        assert task["status"] == "working" and "inputRequests" not in task
