"""Keeping the store's run record (:class:`server.store.WorkflowRun`) in step with the run as it executes.

The workflow service writes the record before a run id is returned (status ``pending``); :class:`RecordedRuns`
is what the runtime runs for each run: it marks the record ``running`` when execution starts and writes the
outcome (``completed``, or ``failed`` with the error) when it ends, before the runtime records that outcome
itself. In a DBOS run this code is part of the workflow function, so a run recovered after a crash writes the
same statuses again (each write is idempotent). Cancellation is written by the service when it cancels. So the
record's status is what listings filter on; a single run's status is always read from the runtime too, and a
record found behind it (a run DBOS gave up on, say) is written back then.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from server.store import RunState, RunStore, StorageError

if TYPE_CHECKING:
    from server.workflows.interpreter import Interpreter
    from server.workflows.runtime import Execution

logger = logging.getLogger(__name__)
ERROR_CHARS = 1_000


class RecordedRuns:
    """The interpreter as the runtime's entry point, with run records kept in step (see the module docstring).

    Args:
        interpreter: runs the runs.
        runs: the store's run records.
    """

    def __init__(self, interpreter: Interpreter, runs: RunStore, *, clock: Callable[[], float] = time.time) -> None:
        self.interpreter = interpreter
        self.tracker = interpreter.tracker
        self._runs = runs
        self._clock = clock

    async def execute(self, execution: Execution, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """:meth:`Interpreter.execute`, between the record's ``running`` and its outcome (audited as
        ``run.finished`` when the interpreter has an audit)."""
        await self._set(execution.run_id, "running")
        try:
            result = await self.interpreter.execute(execution, arguments)
        except Exception as exc:  # the run failed (or was cancelled: the service wrote that first, and it stays)
            await self._set(execution.run_id, "failed", str(exc)[:ERROR_CHARS])
            await self._audited(execution.run_id, "failed", error=str(exc)[:ERROR_CHARS])
            raise
        await self._set(execution.run_id, "completed")
        await self._audited(execution.run_id, "completed", result=result)
        return result

    async def _audited(self, run_id: str, status: str, **fields: Any) -> None:
        audit = self.interpreter.audit
        if audit is None:
            return
        try:
            record = await self._runs.get_run(run_id)
        except StorageError:
            record = None
        await audit.finished(run_id, status, (record.owner if record is not None else None) or "local", **fields)

    async def _set(self, run_id: str, status: RunState, error: str | None = None) -> None:
        try:
            changed = await self._runs.set_run_status(run_id, status, self._clock(), error=error)
        except StorageError as exc:
            # The run goes on: its runtime keeps the outcome, and reading the run writes it back.
            logger.warning("run %s: its record could not be marked %s (%s)", run_id, status, exc.condition)
            return
        if changed:
            logger.info("run %s %s", run_id, status)
