"""A workflow runtime opened in the background, so the server answers before it is up.

DBOS costs one to two seconds to import and launch (and its launch recovers interrupted runs): on the
start-up path it would delay the first ``tools/list`` reply (see ``bench/startup.py``). :func:`deferred`
wraps a runtime factory: the server gets a :class:`DeferredRuntime` at once, the real runtime opens after
``delay_s`` or at the first workflow call, whichever comes first, and every call waits for it. Recovery of
interrupted runs therefore starts ``delay_s`` after start-up at the latest.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio

from server.errors import OrchestrationError
from server.gc_tuning import freeze_long_lived

if TYPE_CHECKING:
    from server.workflows.interpreter import Interpreter
    from server.workflows.runtime import RunRecord, WorkflowRuntime

logger = logging.getLogger(__name__)
DEFAULT_DELAY_S = 1.0


class RuntimeUnavailable(OrchestrationError):
    """The workflow runtime failed to start (the message says why; the server keeps serving other tools)."""


class DeferredRuntime:
    """A :class:`WorkflowRuntime` that forwards to the real one once it is open."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._wanted = anyio.Event()
        self._ready = anyio.Event()
        self._runtime: WorkflowRuntime | None = None
        self._error: str | None = None

    @property
    def name(self) -> str:
        """The real runtime's name once it is open (``memory``, ``dbos``), else the name given."""
        return self._runtime.name if self._runtime is not None else self._name

    async def _real(self) -> WorkflowRuntime:
        self._wanted.set()
        await self._ready.wait()
        if self._runtime is None:
            raise RuntimeUnavailable(f"the {self.name} workflow runtime could not start: {self._error}")
        return self._runtime

    async def start(self, run_id: str, workflow: str, arguments: dict[str, Any], fingerprint: str) -> bool:
        return await (await self._real()).start(run_id, workflow, arguments, fingerprint)

    async def get(self, run_id: str) -> RunRecord | None:
        return await (await self._real()).get(run_id)

    async def list(self, status: str | None, limit: int, offset: int) -> list[RunRecord]:
        return await (await self._real()).list(status, limit, offset)

    async def cancel(self, run_id: str) -> None:
        await (await self._real()).cancel(run_id)

    async def send(self, run_id: str, topic: str, message: Any) -> None:
        await (await self._real()).send(run_id, topic, message)

    async def recorded(self, run_id: str) -> dict[str, Any]:
        return await (await self._real()).recorded(run_id)

    async def serve(self, open_runtime: Callable[[], AbstractAsyncContextManager[WorkflowRuntime]],
                    delay_s: float) -> None:
        """Open the real runtime after ``delay_s`` (or when first wanted) and keep it open until cancelled."""
        with anyio.move_on_after(delay_s):
            await self._wanted.wait()
        try:
            async with open_runtime() as runtime:
                self._runtime = runtime
                self._ready.set()
                freeze_long_lived()  # the runtime's modules (DBOS, SQLAlchemy) live as long as the process
                await anyio.sleep_forever()
        except Exception as exc:  # reported to every workflow call; the rest of the server goes on
            logger.exception("the %s workflow runtime failed to start", self.name)
            self._error = f"{type(exc).__name__}: {exc}"
            self._ready.set()


def deferred(make_factory: Callable[[], Callable[[Interpreter], AbstractAsyncContextManager[WorkflowRuntime]]],
             name: str, delay_s: float = DEFAULT_DELAY_S
             ) -> Callable[[Interpreter], AbstractAsyncContextManager[WorkflowRuntime]]:
    """A runtime factory whose runtime opens in the background (see the module docstring).

    Args:
        make_factory: returns the real factory; called in the background, so its imports happen there too.
        name: the runtime's name (``"dbos"``), reported in run status before the runtime is up.
        delay_s: seconds after start-up to open it unasked.
    """

    @asynccontextmanager
    async def factory(interpreter: Interpreter) -> AsyncIterator[WorkflowRuntime]:
        runtime = DeferredRuntime(name)
        error: BaseException | None = None
        async with anyio.create_task_group() as group:
            group.start_soon(runtime.serve, lambda: make_factory()(interpreter), delay_s)
            try:
                yield runtime
            except BaseException as exc:  # re-raised below as it is, not wrapped in an exception group
                error = exc
            group.cancel_scope.cancel()
        if error is not None:
            raise error

    return factory
