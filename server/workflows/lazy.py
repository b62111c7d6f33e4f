"""The server's workflow service, built at its first use so that start-up imports none of the workflow engine.

The engine (definitions, interpreter, service, runtimes) costs about ten milliseconds to import, and nothing
needs it before a workflow tool, a workflow resource or an incident response does: :meth:`LazyWorkflows.service`
builds the service then, over a :class:`~server.workflows.deferred.DeferredRuntime` (calls that need the runtime
wait for it; the others, such as saving a definition, do not). :meth:`LazyWorkflows.serve`, run in the lifespan's
task group, opens the real runtime as soon as the service exists, and keeps it open until cancelled; given
``delay_s``, it builds the service itself that long after start-up, so that a durable runtime recovers
interrupted runs without waiting for a call.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

DEFAULT_DELAY_S = 1.0  # after start-up, a durable runtime opens unasked (recovering interrupted runs)

if TYPE_CHECKING:
    from server.operations.audit import AuditLog
    from server.store import Store
    from server.workflows import RuntimeFactory
    from server.workflows.deferred import DeferredRuntime
    from server.workflows.run_records import RecordedRuns
    from server.workflows.service import WorkflowService
    from server.workflows.steps import StepServices


class LazyWorkflows:
    """A workflow service built at first use (see the module docstring).

    Args:
        services: makes what the step kinds call (called once, when the service is built).
        store: where definitions and runs are kept.
        runtime_factory: the runtime (default: the in-memory one).
        delay_s: build the service this long after :meth:`serve` starts, if nothing asked for it before
            (default: only when asked).
        audit: the audit trail runs, steps, saves and decisions are recorded in (``None``: none).
    """

    def __init__(self, services: Callable[[], StepServices], store: Store, *,
                 runtime_factory: RuntimeFactory | None = None, clock: Callable[[], float] = time.time,
                 delay_s: float = math.inf, audit: AuditLog | None = None) -> None:
        self._audit = audit
        self._services = services
        self._store = store
        self._runtime_factory = runtime_factory
        self._clock = clock
        self._delay_s = delay_s
        self._built = anyio.Event()
        self._service: WorkflowService | None = None
        self._runtime: DeferredRuntime | None = None
        self._interpreter: RecordedRuns | None = None

    @property
    def durable_ready(self) -> bool:
        """``True`` when no durable runtime is configured or it is open (a readiness probe's question)."""
        if self._runtime_factory is None:
            return True
        return self._runtime is not None and self._runtime.is_open

    def service(self) -> WorkflowService:
        """The workflow service (built now, on the first call)."""
        if self._service is None:
            from server.workflows.deferred import DeferredRuntime
            from server.workflows.interpreter import Interpreter
            from server.workflows.oversight import RunAudit, oversight_for
            from server.workflows.run_records import RecordedRuns
            from server.workflows.service import WorkflowService
            from server.workflows.tracker import RunTracker

            services = self._services()
            tracker = RunTracker()
            interpreter = Interpreter(services, tracker, RunAudit(self._audit) if self._audit is not None else None)
            self._interpreter = RecordedRuns(interpreter, self._store.runs, clock=self._clock)
            self._runtime = DeferredRuntime("memory" if self._runtime_factory is None else "workflow")
            self._service = WorkflowService(self._runtime, self._store.workflows, tracker, runs=self._store.runs,
                                            clock=self._clock, limits=getattr(services.config, "limits", None),
                                            oversight=oversight_for(services.config, self._audit))
            self._built.set()
        return self._service

    async def warm(self) -> None:
        """Build the service now and wait until its runtime is open (the warm start's step): a durable
        runtime's imports run on a worker thread first (the factory's ``preload()``, when it has one)."""
        preload = getattr(self._runtime_factory, "preload", None)
        if preload is not None:
            await anyio.to_thread.run_sync(preload, abandon_on_cancel=True)  # a shutdown does not wait for it
        self.service()
        assert self._runtime is not None
        await self._runtime.opened()

    async def serve(self) -> None:
        """Open the runtime once the service is built (or ``delay_s`` after this starts) until cancelled."""
        from server.workflows import memory_runtime

        with anyio.move_on_after(self._delay_s):
            await self._built.wait()
        self.service()
        assert self._runtime is not None and self._interpreter is not None
        factory, interpreter = self._runtime_factory or memory_runtime(self._clock), self._interpreter
        async with anyio.create_task_group() as group:
            group.start_soon(bind_schedules, self._runtime, self._service, self._store.workflows)
            await self._runtime.serve(lambda: factory(interpreter))


async def bind_schedules(runtime: DeferredRuntime, service: WorkflowService | None, store: Any) -> None:
    """Once ``runtime`` is open: schedule ticks start runs on ``service``, and the saved definitions' schedules
    are reconciled with the runtime's (:mod:`server.workflows.schedules`); a failure is logged."""
    import functools
    import logging

    from server.workflows import schedules

    await runtime.opened()
    if service is None or not runtime.is_open or not runtime.schedules_supported:
        return
    try:
        await runtime.bind_schedules(functools.partial(schedules.start_tick, service))
        await schedules.reconcile(runtime, store)
    except Exception:  # noqa: BLE001 - the server goes on; saving a workflow applies its schedules again
        logging.getLogger(__name__).exception("the workflow schedules could not be reconciled")
