"""The workflow service on the in-memory runtime: typed step outcomes, bounded sub-workflow expansion, the
per-principal ceilings, separation of duties on approvals, callers' own run ids, waits on events, the bound on
finished in-memory runs, and how step failures are logged."""

from __future__ import annotations

import ast
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from server.security import Principal
from server.security.limits import CeilingExceeded
from server.security.settings import LimitSettings
from server.store.memory import MemoryStore, MemoryWorkflows
from server.workflows import StepServices, open_workflows
from server.workflows.interpreter import Interpreter
from server.workflows.model import InvalidWorkflow
from server.workflows.outcome import StepOutcome
from server.workflows.run_records import RecordedRuns
from server.workflows.runtime import MemoryRuntime
from server.workflows.service import ApprovalRefused, RunNotFound, WorkflowService
from server.workflows.tracker import RunTracker

pytestmark = pytest.mark.anyio
ALICE, BOB, OPS = Principal("key:alice", "user"), Principal("key:bob", "user"), Principal("key:ops", "admin")
REPO = Path(__file__).resolve().parents[2]


class CountingWorkflows(MemoryWorkflows):
    """The in-memory saved workflows, counting reads."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: dict[str, int] = {}

    async def get_workflow(self, name: str) -> Any:
        self.reads[name] = self.reads.get(name, 0) + 1
        return await super().get_workflow(name)


@asynccontextmanager
async def service(store: MemoryStore | None = None, *, max_finished_runs: int = 1_000,
                  **limits: Any) -> AsyncIterator[WorkflowService]:
    store = store or MemoryStore()
    tracker = RunTracker()
    interpreter = RecordedRuns(Interpreter(StepServices(), tracker), store.runs)
    runtime = MemoryRuntime(max_finished_runs=max_finished_runs)
    async with runtime.running(interpreter.execute):
        yield WorkflowService(runtime, store.workflows, tracker, runs=store.runs, limits=LimitSettings(**limits))


def gate(name: str = "gate", count: int = 1, **with_: Any) -> dict:
    return {"name": name, "steps": [{"id": f"g{i}", "kind": "approval", "with": {"timeout_s": 600, **with_}}
                                    for i in range(count)]}


def failing(name: str = "fails") -> dict:  # a pattern step with no pattern library: fails at once
    return {"name": name, "steps": [{"id": "p", "kind": "pattern", "with": {"pattern": "x"}, "on_error": "continue"}]}


async def until_waiting(workflows: WorkflowService, run_id: str, caller: Principal) -> None:
    """Wait (bounded) on the tracker's change events until the run shows an approval waiting (a server-made id:
    the runtime's own)."""
    with anyio.fail_after(5):
        while True:
            changed = workflows.tracker.changed(run_id)
            if (await workflows.status(run_id, caller)).status == "waiting":
                return
            await changed.wait()


def test_step_outcomes_read_the_records_earlier_versions_wrote() -> None:
    skip = StepOutcome.from_record({"status": "skipped", "output": None, "reason": "condition is false",
                                    "attempts": 0})
    assert skip == StepOutcome.skipped("condition is false")
    done = StepOutcome.from_record({"status": "completed", "output": {"text": "x"}, "attempts": 2,
                                    "started_at": 1.0, "ended_at": 2.5})
    assert (done.status, done.output, done.attempts, done.ended_at) == ("completed", {"text": "x"}, 2, 2.5)
    assert StepOutcome.from_record(done.record()) == done
    assert StepOutcome.from_record({"opened_at": 3.0}) is None and StepOutcome.from_record(None) is None
    assert StepOutcome.from_record({"status": "exploded"}) is None


async def test_sub_workflows_are_read_once_and_the_ceiling_stops_the_expansion() -> None:
    store = MemoryStore()
    store.workflows = CountingWorkflows()
    async with service(store) as workflows:
        await workflows.save({"name": "child", "steps": [{"id": f"c{i}", "kind": "pattern", "with": {"pattern": "x"}}
                                                          for i in range(10)]})
        await workflows.save({"name": "mid", "steps": [{"id": f"m{i}", "kind": "workflow",
                                                        "with": {"workflow": "child"}} for i in range(9)]})
        store.workflows.reads.clear()
        fan_out = {"name": "fan", "steps": [{"id": f"f{i}", "kind": "workflow", "with": {"workflow": "mid"}}
                                            for i in range(200)]}  # 200 x 99 steps once expanded
        with pytest.raises(CeilingExceeded, match=r"at least 1,?\d+ steps .* ceiling of 1000"):
            await workflows.start(fan_out, {}, caller=ALICE)
        assert store.workflows.reads == {"mid": 1, "child": 1}
        assert await workflows.list(None, 10, 0, ALICE) == []


