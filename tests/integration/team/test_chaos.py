"""Chaos: three replicas behind nginx on one PostgreSQL database, 30 five-step runs in flight, a replica SIGKILLed
ten times (restarted under its id each time but once, when it stays down for good). Every run completes once,
with the right result; no run is lost; no step whose result was recorded runs again: the downstream server logs
which replica process made each call (``X-Caller``), and every repeated call of a step follows the kill of the
process that made the call before it, which never recorded it; so a run has at most one extra call per kill of
a process executing it. Bounded: kills are spaced by the runs' progress, the end awaited with a limit."""

from __future__ import annotations

import random
import time
from pathlib import Path

import anyio
import pytest

from tests.serving import free_port, wait_for_port
from tests.services import until
from tests.team import Replica, call, nginx_block, replica_config, work_calls, work_steps

pytestmark = pytest.mark.anyio
RUNS, STEPS, KILLS, STAYS_DOWN = 30, 5, 10, 4  # the kill (0-based) after which that replica is not restarted
STEP_S = 2.5


async def progress(downstream_url: str, prefix: str) -> int:
    """How many step executions the downstream server has seen for runs whose ids start with ``prefix``."""
    from mcp import Client

    with anyio.fail_after(30):
        async with Client(downstream_url) as client:
            result = await client.call_tool("work_count", {"prefix": prefix})
    return int(result.structured_content["result"])


def explaining_kills(run_id: str, calls: dict[str, list[tuple[float, str]]], steps: dict[str, dict],
                     killed: dict[str, float]) -> list[str]:
    """The killed processes (:attr:`Replica.caller`) that explain a completed run's repeated calls, one per repeat.

    ``calls``: the run's `work` calls per step, (start, caller); ``steps``: its step reports by id (the recorded
    result's ``started_at`` and ``ended_at``); ``killed``: when each killed process was sent its SIGKILL.
    Fails unless each step's recorded result is its last call's (that call alone started within the record's
    span; none started after it) and each repeated call follows the kill of the process that made the call
    before it; a kill explains at most one repeat of the run (one step of a chain runs at a time)."""
    explained: list[str] = []
    for step, executions in calls.items():
        recorded, starts = steps[step], [start for start, _ in executions]
        assert all(start < recorded["started_at"] for start in starts[:-1]), (run_id, step, executions, recorded)
        assert recorded["started_at"] <= starts[-1] <= recorded["ended_at"], (run_id, step, executions, recorded)
        for (_, earlier), (later_start, later) in zip(executions, executions[1:]):
            assert earlier in killed and killed[earlier] < later_start and later != earlier, (
                run_id, step, executions, killed)
            explained.append(earlier)
    assert len(explained) == len(set(explained)), (run_id, calls, killed)  # one extra call per kill at most
    return explained


@pytest.mark.timeout(600)
async def test_runs_survive_ten_kills_and_a_replica_that_stays_down(
        tmp_path: Path, postgres_url: str, downstream_url: str, nginx) -> None:
    port = free_port()
    # Few runs at once per replica, so that runs are in flight through all ten kills.
    config = replica_config(downstream_url, named_calls=True).replace(
        "replica_wait_s = 1.0", "replica_wait_s = 20.0\nqueue_concurrency = 4")
    replicas = [Replica(tmp_path, postgres_url, f"c{n}", config, allowed_hosts=f"127.0.0.1:{port}")
                for n in range(3)]
    rng = random.Random(19)
    killed: dict[str, float] = {}  # a killed replica process (Replica.caller) -> when its SIGKILL was sent
    try:
        for r in replicas:
            r.start(wait=False)
        for r in replicas:
            wait_for_port(r.port, r.process, timeout_s=90)
        proxy = nginx(nginx_block(replicas), port)
        url = f"http://127.0.0.1:{proxy.port}/mcp"
        prefix = f"chaos-{tmp_path.name}-"
        run_ids = [f"{prefix}{n}" for n in range(RUNS)]
        for n, run_id in enumerate(run_ids):
            started = await call(url, "run_workflow", workflow=work_steps(run_id, STEPS, [STEP_S]), run_id=run_id,
                                 inputs={}, wait=False)
            assert started["run_id"] == run_id
        gone: Replica | None = None
        t0 = time.time()
        seen = 0
        for k in range(KILLS):
            async def moved_on(since: int = seen) -> int | None:
                now = await progress(downstream_url, prefix)
                return now if now >= since + 3 or now >= RUNS * STEPS else None

            seen = await until(moved_on, 120, "the runs moved on since the last kill", interval_s=0.1)
            print(f"kill {k}: {seen} step executions so far, {time.time() - t0:.1f} s", flush=True)
            victim = rng.choice([r for r in replicas if r.alive()])
            killed[victim.caller] = time.time()
            victim.kill()
            if k == STAYS_DOWN:
                gone = victim
            else:
                victim.start(wait=False)
                await anyio.to_thread.run_sync(lambda v=victim: wait_for_port(v.port, v.process, timeout_s=90))
        assert gone is not None and not gone.alive()
        print(f"kills done at {time.time() - t0:.1f} s", flush=True)
        pending = set(run_ids)
        steps: dict[str, dict[str, dict]] = {}  # run -> step id -> its report

        async def all_completed() -> bool:
            for run_id in sorted(pending):
                status = await call(url, "workflow_run", run_id=run_id)
                assert status["status"] not in ("failed", "cancelled"), status
                if status["status"] == "completed":
                    assert status["outputs"] == {"last": f"s{STEPS - 1}[{STEPS - 1}]"}
                    steps[run_id] = {step["id"]: step for step in status["steps"]}
                    pending.discard(run_id)
            return not pending

        await until(all_completed, 240, "every run completed", interval_s=0.2)
        repeats = interrupted = 0
        for run_id in run_ids:
            calls = await work_calls(downstream_url, run_id)
            assert sorted(calls) == [f"s{n}" for n in range(STEPS)], (run_id, calls)
            executors = {caller for executions in calls.values() for _, caller in executions}
            assert all(executors), (run_id, calls)  # every call names its replica process
            repeats += len(explaining_kills(run_id, calls, steps[run_id], killed))
            interrupted += len(executors & set(killed))
        listed = await call(url, "workflow_run", status="completed", limit=100)
        assert {r["run_id"] for r in listed["runs"]} >= set(run_ids)
        print(f"chaos: {KILLS} kills, {repeats} step executions repeated in {RUNS * STEPS} steps, at most "
              f"{interrupted} allowed (runs times kills of a process executing them)")
    finally:
        for r in replicas:
            r.stop()
