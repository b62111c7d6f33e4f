"""Runs are records of ours: the workflow service writes a run's record (owner, fingerprint, status …) before
its id is returned, lists runs by querying the records, and keeps their status in step with the runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from knowledge import PatternRegistry
from knowledge.model import validate_spec
from server.security import Principal
from server.store import WorkflowRun
from server.store.memory import MemoryStore
from server.workflows import StepServices, WorkflowService, memory_runtime, open_workflows
from server.workflows.access import own_id
from server.workflows.runtime import RunRecord
from server.workflows.service import RunConflict, RunNotFound
from tests.services import until

pytestmark = pytest.mark.anyio
GATE = {"name": "gate", "steps": [{"id": "g", "kind": "approval"}]}
SAY = {"name": "say", "steps": [{"id": "s", "kind": "pattern", "with": {"pattern": "say", "variables": {"text": "hi"}}}],
       "outputs": {"said": "{{ steps.s.output.text }}"}}
ALICE, BOB, CAROL = (Principal(f"key:{name}", "user") for name in ("alice", "bob", "carol"))
FAILS = {"name": "fails", "steps": [{"id": "s", "kind": "pattern", "with": {"pattern": "missing"}}]}


class WatchedRuntime:
    """The in-memory runtime, with the calls the service makes counted; listing the runtime's runs is refused
    (listing must be a query on the records)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.name, self.gets, self.started = inner, inner.name, 0, []

    async def start(self, run_id: str, workflow: str, arguments: dict[str, Any], fingerprint: str) -> bool:
        self.started.append((run_id, arguments))
        return await self.inner.start(run_id, workflow, arguments, fingerprint)

    async def get(self, run_id: str) -> RunRecord | None:
        self.gets += 1
        return await self.inner.get(run_id)

    async def list(self, status: str | None, limit: int, offset: int) -> list[RunRecord]:
        raise AssertionError("runs were listed from the runtime")

    async def finished(self, run_id: str) -> None:
        await self.inner.finished(run_id)

    async def cancel(self, run_id: str) -> None:
        await self.inner.cancel(run_id)

    async def send(self, run_id: str, topic: str, message: Any) -> None:
        await self.inner.send(run_id, topic, message)

    async def recorded(self, run_id: str) -> dict[str, Any]:
        return await self.inner.recorded(run_id)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
async def watched(store: MemoryStore) -> AsyncIterator[tuple[WorkflowService, WatchedRuntime]]:
    clock = iter(range(1, 100_000))
    patterns = PatternRegistry(store.patterns)
    await patterns.register(validate_spec({"name": "say", "template": "{{ text }}", "description": "Says it"}))
    runtimes: list[WatchedRuntime] = []

    @asynccontextmanager
    async def factory(interpreter: Any) -> AsyncIterator[WatchedRuntime]:
        async with memory_runtime()(interpreter) as inner:
            runtimes.append(WatchedRuntime(inner))
            yield runtimes[-1]

    async with open_workflows(StepServices(patterns=patterns), store, runtime_factory=factory,
                              clock=lambda: float(next(clock))) as service:
        yield service, runtimes[0]


async def test_a_run_is_recorded_with_its_owner_before_its_id_is_returned(
        watched: tuple[WorkflowService, WatchedRuntime], store: MemoryStore) -> None:
    service, runtime = watched
    await service.save(SAY)
    run_id, started = await service.start("say", {}, caller=ALICE)
    record = await store.runs.get_run(run_id)
    assert started and record is not None
    assert (record.owner, record.workflow, record.workflow_version, record.steps) == ("key:alice", "say", 1, 1)
    assert "owner" not in runtime.started[0][1]  # ownership is the record's, not the run's arguments
    status = await service.wait(run_id, 5, caller=ALICE)
    assert status.status == "completed" and status.outputs == {"said": "hi"}
    assert (await store.runs.get_run(run_id)).status == "completed"
    with pytest.raises(RunNotFound, match=f"no run '{run_id}'"):
        await service.status(run_id, BOB)  # another owner's run is not found


