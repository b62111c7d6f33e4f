"""The small runtime interface the interpreter runs on, and the in-memory runtime (simple mode, unit tests).

A runtime gives each run an :class:`Execution`. The interpreter asks it for every slot it may need **at the
start of the run, in a fixed topological order** — a :class:`StepSlot` per step and one :class:`MessageSlot`
for the run's approval decisions — and only then starts the branches. A durable runtime (DBOS) numbers its
records by that order, so which branch finishes first never changes which record a step replays. This module
imports nothing beyond the standard library and anyio.

The in-memory runtime keeps every unfinished run and the newest :data:`MAX_FINISHED_RUNS` finished ones;
older finished runs are forgotten, oldest first (their ids then answer like unknown ones).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
from anyio.abc import TaskGroup

StepFn = Callable[[], Awaitable[Any]]
MAX_FINISHED_RUNS = 1_000
"""Finished runs the in-memory runtime keeps (the newest); unfinished runs are always kept."""


class StepSlot(Protocol):
    """A step's place in the run's record. :meth:`run` runs ``fn`` once and records its JSON result; in a
    replay after a crash, a recorded result comes back without running ``fn`` again."""

    async def run(self, fn: StepFn) -> Any: ...


class MessageSlot(Protocol):
    """A mailbox for one topic of one run (approval decisions): messages in the order they were sent."""

    async def receive(self) -> Any:
        """The next message sent to this topic (waits; bound it with a cancel scope). A durable runtime records
        each message received, so a replay receives the same messages in the same order."""
        ...


class Execution(Protocol):
    """One run as the runtime executes it."""

    run_id: str

    def step_slot(self, name: str) -> StepSlot: ...

    async def message_slot(self, topic: str, task_group: TaskGroup, *, repeat: bool = True) -> MessageSlot:
        """A mailbox whose receiver runs in ``task_group`` (cancelled when the run ends); a durable runtime's
        receiver takes its record's place now, at this point of the plan. ``repeat=False``: one message only
        (the receiver takes no further records)."""
        ...


@dataclass
class _MemorySlot:
    name: str
    records: dict[str, Any]

    async def run(self, fn: StepFn) -> Any:
        if self.name in self.records:
            return self.records[self.name]
        result = await fn()
        self.records[self.name] = result
        return result


class Inbox:
    """Messages in arrival order, handed out one by one (:class:`MessageSlot` of the in-memory runtime, and
    where the durable runtime puts what it received)."""

    def __init__(self) -> None:
        self._messages: deque[Any] = deque()
        self._arrived: anyio.Event | None = None

    def put(self, message: Any) -> None:
        self._messages.append(message)
        if self._arrived is not None:
            self._arrived.set()
            self._arrived = None

    async def receive(self) -> Any:
        while not self._messages:
            if self._arrived is None:
                self._arrived = anyio.Event()
            await self._arrived.wait()
        return self._messages.popleft()


@dataclass
class _MemoryExecution:
    run_id: str
    records: dict[str, Any]
    mailboxes: dict[str, Inbox]

    def step_slot(self, name: str) -> StepSlot:
        return _MemorySlot(name, self.records)

    async def message_slot(self, topic: str, task_group: TaskGroup, *, repeat: bool = True) -> MessageSlot:
        return self.mailboxes.setdefault(topic, Inbox())


@dataclass
class RunRecord:
    """A run as a runtime reports it.

    Attributes:
        status: ``pending``, ``running``, ``completed``, ``failed`` or ``cancelled``.
        arguments: ``{"definition", "library", "inputs"}`` as the run was started with.
        fingerprint: SHA-256 of the arguments (the same run id with other arguments is refused).
        output: ``{"outputs": ...}`` once completed; error: the failure message once failed.
        created_at / updated_at: Unix seconds.
    """

    run_id: str
    workflow: str
    arguments: dict[str, Any]
    fingerprint: str
    status: str
    output: Any = None
    error: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0


class WorkflowRuntime(Protocol):
    """What the workflow service needs of a runtime (in-memory or DBOS)."""

    name: str

    async def start(self, run_id: str, workflow: str, arguments: dict[str, Any], fingerprint: str) -> bool:
        """Start a run; ``False`` when ``run_id`` exists already (nothing is started)."""
        ...

    async def get(self, run_id: str) -> RunRecord | None: ...

    async def list(self, status: str | None, limit: int, offset: int) -> list[RunRecord]:
        """Runs, newest first."""
        ...

    async def cancel(self, run_id: str) -> None: ...

    async def finished(self, run_id: str) -> None:
        """Return once the run's final record (completed, failed or cancelled) can be read; waits on the
        runtime's own completion signal, not by polling. Callers bound the wait with a cancel scope."""
        ...

    async def send(self, run_id: str, topic: str, message: Any) -> None: ...

    async def recorded(self, run_id: str) -> dict[str, Any]:
        """Step record name -> recorded outcome."""
        ...


