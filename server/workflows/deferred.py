"""A workflow runtime opened in the background, so the server answers before it is up.

DBOS costs one to two seconds to import and launch (and its launch recovers interrupted runs): on the
start-up path it would delay the first ``tools/list`` reply (see ``bench/startup.py``). The workflow service
gets a :class:`DeferredRuntime` at once; :meth:`DeferredRuntime.serve` (run in the background by
:class:`server.workflows.lazy.LazyWorkflows`, which decides when) opens the real one, and every call that
needs the runtime waits for it. A runtime that could not open (DBOS's system database on a full disk, say) is
tried again by each later call that needs it, one attempt at a time; a call whose attempt fails gets the reason,
naming the storage condition when there is one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import anyio

from server.errors import OrchestrationError
from server.store.errors import condition_of, explained

if TYPE_CHECKING:
    from server.workflows.runtime import RunRecord, WorkflowRuntime

logger = logging.getLogger(__name__)


class RuntimeUnavailable(OrchestrationError):
    """The workflow runtime failed to start (the message says why; the server keeps serving other tools, and the
    next call that needs the runtime tries to start it again)."""


class DeferredRuntime:
    """A :class:`WorkflowRuntime` that forwards to the real one once it is open.

    A failed start is not final: the real runtime's system database may have been on a full or read-only disk.
    The call that meets the failure asks :meth:`serve` to open the runtime again and waits for that attempt (calls
    arriving meanwhile wait for the same attempt); it gets the runtime, or the new attempt's error.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._settled = anyio.Event()
        """Set once the current attempt to open the real runtime has settled (open, or failed)."""
        self._retry = anyio.Event()
        """Set by a call that wants another attempt after a failed one."""
        self._runtime: WorkflowRuntime | None = None
        self._error: str | None = None

    @property
    def name(self) -> str:
        """The real runtime's name once it is open (``memory``, ``dbos``), else the name given."""
        return self._runtime.name if self._runtime is not None else self._name

    @property
    def is_open(self) -> bool:
        """Whether the real runtime is open (``False`` before, and after a failed start until a retry opens it)."""
        return self._runtime is not None

    async def _real(self) -> WorkflowRuntime:
        if self._settled.is_set() and self._runtime is None:  # the last attempt failed: this call asks for another
            self._settled = anyio.Event()
            self._retry.set()
        await self._settled.wait()  # the attempt in progress (this call's, or one that began before it)
        if self._runtime is None:
            raise RuntimeUnavailable(f"the workflow runtime could not start: {self._error}; the next workflow call "
                                     "tries again")
        return self._runtime

    async def opened(self) -> None:
        """Wait until the current attempt to open the real runtime has settled (open, or failed)."""
        await self._settled.wait()

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
        """Open the real runtime now and keep it open until cancelled; after a failure, open it again when a call
        asks for it (see the class docstring)."""
        while True:
            try:
                async with open_runtime() as runtime:
                    self._runtime, self._error = runtime, None
                    self._settled.set()
                    await anyio.sleep_forever()
            except Exception as exc:  # reported to the workflow calls; the rest of the server goes on
                self._runtime, self._error = None, failure_reason(exc)
                storage = _storage_condition(exc) is not None  # then one line, no traceback
                logger.error("the workflow runtime could not start: %s%s (the next workflow call tries again)",
                             self._error, f" [{_first_line(exc)}]" if storage else "", exc_info=not storage)
                self._retry = anyio.Event()
                self._settled.set()
            await self._retry.wait()


def failure_reason(exc: BaseException) -> str:
    """Why the runtime could not start, for the caller: a storage condition in the words of
    :class:`server.store.StorageError` (``its system database failed: the server's storage is full (disk
    full)``), else the exception's first line."""
    condition = _storage_condition(exc)
    if condition is not None:
        return f"its system database failed: {explained(condition)}"
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def _storage_condition(exc: BaseException) -> str | None:
    """The storage condition (``disk full``, ``read-only`` …) behind ``exc`` or the errors it wraps (a database
    driver's error under SQLAlchemy's ``orig``, ``__cause__``, ``__context__``), else ``None``."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        condition = condition_of(current)
        if condition not in ("error", "invalid text"):
            return condition
        orig = getattr(current, "orig", None)
        pending.extend([orig if isinstance(orig, BaseException) else None, current.__cause__, current.__context__])
    return None
