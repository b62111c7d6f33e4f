"""Durable DAG workflows: definitions (:mod:`.model`; parsing and validation in :mod:`.validation`, the inputs
schema in :mod:`.inputs`), the interpreter (:mod:`.interpreter`, step outcomes in :mod:`.outcome`, live state in
:mod:`.tracker`) over a small runtime interface (:mod:`.runtime`: the in-memory runtime; :mod:`.dbos_runtime`:
DBOS, full mode), step kinds (:mod:`.steps`), downstream MCP tool calls (:mod:`.downstream`), the service the
MCP surface calls (:mod:`.service`, run status in :mod:`.status`) and the server's handle on it, built at first
use (:mod:`.lazy`).

Importing this package imports none of its modules: each name below loads its module when first used (so
``server.workflows.lazy`` costs the server nothing at start-up), and DBOS, YAML and the MCP client load only
when a run needs them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

from server import lazy_exports

if TYPE_CHECKING:
    from server.store import Store
    from server.workflows.interpreter import Interpreter, RunFailed
    from server.workflows.model import Definition, InvalidWorkflow, WorkflowError, mermaid
    from server.workflows.outcome import StepOutcome
    from server.workflows.runtime import MemoryRuntime, RunRecord, WorkflowRuntime
    from server.workflows.service import ApprovalRefused, RunConflict, RunNotFound, WorkflowNotFound, WorkflowService
    from server.workflows.status import RunStatus
    from server.workflows.steps import StepServices
    from server.workflows.tracker import RunTracker
    from server.workflows.validation import parse_definition

__all__ = [
    "ApprovalRefused", "Definition", "Interpreter", "InvalidWorkflow", "MemoryRuntime", "RunConflict", "RunFailed",
    "RunNotFound", "RunRecord", "RunStatus", "RunTracker", "RuntimeFactory", "StepOutcome", "StepServices",
    "WorkflowError", "WorkflowNotFound", "WorkflowRuntime", "WorkflowService", "memory_runtime", "mermaid",
    "open_workflows", "parse_definition",
]
_HOMES = {
    "Interpreter": "interpreter", "RunFailed": "interpreter", "RunTracker": "tracker",
    "Definition": "model", "InvalidWorkflow": "model", "WorkflowError": "model", "mermaid": "model",
    "parse_definition": "validation", "StepOutcome": "outcome", "MemoryRuntime": "runtime", "RunRecord": "runtime",
    "WorkflowRuntime": "runtime", "ApprovalRefused": "service", "RunConflict": "service", "RunNotFound": "service",
    "RunStatus": "status", "WorkflowNotFound": "service", "WorkflowService": "service", "StepServices": "steps",
}

RuntimeFactory = Callable[["Interpreter"], AbstractAsyncContextManager["WorkflowRuntime"]]
"""Makes a running runtime for an interpreter; exiting the context stops it."""

__getattr__ = lazy_exports(_HOMES, globals())


def memory_runtime(clock: Callable[[], float] = time.time) -> RuntimeFactory:
    """A factory for the in-memory runtime (no durability; simple mode and tests)."""
    from server.workflows.runtime import MemoryRuntime

    def factory(interpreter: Interpreter) -> AbstractAsyncContextManager[WorkflowRuntime]:
        return MemoryRuntime(clock=clock).running(interpreter.execute)

    return factory


@asynccontextmanager
async def open_workflows(services: StepServices, store: Store, *, runtime_factory: RuntimeFactory | None = None,
                         clock: Callable[[], float] = time.time, audit: Any = None) -> AsyncIterator[WorkflowService]:
    """The workflow service over a running runtime (in-memory unless ``runtime_factory`` says otherwise), with
    the configuration's governance rules, ``audit`` (a :class:`server.operations.audit.AuditLog`, or ``None``)
    and, on a runtime that keeps schedules, ticks starting their runs here."""
    import functools

    from server.workflows import schedules
    from server.workflows.interpreter import Interpreter
    from server.workflows.oversight import RunAudit, oversight_for
    from server.workflows.run_records import RecordedRuns
    from server.workflows.service import WorkflowService
    from server.workflows.tracker import RunTracker

    tracker = RunTracker()
    interpreter = RecordedRuns(Interpreter(services, tracker, RunAudit(audit) if audit is not None else None),
                               store.runs, clock=clock)
    factory = runtime_factory or memory_runtime(clock)
    async with factory(interpreter) as runtime:
        service = WorkflowService(runtime, store.workflows, tracker, runs=store.runs, clock=clock,
                                  limits=getattr(services.config, "limits", None),
                                  oversight=oversight_for(services.config, audit))
        if getattr(runtime, "schedules_supported", False):
            runtime.bind_schedules(functools.partial(schedules.start_tick, service))  # type: ignore[attr-defined]
            await schedules.reconcile(runtime, store.workflows)
        yield service
