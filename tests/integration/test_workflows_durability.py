"""Durability on DBOS with a real server process: SIGKILL at random points (the crash test), a replay in which
branches finish in another order after recovery, and an approval that outlives a restart.

The server runs as `python -m server --transport http` with its SQLite database and DBOS system database in
tmp_path; tool steps call the session's downstream MCP server, which outlives every kill and logs when each
step's work starts, so a step executed again after its result was recorded would show.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from tests.serving import free_port, server_env, wait_for_port
from tests.services import stop_process, until

pytestmark = pytest.mark.anyio
FINISHED = ("completed", "failed", "cancelled")
SERVERS = 1
"""Server processes killed side by side in the crash test (20 kills in all); start-up is CPU-bound."""


class ServerProcess:
    """The server as a subprocess on a fixed port and database, restartable."""

    def __init__(self, tmp_path: Path, downstream_url: str) -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = tmp_path / "config.toml"
        self.config.write_text(f'[mcp_servers.down]\nurl = "{downstream_url}"\n')
        self.database = tmp_path / "state.db"
        self.stderr = tmp_path / "server.log"
        self.process: subprocess.Popen | None = None
        self.kills = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self) -> None:
        with self.stderr.open("a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "server", "--transport", "http", "--port", str(self.port), "--config",
                 str(self.config), "--database", str(self.database), "--log-level", "WARNING"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, env=server_env())
        wait_for_port(self.port, self.process)

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self.kills += 1

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


@pytest.fixture
def server(tmp_path: Path, downstream_url: str) -> Any:
    process = ServerProcess(tmp_path, downstream_url)
    yield process
    process.stop()


async def call(url: str, tool: str, **arguments: Any) -> dict:
    with anyio.fail_after(30):
        async with Client(url) as client:
            result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text
    return result.structured_content


async def try_call(url: str, tool: str, **arguments: Any) -> dict | None:
    """``call``, or ``None`` when the server went away meanwhile (killed)."""
    try:
        return await call(url, tool, **arguments)
    except AssertionError:
        raise
    except Exception:  # noqa: BLE001 - a killed server fails the call in many ways; the caller retries
        return None


async def work_log(downstream_url: str, run: str) -> dict[str, list[float]]:
    out = await call(downstream_url, "work_log", run=run)
    return json.loads(out["result"])


async def in_status(url: str, run: str, statuses: tuple[str, ...]) -> dict | None:
    """The run's status report when its status is one of ``statuses``, else ``None``."""
    status = await call(url, "workflow_run", run_id=run)
    return status if status["status"] in statuses else None


async def finished(url: str, run: str, timeout_s: float) -> dict:
    """The run's status report once it has finished (bounded by ``timeout_s``)."""
    return await until(lambda: in_status(url, run, FINISHED), timeout_s, f"run {run} finished")


def work(step: str, run: str, text: str, seconds: list[float], *deps: str) -> dict:
    return {"id": step, "kind": "tool", "depends_on": list(deps),
            "with": {"server": "down", "tool": "work",
                     "arguments": {"run": run, "step": step, "text": text, "seconds": seconds}}}


def steps_of(status: dict) -> dict[str, dict]:
    return {s["id"]: s for s in status["steps"]}


def assert_no_step_ran_after_its_record(status: dict, log: dict[str, list[float]]) -> None:
    """Every start of a step's work precedes the end the run recorded for that step."""
    for step_id, starts in log.items():
        ended = steps_of(status)[step_id]["ended_at"]
        assert all(start <= ended + 0.001 for start in starts), (step_id, starts, ended)


def crash_definition(run: str) -> dict:
    return {"name": "crashy", "max_parallel": 4, "steps": [
        work("a", run, "start", [0.3]),
        work("b1", run, "{{ steps.a.output.text }}", [0.4], "a"),
        work("b2", run, "{{ steps.a.output.text }}", [0.2], "a"),
        work("b3", run, "{{ steps.a.output.text }}", [0.5], "a"),
        work("c", run, "{{ steps.b1.output.text }}+{{ steps.b2.output.text }}+{{ steps.b3.output.text }}", [0.3],
             "b1", "b2", "b3"),
        work("d", run, "{{ steps.c.output.text }}", [0.2], "c")],
        "outputs": {"final": "{{ steps.d.output.text }}"}}


CRASH_EXPECTED = "d[c[b1[a[start]]+b2[a[start]]+b3[a[start]]]]"


async def crash_loop(server: ServerProcess, rng: random.Random, kills: int) -> list[str]:
    """Start batches of three runs and SIGKILL the server at random points, restarting it each time, until
    ``kills`` kills are done and every run has finished. Returns the run ids."""
    runs: list[str] = []
    pending: list[str] = []
    await anyio.to_thread.run_sync(server.start)
    while True:
        for run in list(pending):
            status = await try_call(server.url, "workflow_run", run_id=run)
            if status is not None and status["status"] in FINISHED:
                pending.remove(run)
        if not pending:
            if server.kills >= kills:
                return runs
            pending = [f"crash-{uuid.uuid4().hex[:8]}-{i}" for i in range(3)]
            runs.extend(pending)
        for run in pending:  # idempotent: a start lost to a kill is simply repeated with the same run id
            await try_call(server.url, "run_workflow", workflow=crash_definition(run), wait=False, run_id=run)
        if server.kills < kills:
            await anyio.sleep(rng.uniform(0.05, 0.8))  # bounded-wait, pacing: the kill lands at a random point of the runs
            await anyio.to_thread.run_sync(server.kill)
            await anyio.to_thread.run_sync(server.start)
        else:
            await anyio.sleep(0.1)  # bounded-wait: between looks at the pending runs (the caller's fail_after bounds it)


