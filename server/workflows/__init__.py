"""Durable DAG workflows: definitions (:mod:`.model`), the interpreter (:mod:`.interpreter`) over a small runtime
interface (:mod:`.runtime`: the in-memory runtime; :mod:`.dbos_runtime`: DBOS, full mode), step kinds
(:mod:`.steps`), downstream MCP tool calls (:mod:`.downstream`) and the service the MCP surface calls
(:mod:`.service`).

Importing this package imports neither DBOS nor YAML nor the MCP client: those load when first used.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from server.store import Store
from server.workflows.interpreter import Interpreter, RunFailed, RunTracker
from server.workflows.model import Definition, InvalidWorkflow, WorkflowError, mermaid, parse_definition
from server.workflows.runtime import MemoryRuntime, RunRecord, WorkflowRuntime
from server.workflows.service import RunConflict, RunNotFound, RunStatus, WorkflowNotFound, WorkflowService
from server.workflows.steps import StepServices

__all__ = [
    "Definition", "Interpreter", "InvalidWorkflow", "MemoryRuntime", "RunConflict", "RunFailed", "RunNotFound",
    "RunRecord", "RunStatus", "RunTracker", "RuntimeFactory", "StepServices", "WorkflowError", "WorkflowNotFound",
    "WorkflowRuntime", "WorkflowService", "memory_runtime", "mermaid", "open_workflows", "parse_definition",
]

RuntimeFactory = Callable[[Interpreter], AbstractAsyncContextManager[WorkflowRuntime]]
"""Makes a running runtime for an interpreter; exiting the context stops it."""


def memory_runtime(clock: Callable[[], float] = time.time) -> RuntimeFactory:
    """A factory for the in-memory runtime (no durability; simple mode and tests)."""

    def factory(interpreter: Interpreter) -> AbstractAsyncContextManager[WorkflowRuntime]:
        return MemoryRuntime(clock=clock).running(interpreter.execute)

    return factory


@asynccontextmanager
async def open_workflows(services: StepServices, store: Store, *, runtime_factory: RuntimeFactory | None = None,
                         clock: Callable[[], float] = time.time) -> AsyncIterator[WorkflowService]:
    """The workflow service over a running runtime (in-memory unless ``runtime_factory`` says otherwise)."""
    tracker = RunTracker()
    interpreter = Interpreter(services, tracker)
    factory = runtime_factory or memory_runtime(clock)
    async with factory(interpreter) as runtime:
        yield WorkflowService(runtime, store, tracker, clock=clock, limits=getattr(services.config, "limits", None))
