"""MCP tasks through a real client over Streamable HTTP (2026-07-28): ``run_workflow`` and ``consensus`` tasks are
started, polled, cancelled, and read again after the server restarts (each task is a durable workflow run, on
DBOS)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

from server.simulator import Upstream
from tests.conftest import provider_entry
from tests.secure_serving import make_key, running_server, write_toml
from tests.tasks_client import CreatedTask, TasksClient, start_task, tasks_request

pytestmark = pytest.mark.anyio

GATE = {"name": "gate", "steps": [{"id": "review", "kind": "approval", "with": {"timeout_s": 600}}]}
BRIEF = {"name": "brief", "steps": [{"id": "draft", "kind": "orchestrate", "with": {"prompt": "Say hi"}}],
         "outputs": {"text": "{{ steps.draft.output.text }}"}}


async def poll(client: Client, task_id: str, until: tuple[str, ...], message: str = "",
               timeout_s: float = 60) -> dict[str, Any]:
    """``tasks/get`` at the server's poll interval until the task is in one of ``until`` with ``message`` in its
    status message (bounded)."""
    with anyio.fail_after(timeout_s):
        while True:
            task = await tasks_request(client, "tasks/get", task_id)
            if task["status"] in until and message in (task.get("statusMessage") or ""):
                return task
            await anyio.sleep(task["pollIntervalMs"] / 1000)  # bounded-wait, pacing: tasks/get as often as the server advises


async def test_a_workflow_task_is_polled_cancelled_and_read_again_after_a_restart(tmp_path: Path,
                                                                                 upstream: Upstream) -> None:
    config = write_toml(tmp_path / "c.toml", [provider_entry(upstream, "primary", model="gpt-sim"),
                                              provider_entry(upstream, "second", model="gpt-sim-2"),
                                              # last in priority order: only the consensus that names them waits
                                              *(provider_entry(upstream, f"stuck-{n}", model="slow-60000",
                                                               priority=99) for n in (1, 2))])
    database = tmp_path / "state.db"
    with running_server(config, database, tmp_path / "server.log") as server:
        async with Client(server.url, extensions=[TasksClient()]) as client:
            gate = await start_task(client, "run_workflow", {"workflow": GATE})
            brief = await start_task(client, "run_workflow", {"workflow": BRIEF})
            assert isinstance(gate, CreatedTask) and isinstance(brief, CreatedTask), (gate, brief)
            vote = await start_task(client, "consensus", {"prompt": "Say hi", "providers": ["primary", "second"]})
            stuck = await start_task(client, "consensus", {"prompt": "Say hi", "providers": ["stuck-1", "stuck-2"]})
            assert isinstance(vote, CreatedTask) and isinstance(stuck, CreatedTask), (vote, stuck)

            # A consensus task: polled while its answerers are out, cancelled; another one completes.
            assert (await poll(client, stuck.task_id, ("working",), message="steps done"))["status"] == "working"
            await tasks_request(client, "tasks/cancel", stuck.task_id)
            assert (await poll(client, stuck.task_id, ("cancelled", "completed", "failed")))["status"] == "cancelled"
            agreed = await poll(client, vote.task_id, ("completed", "failed", "cancelled"))
            assert agreed["status"] == "completed" and agreed["result"]["isError"] is False, agreed
            consensus = agreed["result"]["structuredContent"]
            assert {r["provider"] for r in consensus["responses"]} == {"primary", "second"}
            assert consensus["status"] in ("consensus", "no_consensus")
            assert gate.task_id.startswith("run-") and gate.status == "working"

            # The approval step opens: the status message (the run's progress) says what the task waits for.
            waiting = await poll(client, gate.task_id, ("working",), message="approve or reject")
            assert "result" not in waiting and waiting["createdAt"] == gate.created_at
            assert waiting["statusMessage"].startswith("0/1 steps done")
            assert await tasks_request(client, "tasks/cancel", gate.task_id) == {
                "resultType": "complete", "_meta": waiting["_meta"]}
            cancelled = await poll(client, gate.task_id, ("cancelled", "completed", "failed"))
            assert cancelled["status"] == "cancelled" and "result" not in cancelled

            done = await poll(client, brief.task_id, ("completed", "failed", "cancelled"))
            assert done["status"] == "completed", done
            assert done["result"]["isError"] is False
            assert done["result"]["structuredContent"]["status"] == "completed"
            text = done["result"]["structuredContent"]["outputs"]["text"]
            assert text

            with pytest.raises(MCPError) as unknown:
                await tasks_request(client, "tasks/get", "run-0000")
            assert unknown.value.error.code == -32602

        async with Client(server.url) as plain:  # no extension declared: tasks/* are refused, calls run as before
            with pytest.raises(MCPError) as refused:
                await tasks_request(plain, "tasks/get", gate.task_id)
            assert refused.value.error.code == -32021

    with running_server(config, database, tmp_path / "server2.log") as server:
        async with Client(server.url, extensions=[TasksClient()]) as client:
            again = await tasks_request(client, "tasks/get", gate.task_id)
            assert again["status"] == "cancelled" and again["createdAt"] == gate.created_at
            result = await tasks_request(client, "tasks/get", brief.task_id)
            assert result["status"] == "completed"
            assert result["result"]["structuredContent"]["outputs"]["text"] == text
            assert (await tasks_request(client, "tasks/get", stuck.task_id))["status"] == "cancelled"
            kept = await tasks_request(client, "tasks/get", vote.task_id)
            assert kept["status"] == "completed" and kept["result"]["structuredContent"] == consensus


@asynccontextmanager
async def tasks_client(url: str, token: str) -> AsyncIterator[Client]:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        async with Client(streamable_http_client(url, http_client=http), extensions=[TasksClient()]) as client:
            yield client


async def test_a_task_is_visible_to_its_starter_and_admins_only(tmp_path: Path, upstream: Upstream) -> None:
    config = write_toml(tmp_path / "c.toml", [provider_entry(upstream, "primary", model="gpt-sim")],
                        auth={"enabled": True, "key_cache_s": 0})
    database = tmp_path / "state.db"
    alice, bob = make_key(config, database, "alice"), make_key(config, database, "bob")
    admin = make_key(config, database, "ops", role="admin")
    with running_server(config, database, tmp_path / "server.log") as server:
        async with tasks_client(server.url, alice) as client:
            task = await start_task(client, "run_workflow", {"workflow": GATE})
            assert isinstance(task, CreatedTask)
            assert (await tasks_request(client, "tasks/get", task.task_id))["status"] == "working"
        async with tasks_client(server.url, bob) as client:
            for method in ("tasks/get", "tasks/cancel"):  # another user's task is an unknown task
                with pytest.raises(MCPError) as hidden:
                    await tasks_request(client, method, task.task_id)
                assert hidden.value.error.code == -32602
        async with tasks_client(server.url, admin) as client:
            await tasks_request(client, "tasks/cancel", task.task_id)
            assert (await poll(client, task.task_id, ("cancelled",)))["status"] == "cancelled"