async def test_listing_queries_the_records_by_owner_status_and_page(
        watched: tuple[WorkflowService, WatchedRuntime], store: MemoryStore) -> None:
    service, runtime = watched
    for i in range(3000):  # other people's history: a scan would walk it, a query does not
        await store.runs.create_run(WorkflowRun(run_id=f"old-{i}", workflow="w", fingerprint="f", created_at=0.5,
                                                owner="key:bob", status="completed"))
    mine = [(await service.start(GATE, {}, f"mine-{i}", caller=ALICE))[0]
            for i in range(5)]
    done, _ = await service.start(SAY | {"name": "say-inline"}, {}, "mine-done", caller=ALICE)
    await service.wait(done, 5, caller=ALICE)
    async def every_gate_open() -> bool:
        return [(await service.status(r, ALICE)).status for r in mine] == ["waiting"] * 5

    await until(every_gate_open, 5, "every gate open", interval_s=0.01)
    gets = runtime.gets
    page = await service.list(None, 2, 1, ALICE)
    assert [s.run_id for s in page] == [mine[4], mine[3]] and runtime.gets == gets  # no runtime read per run
    assert [s.run_id for s in await service.list("completed", 10, 0, ALICE)] == ["mine-done"]
    waiting = await service.list("waiting", 10, 0, ALICE)
    assert [s.run_id for s in waiting] == mine[::-1] and {s.status for s in waiting} == {"waiting"}
    assert len(await service.list(None, 100, 0, None)) == 100
    assert (await service.list(None, 1, 0, ALICE))[0].progress.total == 1


async def test_a_run_record_follows_its_run_to_failure_and_cancellation(
        watched: tuple[WorkflowService, WatchedRuntime], store: MemoryStore) -> None:
    service, _ = watched
    failing, _ = await service.start(FAILS, {})
    assert (await service.wait(failing, 5)).status == "failed"
    record = await store.runs.get_run(failing)
    assert record.status == "failed" and "missing" in (record.error or "")
    gated, _ = await service.start(GATE, {})
    async def marked_running() -> bool:  # the run's entry point marks it running
        return (await store.runs.get_run(gated)).status == "running"

    await until(marked_running, 5, "the run's record marked running", interval_s=0.01)
    assert (await service.cancel(gated)).status == "cancelled"
    assert (await store.runs.get_run(gated)).status == "cancelled"
    assert [s.run_id for s in await service.list("cancelled", 10, 0)] == [gated]


async def test_a_record_the_runtime_got_ahead_of_is_written_back_when_read(
        watched: tuple[WorkflowService, WatchedRuntime], store: MemoryStore) -> None:
    service, _ = watched
    run_id, _ = await service.start(SAY | {"name": "ahead"}, {})
    await service.wait(run_id, 5)
    await store.runs.set_run_status(run_id, "running", 1.0, if_unfinished=False)  # as if its end was never written
    assert (await service.status(run_id)).status == "completed"
    assert (await store.runs.get_run(run_id)).status == "completed"


async def test_a_run_recorded_but_not_started_is_started_by_the_same_call_again(
        watched: tuple[WorkflowService, WatchedRuntime], store: MemoryStore) -> None:
    service, runtime = watched
    await service.start(SAY | {"name": "first"}, {}, "probe", caller=ALICE)  # the fingerprint her start records
    fingerprint = (await store.runs.get_run(own_id("probe", ALICE.id))).fingerprint
    key = own_id("interrupted", ALICE.id)  # where alice's own run id "interrupted" is kept
    await store.runs.create_run(WorkflowRun(run_id=key, workflow="first", fingerprint=fingerprint,
                                            created_at=1.0, owner="key:alice", steps=1))
    shown = await service.status("interrupted", ALICE)  # the server stopped before starting it
    assert shown.status == "pending" and "not started" in (shown.error or "") and shown.run_id == "interrupted"
    with pytest.raises(RunConflict, match="exists with a different workflow"):
        await service.start(SAY | {"name": "other"}, {}, "interrupted", caller=ALICE)
    run_id, started = await service.start(SAY | {"name": "first"}, {}, "interrupted", caller=ALICE)
    assert (run_id, started) == ("interrupted", True) and len(runtime.started) == 2
    assert runtime.started[-1][0] == key
    assert (await service.wait(run_id, 5, caller=ALICE)).status == "completed"
    # bob's "interrupted" is his own: it neither finds nor takes alice's
    bobs, started = await service.start(SAY | {"name": "first"}, {}, "interrupted", caller=BOB)
    assert started and (await store.runs.get_run(own_id("interrupted", BOB.id))).owner == "key:bob"


async def test_a_run_started_before_run_records_is_adopted_with_its_owner(
        watched: tuple[WorkflowService, WatchedRuntime], store: MemoryStore) -> None:
    service, runtime = watched
    # What an older server started: the owner inside the run's arguments, no record in the store.
    arguments = {"definition": GATE, "library": {}, "inputs": {}, "owner": "key:carol"}
    await runtime.inner.start("legacy", "gate", arguments, "legacy-fingerprint")
    with pytest.raises(RunNotFound, match="no run 'legacy'"):
        await service.status("legacy", Principal("key:dave", "user"))
    assert (await service.status("legacy", CAROL)).workflow == "gate"
    record = await store.runs.get_run("legacy")
    assert record is not None and record.owner == "key:carol" and record.steps == 1
    assert [s.run_id for s in await service.list(None, 10, 0, CAROL)] == ["legacy"]
