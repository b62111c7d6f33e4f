"""Replicas on one PostgreSQL database, as real processes: a held replica id refuses a second process; a replica
SIGKILLed and restarted under its id recovers its own run from its last recorded step; a run of a replica that is
SIGKILLed and stays down is resumed by a survivor from its last recorded step; the admin command does the same by
hand; a run enqueued on a live replica at capacity is executed by another."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.serving import server_env
from tests.services import until
from tests.team import Replica, call, replica_config, work_calls, work_log, work_steps


async def started_step(downstream_url: str, run_id: str, step: str) -> list[float] | None:
    """The starts of ``step``'s work that the downstream server logged (``None`` before the first)."""
    return (await work_log(downstream_url, run_id)).get(step)


async def in_status(url: str, run_id: str, wanted: str) -> dict | None:
    """The run's status report once its status is ``wanted``, else ``None``."""
    status = await call(url, "workflow_run", run_id=run_id)
    return status if status["status"] == wanted else None


async def recorded_and_running(url: str, downstream_url: str, run_id: str, recorded: str, running: str) -> bool:
    """Whether the run's step ``recorded`` has its result recorded and ``running`` has called the downstream tool."""
    steps = {s["id"]: s["status"] for s in (await call(url, "workflow_run", run_id=run_id))["steps"]}
    return (steps[recorded], steps[running]) == ("completed", "running") and bool(
        await started_step(downstream_url, run_id, running))

pytestmark = pytest.mark.anyio


async def test_a_second_process_with_a_held_replica_id_is_refused_at_start(tmp_path: Path, postgres_url: str) -> None:
    first = Replica(tmp_path, postgres_url, "r1", replica_config()).start()
    try:
        second = Replica(tmp_path / "second", postgres_url, "r1", replica_config())
        done = subprocess.run(second.command(), capture_output=True, text=True, timeout=60, env=server_env())
        assert done.returncode == 2, done.stderr
        assert "replica id 'r1' is held by a running process" in done.stderr
        assert first.alive()
        other = Replica(tmp_path / "other", postgres_url, "r2", replica_config()).start()  # another id is fine
        other.stop()
    finally:
        first.stop()


async def test_a_replica_restarted_under_its_id_recovers_its_run_from_its_last_recorded_step(
        tmp_path: Path, postgres_url: str, downstream_url: str) -> None:
    run_id = f"restart-{tmp_path.name}"
    # One replica, no survivor: only its own launch can recover the run. The id's lock outlives a kill briefly.
    config = replica_config(downstream_url, named_calls=True).replace("replica_wait_s = 1.0", "replica_wait_s = 20.0")
    a = Replica(tmp_path, postgres_url, "solo", config).start()
    try:
        # s1's first execution takes long: the replica is killed in the middle of it, with s0's result recorded.
        await call(a.url, "run_workflow", workflow=work_steps(run_id, 3, {1: [60.0, 0.0]}), run_id=run_id, wait=False)
        await until(lambda: recorded_and_running(a.url, downstream_url, run_id, "s0", "s1"), 60,
                    "s0 recorded and s1 running", interval_s=0.2)
        a.kill()
        a.start()
        status = await until(lambda: in_status(a.url, run_id, "completed"), 60, "the run completed after the restart",
                             interval_s=0.2)
        calls = await work_calls(downstream_url, run_id)
        assert status["outputs"] == {"last": "s2[2]"}
        # s0 ran once, before the kill; s1 once more, by the restarted process, which then ran s2.
        assert {step: [caller for _, caller in executions] for step, executions in calls.items()} == {
            "s0": ["solo.0"], "s1": ["solo.0", "solo.1"], "s2": ["solo.1"]}
    finally:
        a.stop()


async def test_a_survivor_resumes_a_dead_replicas_run_from_its_last_recorded_step(
        tmp_path: Path, postgres_url: str, downstream_url: str) -> None:
    run_id = f"takeover-{tmp_path.name}"
    config = replica_config(downstream_url)
    a = Replica(tmp_path, postgres_url, "a", config).start()
    b = Replica(tmp_path, postgres_url, "b", config)
    try:
        # s1's first execution takes long: A is killed in the middle of it. Only A runs at first, so it owns the run.
        started = await call(a.url, "run_workflow", workflow=work_steps(run_id, 3, {1: [60.0, 0.0]}), run_id=run_id,
                             wait=False)
        assert started["run_id"] == run_id
        await until(lambda: started_step(downstream_url, run_id, "s1"), 60, "s1 started on A", interval_s=0.2)
        b.start()
        a.kill()  # stays down for good
        status = await until(lambda: in_status(b.url, run_id, "completed"), 60, "the run completed on B",
                             interval_s=0.2)
        log = await work_log(downstream_url, run_id)
        assert status["outputs"] == {"last": "s2[2]"}
        assert {step: len(starts) for step, starts in log.items()} == {"s0": 1, "s1": 2, "s2": 1}
    finally:
        a.stop()
        b.stop()


