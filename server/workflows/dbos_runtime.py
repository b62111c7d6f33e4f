"""The durable runtime: each run is one DBOS workflow; each DAG step is one DBOS step at an ID reserved at the
start of the run.

Durability contract (what DBOS gives, and how this module keeps its side of it):

- DBOS matches a step's recorded result to the call **by the step's ID, a counter drawn in call order**
  (``check_operation_execution(workflow_id, function_id, name)`` in ``dbos/_sys_db.py``; a recorded name that
  differs raises ``DBOSUnexpectedStepError``). The interpreter therefore reserves every step's ID
  (``DBOS.reserve_step()``) and starts every approval's ``DBOS.recv_async`` at the start of the run, in a fixed
  topological order, before any branch runs; each step later runs at its reserved ID whichever branch
  finishes first. A step is named by its DAG id.
- A step whose result is recorded never runs again (replay returns the record); a step running at a crash has
  no record and runs again (at least once). A step's failure is recorded too (as a result with
  ``status: failed``), so a failed step is not retried by recovery.
- The run's result is DBOS's workflow output, recorded once. The same run id started twice attaches to the
  first run (``SetWorkflowID``); the service refuses the same id with other arguments (a fingerprint).
- ``application_version`` is pinned (:data:`APPLICATION_VERSION`, overridable) so an upgrade of this code
  does not strand pending runs (DBOS's default is a hash of the workflow source).
- ``DBOS.launch()`` recovers this executor's pending runs; the interpreter is bound before, so recovered runs
  find their services.
- On PostgreSQL (replicas sharing one database) runs are enqueued on the DBOS queue :data:`RUN_QUEUE`, which
  every replica listens to: any replica with capacity (``worker_concurrency``) executes them. Each replica's
  DBOS executor id is its replica id, held under an advisory lock; :mod:`server.workflows.replicas` resumes the
  runs of a replica that died.
- DBOS's logger writes to stderr (a ``StreamHandler`` with no stream: ``sys.stderr``), never stdout. A run that
  fails with :class:`~server.workflows.interpreter.RunFailed` (a step's ordinary failure, logged once by the
  interpreter at WARNING) is not logged again by DBOS with a traceback at ERROR (:class:`_ExpectedFailures`).

Waiting without polling: approval decisions arrive through ``DBOS.recv_async`` (one receiver per run, on one
topic; DBOS wakes it from its notification listener); a run executing in this process is awaited on its own
asyncio task, which ends once DBOS has recorded the run's result; only a run executing on another replica is
awaited through a DBOS workflow handle's ``get_result`` (DBOS's own database checks). DBOS's executor runs at
most :data:`MAX_EXECUTOR_THREADS` threads (its default is unbounded: a run with a thousand approvals opening
at once held a thread each).

Only one DBOS instance exists per process (DBOS keeps it in a module global); :class:`DbosRuntime` binds the
current interpreter to the workflow function below.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup, TaskStatus
from dbos import DBOS, DBOSConfig, SetWorkflowID

from server.workflows.interpreter import Interpreter, RunFailed
from server.workflows.runtime import Inbox, RunRecord, StepFn, WorkflowRuntime

if TYPE_CHECKING:
    from server.workflows.replicas import Replica

logger = logging.getLogger(__name__)
APPLICATION_VERSION = "ai-orchestration-workflows-1"
"""Bump only when a change makes old runs' step records unreplayable (the plan order or the slot names)."""
WORKFLOW_NAME = "ai_orchestration_run"
TICK_NAME = "ai_orchestration_schedule_tick"
TICK_BIND_WAIT_S = 120.0
"""How long a tick recovered at launch waits for the workflow service to bind the schedules."""
SCHEDULER_POLLING_S = 1.0
"""How soon DBOS's scheduler on each replica sees a schedule added, changed or paused."""
RUN_QUEUE = "ai_orchestration_runs"
"""The DBOS queue runs go on when replicas share a PostgreSQL database."""
QUEUE_POLLING_S = 0.2
"""How often each replica's DBOS queue worker looks for runs to start."""
RECV_TIMEOUT_S = 32 * 86_400.0
"""How long an approval's receiver may wait (beyond the longest approval timeout)."""
MAX_EXECUTOR_THREADS = 8
"""Threads of DBOS's executor (its checkpoint writes and database reads run there)."""
_STATUS = {"PENDING": "running", "ENQUEUED": "pending", "DELAYED": "pending", "SUCCESS": "completed",
           "ERROR": "failed", "CANCELLED": "cancelled", "MAX_RECOVERY_ATTEMPTS_EXCEEDED": "failed"}