async def test_unfinished_runs_per_principal_have_a_ceiling() -> None:
    async with service(workflow_max_active_runs=2) as workflows:
        for _ in range(2):
            await workflows.start(gate(), {}, caller=ALICE)
        with pytest.raises(CeilingExceeded, match=r"2 of your workflow runs are unfinished.*= 2\)"):
            await workflows.start(gate(), {}, caller=ALICE)
        await workflows.start(gate(), {}, caller=BOB)  # another principal's count is its own
        finished, _ = await workflows.start(failing(), {}, caller=BOB)
        with anyio.fail_after(5):
            assert (await workflows.wait(finished, 5, caller=BOB)).status == "completed"
        await workflows.start(gate(), {}, caller=BOB)  # a finished run does not count


async def test_approval_steps_per_principal_have_a_ceiling() -> None:
    async with service(workflow_max_waiting_approvals=3) as workflows:
        with pytest.raises(CeilingExceeded, match="this run has 4 approval step"):
            await workflows.start(gate(count=4), {}, caller=ALICE)
        await workflows.start(gate(count=2), {}, caller=ALICE)
        with pytest.raises(CeilingExceeded, match=r"2 approval step\(s\) and your unfinished runs 2"):
            await workflows.start(gate(count=2), {}, caller=ALICE)
        await workflows.start(gate(count=3), {}, caller=BOB)


async def test_a_starter_is_refused_as_approver_when_the_step_says_not_starter() -> None:
    async with service() as workflows:
        run_id, _ = await workflows.start(gate(not_starter=True, approvers=["user"]), {}, caller=ALICE)
        await until_waiting(workflows, run_id, ALICE)
        with pytest.raises(ApprovalRefused, match="started the run may not decide it"):
            await workflows.decide(run_id, "approved", caller=ALICE)
        decided = await workflows.decide(run_id, "approved", comment="ok", caller=BOB)  # named by role: may decide
        with anyio.fail_after(5):
            final = await workflows.wait(run_id, 5, caller=ALICE)
        assert final.status == "completed"
        output = next(s for s in final.steps if s.id == "g0").output
        assert (output["by"], output["role"], output["comment"]) == ("key:bob", "user", "ok")
        assert decided.run_id == run_id


async def test_approvers_name_roles_or_principals() -> None:
    async with service() as workflows:
        run_id, _ = await workflows.start(gate(approvers=["admin", "key:bob"]), {}, caller=ALICE)
        await until_waiting(workflows, run_id, ALICE)
        with pytest.raises(ApprovalRefused, match="needs an approver among admin, key:bob; you are key:alice"):
            await workflows.decide(run_id, "approved", caller=ALICE)
        other = Principal("key:carol", "user")
        with pytest.raises(RunNotFound):  # not named: the run is as unknown to carol as before
            await workflows.decide(run_id, "approved", caller=other)
        await workflows.decide(run_id, "rejected", caller=OPS)
        with anyio.fail_after(5):
            final = await workflows.wait(run_id, 5, caller=ALICE)
        step = next(s for s in final.steps if s.id == "g0")
        assert (final.status, step.error_class, step.output["by"]) == ("failed", "rejected", "key:ops")


async def test_by_default_only_the_owner_and_admins_decide() -> None:
    async with service() as workflows:
        run_id, _ = await workflows.start(gate(), {}, caller=ALICE)
        await until_waiting(workflows, run_id, ALICE)
        with pytest.raises(RunNotFound):
            await workflows.decide(run_id, "approved", caller=BOB)
        await workflows.decide(run_id, "approved", caller=ALICE)