async def test_workflows_recover_resumes_a_gone_replicas_runs_and_refuses_a_live_one(
        tmp_path: Path, postgres_url: str, downstream_url: str) -> None:
    run_id = f"manual-{tmp_path.name}"
    config = replica_config(downstream_url, extra="")
    a = Replica(tmp_path, postgres_url, "gone", config).start()
    command = [sys.executable, "-m", "server", "workflows", "recover", "--from", "gone", "--database", postgres_url]
    try:
        await call(a.url, "run_workflow", workflow=work_steps(run_id, 2, {0: [60.0, 0.0]}), run_id=run_id, wait=False)
        await until(lambda: started_step(downstream_url, run_id, "s0"), 60, "s0 started", interval_s=0.2)
        refused = subprocess.run(command, capture_output=True, text=True, timeout=60, env=server_env())
        assert refused.returncode == 1 and "is alive" in refused.stderr
        a.kill()
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=server_env())
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == [run_id]
        # Back on the queue: the next replica to start runs it to the end.
        b = Replica(tmp_path, postgres_url, "next", config).start()
        try:
            await until(lambda: in_status(b.url, run_id, "completed"), 60, "the run completed on the next replica",
                        interval_s=0.2)
        finally:
            b.stop()
        assert {k: len(v) for k, v in (await work_log(downstream_url, run_id)).items()} == {"s0": 2, "s1": 1}
    finally:
        a.stop()


def gated(run_id: str) -> dict:
    """A run that waits for an approval, then does one `work` step."""
    return {"name": "gated", "steps": [
        {"id": "gate", "kind": "approval", "with": {"message": "go?"}},
        {"id": "after", "kind": "tool", "depends_on": ["gate"],
         "with": {"server": "down", "tool": "work", "arguments": {"run": run_id, "step": "after"}}}],
        "outputs": {"decision": "{{ steps.gate.output.decision }}"}}


async def test_a_run_started_on_one_replica_is_listed_approved_and_cancelled_on_another(
        tmp_path: Path, postgres_url: str, downstream_url: str) -> None:
    config = replica_config(downstream_url)
    a = Replica(tmp_path, postgres_url, "ra", config).start()
    b = Replica(tmp_path, postgres_url, "rb", config).start()
    approved, cancelled = f"approve-{tmp_path.name}", f"cancel-{tmp_path.name}"
    try:
        for run_id in (approved, cancelled):
            await call(a.url, "run_workflow", workflow=gated(run_id), run_id=run_id, wait=False)
        listed = await call(b.url, "workflow_run")
        assert {r["run_id"] for r in listed["runs"]} >= {approved, cancelled}
        # B reads the run's recorded steps: its approval is open
        await until(lambda: in_status(b.url, approved, "waiting"), 60, "the approval open, seen on B", interval_s=0.2)
        decided = await call(b.url, "workflow_run", run_id=approved, action="approve")
        assert next(s for s in decided["steps"] if s["id"] == "gate")["status"] == "completed"
        stopped = await call(b.url, "workflow_run", run_id=cancelled, action="cancel")
        assert stopped["status"] == "cancelled"
        status = await until(lambda: in_status(a.url, approved, "completed"), 60, "the approved run completed",
                             interval_s=0.2)
        assert status["outputs"] == {"decision": "approved"}
        assert (await call(a.url, "workflow_run", run_id=cancelled))["status"] == "cancelled"
        assert list(await work_log(downstream_url, cancelled)) == []  # the cancelled run's step never ran
    finally:
        a.stop()
        b.stop()


async def test_runs_enqueued_on_one_live_replica_are_executed_by_another_with_capacity(
        tmp_path: Path, postgres_url: str, downstream_url: str) -> None:
    # Each replica runs one queued run at a time: of two runs started on A at once, B (alive, idle) takes one.
    config = replica_config(downstream_url, named_calls=True).replace("[workflows]\n",
                                                                      "[workflows]\nqueue_concurrency = 1\n")
    a = Replica(tmp_path, postgres_url, "qa", config).start()
    b = Replica(tmp_path, postgres_url, "qb", config).start()
    runs = [f"queued-{n}-{tmp_path.name}" for n in range(2)]
    try:
        for run_id in runs:
            await call(a.url, "run_workflow", workflow=work_steps(run_id, 1, [3.0]), run_id=run_id, wait=False)
        for run_id in runs:
            await until(lambda run_id=run_id: in_status(a.url, run_id, "completed"), 60, f"{run_id} completed",
                        interval_s=0.2)
        calls = [(await work_calls(downstream_url, run_id))["s0"] for run_id in runs]
        callers = sorted(caller for executions in calls for _, caller in executions)
        assert a.alive() and b.alive()
    finally:
        a.stop()
        b.stop()
    assert callers == ["qa.0", "qb.0"]  # one each, and each step once