@dataclass
class MemoryRun:
    """What the in-memory runtime keeps of one run: its arguments, recorded step results, outcome."""

    run_id: str
    workflow: str
    arguments: dict[str, Any]
    fingerprint: str
    created_at: float
    records: dict[str, Any] = field(default_factory=dict)
    mailboxes: dict[str, Inbox] = field(default_factory=dict)
    status: str = "pending"  # pending | running | completed | failed | cancelled
    output: Any = None
    error: str | None = None
    updated_at: float = 0.0
    done: anyio.Event = field(default_factory=anyio.Event)
    cancel_scope: anyio.CancelScope | None = None


RunBody = Callable[[Execution, dict[str, Any]], Awaitable[Any]]


class MemoryRuntime:
    """Runs workflows as tasks of one task group; nothing survives the process (no recovery).

    Start it with ``async with runtime.running(body):`` where ``body(execution, arguments)`` is the
    interpreter's entry point.
    """

    name = "memory"

    def __init__(self, *, clock: Callable[[], float] = time.time, max_finished_runs: int = MAX_FINISHED_RUNS) -> None:
        self._clock = clock
        self._runs: dict[str, MemoryRun] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()  # finished run ids, oldest first
        self._max_finished = max_finished_runs
        self._task_group: TaskGroup | None = None
        self._body: RunBody | None = None

    def running(self, body: RunBody) -> _Running:
        """Context manager: runs are accepted inside it and cancelled when it exits."""
        return _Running(self, body)

    async def start(self, run_id: str, workflow: str, arguments: dict[str, Any], fingerprint: str) -> bool:
        """Start a run; ``False`` when ``run_id`` already exists (it is not started again).

        Raises:
            RuntimeError: the runtime is not running.
        """
        if self._task_group is None or self._body is None:
            raise RuntimeError("the workflow runtime is not running")
        if run_id in self._runs:
            return False
        now = self._clock()
        run = self._runs[run_id] = MemoryRun(run_id, workflow, arguments, fingerprint, now, updated_at=now)
        self._task_group.start_soon(self._execute, run, self._body)
        return True

    async def _execute(self, run: MemoryRun, body: RunBody) -> None:
        run.status = "running"
        with anyio.CancelScope() as scope:
            run.cancel_scope = scope
            try:
                run.output = await body(_MemoryExecution(run.run_id, run.records, run.mailboxes), run.arguments)
                run.status = "completed"
            except Exception as exc:  # noqa: BLE001 - a failed run is an outcome, recorded as such
                run.status, run.error = "failed", str(exc)
        if scope.cancelled_caught and run.status == "running":
            run.status = "cancelled"
        run.updated_at = self._clock()
        run.done.set()
        self._finished[run.run_id] = None
        while len(self._finished) > self._max_finished:  # bounded like simple mode's other stores
            evicted, _ = self._finished.popitem(last=False)
            self._runs.pop(evicted, None)

    async def get(self, run_id: str) -> RunRecord | None:
        run = self._runs.get(run_id)
        return None if run is None else _record(run)

    async def list(self, status: str | None, limit: int, offset: int) -> list[RunRecord]:
        runs = sorted(self._runs.values(), key=lambda r: r.created_at, reverse=True)
        return [_record(r) for r in runs if status is None or r.status == status][offset:offset + limit]

    async def cancel(self, run_id: str) -> None:
        run = self._runs.get(run_id)
        if run is not None and run.status in ("pending", "running"):
            run.status = "cancelled"
            if run.cancel_scope is not None:
                run.cancel_scope.cancel()

    async def finished(self, run_id: str) -> None:
        run = self._runs.get(run_id)
        if run is not None:
            await run.done.wait()

    async def send(self, run_id: str, topic: str, message: Any) -> None:
        run = self._runs.get(run_id)
        if run is not None:
            run.mailboxes.setdefault(topic, Inbox()).put(message)

    async def recorded(self, run_id: str) -> dict[str, Any]:
        run = self._runs.get(run_id)
        return dict(run.records) if run else {}


def _record(run: MemoryRun) -> RunRecord:
    return RunRecord(run.run_id, run.workflow, run.arguments, run.fingerprint, run.status, run.output, run.error,
                     run.created_at, run.updated_at)


class _Running:
    def __init__(self, runtime: MemoryRuntime, body: RunBody) -> None:
        self._runtime = runtime
        self._body = body
        self._cm: Any = None

    async def __aenter__(self) -> MemoryRuntime:
        self._cm = anyio.create_task_group()
        self._runtime._task_group = await self._cm.__aenter__()
        self._runtime._body = self._body
        return self._runtime

    async def __aexit__(self, *exc: Any) -> bool | None:
        assert self._runtime._task_group is not None
        self._runtime._task_group.cancel_scope.cancel()
        self._runtime._task_group = None
        return await self._cm.__aexit__(*exc)
