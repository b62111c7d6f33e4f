"""A schedule on two replicas sharing one PostgreSQL database: both replicas' DBOS schedulers fire every tick,
and each tick starts one run that executes once (a downstream tool counts the executions)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from tests.integration.test_schedules import tick_of, ticks_listed
from tests.team import Replica, call, replica_config, work_log

pytestmark = pytest.mark.anyio
EVERY_2_S = "*/2 * * * * *"


def scheduled(name: str, marker: str, **schedule: Any) -> dict[str, Any]:
    return {"name": name, "steps": [{"id": "s0", "kind": "tool", "with": {
                "server": "down", "tool": "work", "arguments": {"run": marker, "step": "s0", "text": "tick"}}}],
            "schedules": [{"cron": EVERY_2_S, **schedule}]}


async def tick_runs(url: str, name: str) -> list[dict[str, Any]]:
    return ticks_listed(await call(url, "workflow_run", limit=100), name)


async def test_each_tick_runs_once_with_two_replicas_on_one_database(tmp_path: Path, postgres_url: str,
                                                                     downstream_url: str) -> None:
    name, marker = f"cron-{uuid.uuid4().hex[:8]}", f"sched-{uuid.uuid4().hex}"
    config = replica_config(downstream_url)
    a = Replica(tmp_path, postgres_url, "a", config).start()
    b = Replica(tmp_path, postgres_url, "b", config).start()
    try:
        await call(a.url, "save_workflow", definition=scheduled(name, marker))
        # A moment with no tick run in flight: every listed run finished, the same set before and after reading
        # the tool's log. Then each run's one `work` call is in the log, and no run executed twice.
        with anyio.fail_after(120):
            while True:
                before = await tick_runs(b.url, name)
                executed = (await work_log(downstream_url, marker)).get("s0", [])
                after = await tick_runs(a.url, name)
                settled = before == after and all(r["status"] == "completed" for r in after)
                if settled and len(after) >= 5:
                    break
                await anyio.sleep(0.2)  # bounded-wait: both replicas' views, read by request; fail_after bounds it
        assert len(executed) == len(after), (len(executed), [r["run_id"] for r in after])
        ticks = [tick_of(r["run_id"]) for r in after]
        assert all(t % 2 == 0 for t in ticks), ticks
        assert [y - x for x, y in zip(ticks, ticks[1:])] == [2] * (len(ticks) - 1), ticks  # every tick, once
        await call(b.url, "save_workflow", definition=scheduled(name, marker, paused=True))
        async with Client(a.url) as client:  # the pause, saved on B, is what A shows
            shown = json.loads((await client.read_resource(f"workflows://definitions/{name}")).contents[0].text)
        assert shown["definition"]["schedules"][0]["paused"] is True
    finally:
        a.stop()
        b.stop()