async def test_a_callers_run_ids_are_its_own() -> None:
    async with service() as workflows:
        mine, started = await workflows.start(gate(), {}, "release-1", caller=ALICE)
        theirs, also_started = await workflows.start(failing(), {}, "release-1", caller=BOB)
        assert (mine, started, theirs, also_started) == ("release-1", True, "release-1", True)
        assert (await workflows.status("release-1", ALICE)).workflow == "gate"
        assert (await workflows.status("release-1", BOB)).workflow == "fails"
        assert (await workflows.start(gate(), {}, "release-1", caller=ALICE)) == ("release-1", False)
        server_made, _ = await workflows.start(gate(), {}, caller=ALICE)
        with pytest.raises(RunNotFound, match=f"no run '{server_made}'"):
            await workflows.status(server_made, BOB)
        admin_view = {s.run_id for s in await workflows.list(None, 10, 0, OPS)}
        assert server_made in admin_view and len([r for r in admin_view if r.startswith("release-1:")]) == 2


async def test_a_nan_approval_timeout_is_a_validation_error() -> None:
    async with service() as workflows:
        for timeout in (math.nan, math.inf, -5):
            with pytest.raises(InvalidWorkflow, match="timeout_s"):
                await workflows.start(gate(timeout_s=timeout), {}, caller=ALICE)


async def test_wait_returns_when_the_run_ends() -> None:
    async with service() as workflows:
        run_id, _ = await workflows.start(gate(), {}, caller=ALICE)
        seen: list[tuple[float, float]] = []

        async def progress(done: float, total: float, message: str) -> None:
            seen.append((done, total))

        async with anyio.create_task_group() as tg:
            result: list[Any] = []

            async def waiter() -> None:
                result.append(await workflows.wait(run_id, 30, progress, ALICE))

            tg.start_soon(waiter)
            await until_waiting(workflows, run_id, ALICE)
            with anyio.fail_after(5):
                await workflows.decide(run_id, "approved", caller=ALICE)
        assert result[0].status == "completed" and seen[-1] == (1, 1)


def test_waits_use_events_not_sleep_loops() -> None:
    for module in ("service", "runtime", "dbos_runtime", "tracker", "deferred", "lazy", "status", "access"):
        tree = ast.parse((REPO / "server" / "workflows" / f"{module}.py").read_text())
        sleeps = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                  and node.attr in ("sleep", "sleep_until")]
        assert not sleeps, (module, sleeps)


async def test_finished_in_memory_runs_are_bounded_oldest_first() -> None:
    # The runtime keeps the steps of the 3 newest finished runs; the records (status, error) of 4 runs.
    async with service(MemoryStore(max_runs=4), max_finished_runs=3) as workflows:
        waiting, _ = await workflows.start(gate(), {}, caller=ALICE)
        finished = []
        for i in range(5):
            run_id, _ = await workflows.start(failing(f"f{i}"), {}, caller=ALICE)
            with anyio.fail_after(5):
                await workflows.wait(run_id, 5, caller=ALICE)
            finished.append(run_id)
        kept = [s.run_id for s in await workflows.list(None, 10, 0, ALICE)]
        assert kept == [*finished[:1:-1], waiting]  # the three newest finished, and the unfinished one
        with pytest.raises(RunNotFound):
            await workflows.status(finished[0], ALICE)
    async with service(MemoryStore(max_runs=10), max_finished_runs=1) as workflows:
        first, _ = await workflows.start(failing("first"), {}, "first", caller=ALICE)
        with anyio.fail_after(5):
            assert (await workflows.wait(first, 5, caller=ALICE)).steps
        for i in range(2):
            await workflows.wait((await workflows.start(failing(f"n{i}"), {}, caller=ALICE))[0], 5, caller=ALICE)
        forgotten = await workflows.status(first, ALICE)  # its steps are gone, its record stays
        assert (forgotten.status, forgotten.steps, forgotten.run_id) == ("completed", [], "first")
        assert await workflows.start(failing("first"), {}, "first", caller=ALICE) == ("first", False)  # not rerun


async def test_a_step_failure_is_logged_once_at_warning_with_run_and_class(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="server.workflows")
    async with open_workflows(StepServices(), MemoryStore()) as workflows:
        run_id, _ = await workflows.start(failing(), {})
        with anyio.fail_after(5):
            assert (await workflows.wait(run_id, 5)).status == "completed"
    records = [r for r in caplog.records if r.name.startswith("server.workflows")]
    assert [(r.levelname, r.getMessage()) for r in records if r.levelno >= logging.WARNING] == [
        ("WARNING", f"workflow run {run_id}: step p failed (pattern_error) after 1 attempt(s)")]
    # the run's state changes are INFO lines (what log notifications forward); none repeats the failure
    assert [r.getMessage() for r in records if r.levelno < logging.WARNING] == [
        f"run {run_id} running", f"run {run_id} completed"]
