"""Schedules on DBOS's scheduled workflows, one server process (the session's DBOS on SQLite): a seconds-level cron
starts one run per tick at the ticks the cron names, under the scheduler's principal; pausing and removing are
saves of the definition, and DBOS's schedule follows: no tick starts a run while paused, and
ticks start runs again once resumed. Two replicas on one PostgreSQL database:
``tests/integration/team/test_schedules_replicas.py``."""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

import anyio
import pytest
from mcp import Client

from server.app.assembly import build_server
from server.config import Config
from server.store.memory import MemoryStore

pytestmark = pytest.mark.anyio
EVERY_2_S = "*/2 * * * * *"
PERIOD_S = 2.0
TICK_SLACK_S = 0.5
"""DBOS's jitter on a tick (at most a tenth of the 2 s wait) and the tick's run being recorded."""


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    with anyio.fail_after(30):
        result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text
    return result.structured_content


def scheduled(name: str, **schedule: Any) -> dict[str, Any]:
    return {"name": name, "inputs": {"type": "object", "properties": {"who": {"type": "string"}}},
            "steps": [{"id": "greet", "kind": "pattern", "with": {"pattern": "say", "variables": {"text": "hi {{ inputs.who }}"}}}],
            "outputs": {"said": "{{ steps.greet.output.text }}"},
            "schedules": [{"cron": EVERY_2_S, "inputs": {"who": "cron"}, **schedule}]}


def tick_of(run_id: str) -> int:
    """The tick's Unix seconds in a tick run's id (``tick-<workflow>-<index>-<seconds>``, shown to the local
    admin with its owner's tag after a colon)."""
    match = re.fullmatch(r"tick-.+-0-(\d+)(:[0-9a-f]+)?", run_id)
    assert match, run_id
    return int(match.group(1))


def ticks_listed(listed: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The runs of ``name``'s first schedule in a ``workflow_run`` listing, oldest tick first."""
    return sorted((r for r in listed.get("runs") or [] if r["run_id"].startswith(f"tick-{name}-0-")),
                  key=lambda r: r["run_id"])


async def tick_runs(client: Client, name: str) -> list[dict[str, Any]]:
    return ticks_listed(await call(client, "workflow_run", limit=100), name)


async def test_a_seconds_cron_starts_one_run_per_tick_and_pauses_on_a_save(dbos_launched: None) -> None:
    from dbos import DBOS

    from server.workflows.dbos_runtime import SCHEDULER_POLLING_S, dbos_runtime

    name = f"cron-{uuid.uuid4().hex[:8]}"
    server = build_server(Config(), store_factory=MemoryStore, workflow_runtime=dbos_runtime(launch=False))
    async with Client(server) as client:
        await call(client, "register_pattern", name="say", template="{{ text }}", description="Say the text")
        await call(client, "save_workflow", definition=scheduled(name))
        with anyio.fail_after(60):  # the ticks come every 2 s; the scheduler sees a new schedule within 1 s
            while len(done := [r for r in await tick_runs(client, name) if r["status"] == "completed"]) < 3:
                await anyio.sleep(0.2)  # bounded-wait: the runs' statuses, read by request; fail_after bounds it
        ticks = [tick_of(r["run_id"]) for r in done]
        assert all(t % 2 == 0 for t in ticks), ticks  # the ticks the cron names …
        assert [b - a for a, b in zip(ticks, ticks[1:])] == [2] * (len(ticks) - 1), ticks  # … each one, once
        status = await call(client, "workflow_run", run_id=done[0]["run_id"])
        assert status["outputs"] == {"said": "hi cron"}
        record = await server_store_run(client, done[0]["run_id"])
        assert record["owner"] == "system:scheduler"

        await call(client, "save_workflow", definition=scheduled(name, paused=True))
        paused_at = time.time()
        assert (await DBOS.get_schedule_async(f"{name}.0"))["status"] == "PAUSED"
        shown = json.loads((await client.read_resource(f"workflows://definitions/{name}")).contents[0].text)
        assert shown["definition"]["schedules"] == [{"cron": EVERY_2_S, "inputs": {"who": "cron"}, "paused": True}]
        # A tick already due when the pause was saved may still start until the scheduler's next poll; any later
        # tick must not. Two cron periods past that (and a tick's jitter and start) no run of a later tick exists.
        settled = paused_at + SCHEDULER_POLLING_S + TICK_SLACK_S
        with anyio.fail_after(30):
            while time.time() < settled + 2 * PERIOD_S + TICK_SLACK_S:
                late = [t for t in (tick_of(r["run_id"]) for r in await tick_runs(client, name)) if t > settled]
                assert late == [], (late, settled)  # a tick started a run while the schedule was paused
                await anyio.sleep(0.2)  # bounded-wait: absence of ticks, 2 cron periods past the pause taking hold

        await call(client, "save_workflow", definition=scheduled(name))  # resumed
        resumed_at = time.time()
        assert (await DBOS.get_schedule_async(f"{name}.0"))["status"] == "ACTIVE"
        with anyio.fail_after(20):  # the scheduler sees the resume within a poll; the next tick is 2 s away at most
            while not [r for r in await tick_runs(client, name) if tick_of(r["run_id"]) > resumed_at]:
                await anyio.sleep(0.2)  # bounded-wait: the runs, read by request; fail_after bounds it
        await call(client, "save_workflow", definition={**scheduled(name), "schedules": []})
        assert await DBOS.get_schedule_async(f"{name}.0") is None


async def server_store_run(client: Client, run_id: str) -> dict[str, Any]:
    """The run's audit lineage start (who started it), through the audit resource."""
    lineage = json.loads((await client.read_resource(f"audit://runs/{run_id}")).contents[0].text)
    return {"owner": lineage["started_by"]}