async def test_runs_survive_sigkill_at_random_points(tmp_path: Path, downstream_url: str) -> None:
    started = time.monotonic()
    servers = [ServerProcess(tmp_path / f"s{i}", downstream_url) for i in range(SERVERS)]
    runs: dict[int, list[str]] = {}
    try:
        with anyio.fail_after(150):
            async with anyio.create_task_group() as tg:
                async def one(i: int) -> None:
                    runs[i] = await crash_loop(servers[i], random.Random(600 + i), -(-20 // SERVERS))

                for i in range(SERVERS):
                    tg.start_soon(one, i)
        reexecuted = 0
        for i, server in enumerate(servers):
            listed = await call(server.url, "workflow_run", limit=100)
            assert sorted(r["run_id"] for r in listed["runs"]) == sorted(runs[i])  # no run lost, none extra
            for run in runs[i]:
                status = await call(server.url, "workflow_run", run_id=run)
                assert status["status"] == "completed", status
                assert status["outputs"] == {"final": CRASH_EXPECTED}
                log = await work_log(downstream_url, run)
                assert_no_step_ran_after_its_record(status, log)
                reexecuted += sum(len(starts) - 1 for starts in log.values())
        kills = sum(s.kills for s in servers)
        assert kills >= 20
        print(f"crash test: {kills} SIGKILLs over {sum(map(len, runs.values()))} runs on {SERVERS} server(s); "
              f"{reexecuted} interrupted step execution(s) ran again; {time.monotonic() - started:.1f} s")
    finally:
        for server in servers:
            server.stop()


async def test_branches_finish_in_another_order_after_recovery(server: ServerProcess, downstream_url: str) -> None:
    run = f"replay-{uuid.uuid4().hex[:8]}"
    # Before the crash: x, then y finish; x2, y2 and z are still working when the server dies. After recovery
    # (the second call of each step): z finishes first, y2 and z2 next, x2 last.
    definition = {"name": "replay", "steps": [
        work("x", run, "x", [0.05]), work("y", run, "y", [0.3]), work("z", run, "z", [30, 0.05]),
        work("x2", run, "{{ steps.x.output.text }}", [30, 1.0], "x"),
        work("y2", run, "{{ steps.y.output.text }}", [30, 0.2], "y"),
        work("z2", run, "{{ steps.z.output.text }}", [0.05], "z"),
        work("join", run, "{{ steps.x2.output.text }},{{ steps.y2.output.text }},{{ steps.z2.output.text }}",
             [0.0], "x2", "y2", "z2")],
        "outputs": {"joined": "{{ steps.join.output.text }}"}}
    server.start()
    await call(server.url, "run_workflow", workflow=definition, wait=False, run_id=run)

    async def y_done_y2_running() -> dict[str, dict] | None:
        steps = steps_of(await call(server.url, "workflow_run", run_id=run))
        return steps if steps["y"]["status"] == "completed" and steps["y2"]["status"] == "running" else None

    steps = await until(y_done_y2_running, 20, "y completed while y2 runs", interval_s=0.02)
    before = sorted((s["ended_at"], s["id"]) for s in steps.values() if s["status"] == "completed")
    assert [name for _, name in before] == ["x", "y"]
    server.kill()
    server.start()
    status = await finished(server.url, run, 20)
    assert status["status"] == "completed", status
    assert status["outputs"] == {"joined": "join[x2[x[x]],y2[y[y]],z2[z[z]]]"}
    after = [name for _, name in sorted((s["ended_at"], s["id"]) for s in status["steps"])
             if name not in ("x", "y")]
    # Before the crash the x branch finished first; after recovery z finishes first and x's branch last.
    assert after[0] == "z" and after[-1] == "join"
    assert after.index("y2") < after.index("x2") and after.index("z2") < after.index("x2")
    log = await work_log(downstream_url, run)
    assert (len(log["x"]), len(log["y"]), len(log["z"]), len(log["x2"]), len(log["y2"])) == (1, 1, 2, 2, 2)
    assert_no_step_ran_after_its_record(status, log)


async def test_an_approval_outlives_a_restart(server: ServerProcess, downstream_url: str) -> None:
    run = f"approve-{uuid.uuid4().hex[:8]}"
    definition = {"name": "gated", "steps": [
        work("draft", run, "text", [0.0]),
        {"id": "review", "kind": "approval", "depends_on": ["draft"], "with": {"message": "ok?", "timeout_s": 600}},
        work("publish", run, "{{ steps.draft.output.text }}", [0.0], "review")],
        "outputs": {"published": "{{ steps.publish.output.text }}", "by": "{{ steps.review.output.by }}"}}
    server.start()
    out = await call(server.url, "run_workflow", workflow=definition, run_id=run, wait_s=5)
    assert out["status"] == "waiting"
    server.kill()
    server.start()
    await until(lambda: in_status(server.url, run, ("waiting",)), 20, f"run {run} waiting again after the restart")
    await call(server.url, "workflow_run", run_id=run, action="approve")
    status = await finished(server.url, run, 20)
    assert status["status"] == "completed"
    assert status["outputs"] == {"published": "publish[draft[text]]", "by": "local"}  # unauthenticated: local
    assert len((await work_log(downstream_url, run))["draft"]) == 1