_DBOS_STATUS = {"running": ["PENDING"], "pending": ["ENQUEUED", "DELAYED"], "completed": ["SUCCESS"],
                "failed": ["ERROR", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"], "cancelled": ["CANCELLED"]}


@dataclass
class _Binding:
    """The interpreter the workflow function runs, and the runs executing here (each on its asyncio task)."""

    interpreter: Interpreter
    on_tick: Callable[[dict[str, Any], datetime], Awaitable[str]] | None = None
    ticks_bound: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: dict[str, asyncio.Task[Any]] = field(default_factory=dict)
    started: dict[str, Any] = field(default_factory=dict)  # handles of runs started here, until they execute

    def executing(self, run_id: str, task: asyncio.Task[Any] | None) -> None:
        self.started.pop(run_id, None)
        if task is None:
            return
        self.tasks[run_id] = task

        def done(finished: asyncio.Task[Any]) -> None:
            if self.tasks.get(run_id) is finished:
                del self.tasks[run_id]

        task.add_done_callback(done)


_bound: list[_Binding] = []


@DBOS.workflow(name=WORKFLOW_NAME)
async def _run(workflow: str, arguments: dict[str, Any], fingerprint: str) -> dict[str, Any]:
    if not _bound:
        raise RuntimeError("no interpreter bound to the DBOS runtime")
    binding, run_id = _bound[-1], DBOS.workflow_id or ""
    # This task ends after DBOS has recorded the run's result: waiters here await it (DbosRuntime.finished).
    binding.executing(run_id, asyncio.current_task())
    return await binding.interpreter.execute(_Execution(run_id), arguments)


@DBOS.workflow(name=TICK_NAME)
async def _tick(scheduled_at: datetime, context: dict[str, Any]) -> str:
    """One tick of a saved workflow's schedule (DBOS's scheduler starts it once per tick, across replicas, under
    the id ``sched-<schedule>-<tick time>``): starts the run, in one step whose record makes it happen once."""
    if not _bound:
        raise RuntimeError("no interpreter bound to the DBOS runtime")
    binding = _bound[-1]
    with anyio.fail_after(TICK_BIND_WAIT_S):  # a tick recovered at launch waits for the service to bind
        await binding.ticks_bound.wait()
    on_tick = binding.on_tick
    assert on_tick is not None

    async def fire() -> str:
        # In a task with a fresh context, outside this workflow's DBOS context (a ContextVar): the run is a
        # workflow of its own, not a child of the tick, and the service's DBOS calls are not recorded as the
        # tick's steps. Awaited at once. Its run id is the tick's, so a replay of this step attaches to the run.
        return await asyncio.get_running_loop().create_task(on_tick(context, scheduled_at),
                                                            context=contextvars.Context())

    return await DBOS.run_step_async({"name": "start_run", "retries_allowed": False}, fire)


class _Slot:
    def __init__(self, name: str) -> None:
        self._name = name
        self._reservation = DBOS.reserve_step()

    async def run(self, fn: StepFn) -> Any:
        return await self._reservation.run_async({"name": self._name, "retries_allowed": False,
                                                  "preemptible": True}, fn)


class _Mailbox(Inbox):
    """Messages of one topic, received by one task calling ``DBOS.recv_async`` again after each message (each
    call records the message, so a replay receives the same ones in the same order)."""

    async def pump(self, topic: str, repeat: bool, *, task_status: TaskStatus[None]) -> None:
        first = True
        while True:
            received = DBOS.recv_async(topic, timeout_seconds=RECV_TIMEOUT_S)
            if first:
                # recv_async draws its step IDs as soon as it runs, before it first suspends; start() hands control
                # back only once this task suspends, so the IDs are drawn before the plan reserves another.
                task_status.started()
                first = False
            message = await received
            if message is not None:
                self.put(message)
            if not repeat:
                return


class _Execution:
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def step_slot(self, name: str) -> _Slot:
        return _Slot(name)

    async def message_slot(self, topic: str, task_group: TaskGroup, *, repeat: bool = True) -> _Mailbox:
        box = _Mailbox()
        await task_group.start(box.pump, topic, repeat)
        return box


class DbosRuntime:
    """:class:`~server.workflows.runtime.WorkflowRuntime` on DBOS (launched by :func:`dbos_runtime`).

    Args:
        queue: enqueue runs on this DBOS queue (any replica listening runs them); ``None``: start them here.
    """

    name = "dbos"

    def __init__(self, binding: _Binding, queue: Any = None) -> None:
        self._binding = binding
        self._queue = queue

    async def start(self, run_id: str, workflow: str, arguments: dict[str, Any], fingerprint: str) -> bool:
        if await DBOS.get_workflow_status_async(run_id) is not None:
            return False
        with SetWorkflowID(run_id):
            if self._queue is not None:
                # Any replica may execute it: a waiter here retrieves its handle when it needs one.
                await self._queue.enqueue_async(_run, workflow, arguments, fingerprint)
                return True
            handle = await DBOS.start_workflow_async(_run, workflow, arguments, fingerprint)
        if run_id not in self._binding.tasks:
            self._binding.started[run_id] = handle
        return True

    async def finished(self, run_id: str) -> None:
        status = await DBOS.get_workflow_status_async(run_id)
        if status is None or _STATUS.get(str(status.status)) in ("completed", "failed", "cancelled"):
            return
        task = self._binding.tasks.get(run_id)
        if task is not None:  # executing here: its task ends once DBOS has recorded the result
            await asyncio.wait({task})
            return
        handle = self._binding.started.get(run_id) or await DBOS.retrieve_workflow_async(run_id)
        try:
            await handle.get_result()
        except Exception:  # noqa: BLE001 - a failed or cancelled run is finished too; its record says how
            pass

    async def get(self, run_id: str) -> RunRecord | None:
        status = await DBOS.get_workflow_status_async(run_id)
        if status is None or status.name != WORKFLOW_NAME:
            return None
        return _record(status)

    async def list(self, status: str | None, limit: int, offset: int) -> list[RunRecord]:
        found = await DBOS.list_workflows_async(name=WORKFLOW_NAME, status=_DBOS_STATUS.get(status or "", None),
                                                limit=limit, offset=offset, sort_desc=True)
        return [_record(s) for s in found]

    async def cancel(self, run_id: str) -> None:
        await DBOS.cancel_workflow_async(run_id)

    async def send(self, run_id: str, topic: str, message: Any) -> None:
        await DBOS.send_async(run_id, message, topic)

    async def recorded(self, run_id: str) -> dict[str, Any]:
        steps = await DBOS.list_workflow_steps_async(run_id) or []
        return {s["function_name"]: s["output"] for s in steps
                if s.get("error") is None and isinstance(s.get("output"), dict)}

    # -- schedules (DBOS's dynamic schedules: stored in the system database, fired by every replica's scheduler,
    # each tick's workflow id deterministic so that it runs once) ---------------------------------------------

    schedules_supported = True

    def bind_schedules(self, on_tick: Callable[[dict[str, Any], datetime], Awaitable[str]]) -> None:
        """``on_tick(context, scheduled_at)`` starts a tick's run (the workflow service's)."""
        self._binding.on_tick = on_tick
        self._binding.ticks_bound.set()

    async def set_schedules(self, workflow: str, schedules: Sequence[Mapping[str, Any]]) -> None:
        """Make DBOS's schedules of ``workflow`` these (``{"cron", "inputs", "paused"}`` each; named
        ``<workflow>.<index>``): new and changed ones applied, paused ones paused, removed ones deleted."""
        prefix = f"{workflow}."
        existing = {s["schedule_name"]: s for s in await DBOS.list_schedules_async(schedule_name_prefix=prefix)}
        for index, schedule in enumerate(schedules):
            name, context = f"{prefix}{index}", {"workflow": workflow, "index": index, "inputs": schedule["inputs"]}
            old = existing.pop(name, None)
            active = old is None or old["status"] == "ACTIVE"
            if old is None or old["schedule"] != schedule["cron"] or old["context"] != context:
                # automatic_backfill off: ticks missed while no replica ran are skipped (README, "Schedules").
                await DBOS.apply_schedules_async([{"schedule_name": name, "workflow_fn": _tick,
                                                   "schedule": schedule["cron"], "context": context}])
                active = True
            if schedule["paused"] and active:
                await anyio.to_thread.run_sync(DBOS.pause_schedule, name)
            elif not schedule["paused"] and not active:
                await anyio.to_thread.run_sync(DBOS.resume_schedule, name)
        for name in existing:
            await anyio.to_thread.run_sync(DBOS.delete_schedule, name)

    async def scheduled_workflows(self) -> list[str]:
        """The workflows DBOS holds schedules of."""
        found = await DBOS.list_schedules_async(workflow_name=TICK_NAME)
        return sorted({s["schedule_name"].rsplit(".", 1)[0] for s in found})


class _ExpectedFailures(logging.Filter):
    """Drops DBOS's ERROR record (with traceback) for a run that failed with :class:`RunFailed`: that is an
    outcome, which the interpreter logged once at WARNING; any other exception still reaches the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], RunFailed))


def _record(status: Any) -> RunRecord:
    args = (status.input or {}).get("args") or ("", {}, "")
    workflow, arguments, fingerprint = (list(args) + ["", {}, ""])[:3]
    error = status.error
    return RunRecord(run_id=status.workflow_id, workflow=workflow, arguments=arguments, fingerprint=fingerprint,
                     status=_STATUS.get(str(status.status), "running"), output=status.output,
                     error=None if error is None else str(error), created_at=(status.created_at or 0) / 1000,
                     updated_at=(status.updated_at or 0) / 1000)


def system_database_url(target: str | Path) -> str:
    """A system database URL: a ``postgresql://`` URL as it is, else a SQLite file path as ``sqlite:///…``."""
    text = str(target)
    if "://" in text:
        return text
    path = Path(text).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def dbos_config(system_database: str | Path, *, application_version: str = APPLICATION_VERSION,
                executor_id: str | None = None) -> DBOSConfig:
    """DBOS's configuration for this server (no OTLP, no Conductor, logs at WARNING to stderr)."""
    config: DBOSConfig = {
        "name": "ai-orchestration-mcp",
        "system_database_url": system_database_url(system_database),
        "application_version": application_version,
        "log_level": "WARNING",
        "notification_listener_polling_interval_sec": 0.05,
        "max_executor_threads": MAX_EXECUTOR_THREADS,
        "scheduler_polling_interval_sec": SCHEDULER_POLLING_S,
    }
    if executor_id:
        config["executor_id"] = executor_id
    return config


@asynccontextmanager
async def launched(config: DBOSConfig, replica: Replica | None = None, queue_concurrency: int = 16
                   ) -> AsyncIterator[Any]:
    """DBOS launched (recovering this executor's pending runs) for the duration; destroyed on exit.

    With a ``replica`` (PostgreSQL), the run queue is registered (at most ``queue_concurrency`` runs of it at
    once on this replica) and yielded, and the replica watches for vanished replicas meanwhile; otherwise
    ``None`` is yielded.
    """
    DBOS(config=config)
    try:
        # On the event loop's own thread: DBOS then runs recovered (and queued) async workflows on this loop,
        # beside the runs the tools start, instead of on a background loop of its own. A failed launch (its
        # system database on a full disk, say) is destroyed below too, so a later attempt starts afresh.
        DBOS.launch()
        if replica is None:
            yield None
            return
        queue = await DBOS.register_queue_async(RUN_QUEUE, worker_concurrency=queue_concurrency,
                                                polling_interval_sec=QUEUE_POLLING_S, on_conflict="always_update")
        async with anyio.create_task_group() as group:
            group.start_soon(replica.watch, DBOS, RUN_QUEUE)
            yield queue
            group.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(lambda: DBOS.destroy(workflow_completion_timeout_sec=0))


def dbos_runtime(config: DBOSConfig | None = None, *, launch: bool = True, replica: Replica | None = None,
                 queue_concurrency: int = 16) -> Callable[[Interpreter], AbstractAsyncContextManager[WorkflowRuntime]]:
    """A runtime factory for :func:`server.workflows.open_workflows`.

    Args:
        config: DBOS configuration (:func:`dbos_config`); required when ``launch``.
        launch: launch DBOS here (and destroy it on exit). Tests launch one DBOS for the session and pass
            ``False``: the factory then only binds the interpreter.
        replica: this process's held replica id (PostgreSQL): runs go on the shared queue, vanished replicas'
            runs are taken over (:mod:`server.workflows.replicas`).
        queue_concurrency: runs of the queue this replica executes at once.
    """

    @asynccontextmanager
    async def factory(interpreter: Interpreter) -> AsyncIterator[WorkflowRuntime]:
        binding = _Binding(interpreter)
        _bound.append(binding)  # before launch: recovery runs need it
        expected = _ExpectedFailures()
        dbos_logger = logging.getLogger("dbos")
        dbos_logger.addFilter(expected)
        try:
            if launch:
                if config is None:
                    raise ValueError("dbos_runtime(launch=True) needs a config")
                async with launched(config, replica, queue_concurrency) as queue:
                    yield DbosRuntime(binding, queue)
            else:
                yield DbosRuntime(binding)
        finally:
            dbos_logger.removeFilter(expected)
            _bound.remove(binding)

    return factory
