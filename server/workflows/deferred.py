"""A workflow runtime opened in the background, so the server answers before it is up.

DBOS costs one to two seconds to import and launch (and its launch recovers interrupted runs): on the
start-up path it would delay the first ``tools/list`` reply (see ``bench/startup.py``). The workflow service
gets a :class:`DeferredRuntime` at once; :meth:`DeferredRuntime.serve` (run in the background by
:class:`server.workflows.lazy.LazyWorkflows`, which decides when) opens the real one, and every call that
needs the runtime waits for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import anyio

from server.errors import OrchestrationError

if TYPE_CHECKING:
    from server.workflows.runtime import RunRecord, WorkflowRuntime

logger = logging.getLogger(__name__)


class RuntimeUnavailable(OrchestrationError):
    """The workflow runtime failed to start (the message says why; the server keeps serving other tools)."""


class DeferredRuntime:
    """A :class:`WorkflowRuntime` that forwards to the real one once it is open."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._ready = anyio.Event()
        self._runtime: WorkflowRuntime | None = None
        self._error: str | None = None

    @property
    def name(self) -> str:
        """The real runtime's name once it is open (``memory``, ``dbos``), else the name given."""
        return self._runtime.name if self._runtime is not None else self._name

    @property
    def is_open(self) -> bool:
        """Whether the real runtime is open (``False`` before, and for good after a failed start)."""
        return self._runtime is not None

    async def _real(self) -> WorkflowRuntime:
        await self._ready.wait()
        if self._runtime is None:
            raise RuntimeUnavailable(f"the {self.name} workflow runtime could not start: {self._error}")
        return self._runtime

    async def opened(self) -> None:
        """Wait until the real runtime is open, or failed to open."""
        await self._ready.wait()

    async def start(self, run_id: str, workflow: str, arguments: dict[str, Any], fingerprint: str) -> bool:
        return await (await self._real()).start(run_id, workflow, arguments, fingerprint)

    async def get(self, run_id: str) -> RunRecord | None:
        return await (await self._real()).get(run_id)

    async def list(self, status: str | None, limit: int, offset: int) -> list[RunRecord]:
        return await (await self._real()).list(status, limit, offset)

    async def cancel(self, run_id: str) -> None:
        await (await self._real()).cancel(run_id)

    async def finished(self, run_id: str) -> None:
        await (await self._real()).finished(run_id)

    async def send(self, run_id: str, topic: str, message: Any) -> None:
        await (await self._real()).send(run_id, topic, message)

    async def recorded(self, run_id: str) -> dict[str, Any]:
        return await (await self._real()).recorded(run_id)

    @property
    def schedules_supported(self) -> bool:
        """Whether the real runtime keeps schedules (a durable one; known before it is open)."""
        return self._name != "memory" and getattr(self._runtime, "schedules_supported", True)

    async def set_schedules(self, workflow: str, schedules: Any) -> None:
        await (await self._real()).set_schedules(workflow, schedules)  # type: ignore[attr-defined]

    async def scheduled_workflows(self) -> list[str]:
        return await (await self._real()).scheduled_workflows()  # type: ignore[attr-defined]

    async def bind_schedules(self, on_tick: Any) -> None:
        (await self._real()).bind_schedules(on_tick)  # type: ignore[attr-defined]

    async def serve(self, open_runtime: Callable[[], AbstractAsyncContextManager[WorkflowRuntime]]) -> None:
        """Open the real runtime now and keep it open until cancelled."""
        try:
            async with open_runtime() as runtime:
                self._runtime = runtime
                self._ready.set()
                await anyio.sleep_forever()
        except Exception as exc:  # reported to every workflow call; the rest of the server goes on
            logger.exception("the %s workflow runtime failed to start", self.name)
            self._error = f"{type(exc).__name__}: {exc}"
            self._ready.set()

