"""Warm start: once the server serves, build in the background what the configuration will need.

Importing the provider SDKs costs 0.5-0.9 s each on this project's machines, and DBOS one to two seconds. Done
before the server answers, that delays ``tools/list``; done at the first call, that call pays it (the first
answer a person waits for). So the server answers at once and :class:`WarmUp` starts, as soon as the first
request after ``initialize`` has been handled (or :data:`BEGIN_AFTER_S` after start-up, when no client asks:
an HTTP server nobody has called yet), to build, one after another:

1. the provider SDKs of the configured kinds and every provider's client (``prepare()``, which imports on a
   worker thread, so the event loop keeps answering);
2. the workflow service and its durable runtime, when one is configured (DBOS: imported on a worker thread,
   then launched, recovering interrupted runs).

Before those, the server's stored state (:class:`Readiness`): the store set up (sqlite-utils, migrations), the
shipped pattern library and the configured agents stored, today's spend read, the pattern prompts and resources
filled. A request that needs it before then (a tool call, a resource, a prompt) starts it at once and waits for
it; a tool call counts that wait in its ``overhead_ms``. A call that arrives while the rest runs waits only for
what it needs: its provider's ``prepare()`` waits for the same client build (the
provider's own lock), and a workflow call for the runtime it needs; the call's ``overhead_ms`` counts that
wait (it is time the server spent, not time a provider took). While a call runs, the warm start begins no new
step (for at most :data:`YIELD_AT_MOST_S`): the builds are CPU-bound under one interpreter lock, so another
provider's SDK imported beside the call's own would only slow the call down (a call written together with the
handshake, through the second provider, waited for both imports).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager

import anyio

logger = logging.getLogger(__name__)
BEGIN_AFTER_S = 1.0
"""When no request has come by then, warm up anyway."""
YIELD_AT_MOST_S = 2.0
"""How long a step waits for the calls in flight to end before it builds beside them (a busy HTTP server)."""


class WarmUp:
    """Builds, once, what the configuration will need (see the module docstring).

    Args:
        steps: ``(what, build)`` pairs, run in order; ``build`` is awaited; a failure is logged and the next
            step runs (the call that needs the failed piece reports the error itself).
        begin_after_s: start even when :meth:`begin` was not called by then.
    """

    def __init__(self, steps: Sequence[tuple[str, Callable[[], Awaitable[object]]]], *,
                 begin_after_s: float = BEGIN_AFTER_S, yield_at_most_s: float = YIELD_AT_MOST_S) -> None:
        self._steps = list(steps)
        self._begin = anyio.Event()
        self._begin_after_s = begin_after_s
        self._yield_at_most_s = yield_at_most_s
        self._calls = 0
        self._no_calls = anyio.Event()
        self._no_calls.set()
        self.done = anyio.Event()
        """Set when every step has run (or failed)."""
        self.began_at: float | None = None

    def begin(self) -> None:
        """Start now (called once the server has answered its first request). Idempotent."""
        self._begin.set()

    @contextmanager
    def call(self) -> Iterator[None]:
        """Around a tool call: no step begins while one runs (see the module docstring)."""
        self._calls += 1
        if self._calls == 1:
            self._no_calls = anyio.Event()
        try:
            yield
        finally:
            self._calls -= 1
            if self._calls == 0:
                self._no_calls.set()

    async def run(self) -> None:
        """Wait for :meth:`begin` (or ``begin_after_s``), then run every step; returns when all have run."""
        with anyio.move_on_after(self._begin_after_s):
            await self._begin.wait()
        self.began_at = time.perf_counter()
        built = []
        for what, build in self._steps:
            with anyio.move_on_after(self._yield_at_most_s):
                await self._no_calls.wait()
            try:
                await build()
                built.append(what)
            except Exception as exc:  # noqa: BLE001 - the call that needs it reports the error; the rest warms
                logger.warning("warm start: %s failed (%s: %s)", what, type(exc).__name__, exc)
        logger.info("warm start: %s ready in %.0f ms", ", ".join(built) or "nothing to build",
                    (time.perf_counter() - self.began_at) * 1000)
        self.done.set()


def provider_steps(providers: Sequence[object]) -> list[tuple[str, Callable[[], Awaitable[object]]]]:
    """One step per provider that has a ``prepare()`` (the SDK providers: import the SDK, build the client), in
    the order given: the pool's, by priority, so the provider a first call most likely goes to comes first."""
    steps = []
    for provider in providers:
        prepare = getattr(provider, "prepare", None)
        if prepare is not None:
            steps.append((f"provider {getattr(provider, 'name', '?')}", prepare))
    return steps


Step = Callable[[], Awaitable[object]]
RETRY_AFTER_S = 1.0
"""After a failed loading, requests within this many seconds get its failure instead of trying again (a broken
disk is not hammered by every request, authenticated or not)."""


class Readiness:
    """The server's stored state, loaded once, off the path of the handshake and ``tools/list`` (see the module
    docstring): ``steps`` run in order, in :meth:`run`'s task (a waiter that gives up does not stop them), once
    :meth:`begin` is called, a request :meth:`wait` s, or ``begin_after_s`` has passed. Steps must be
    idempotent: after a failure (a full disk, say) the next :meth:`wait` has them all run again.
    """

    def __init__(self, steps: Sequence[Step] = (), *, begin_after_s: float = BEGIN_AFTER_S,
                 retry_after_s: float = RETRY_AFTER_S) -> None:
        self._steps = list(steps)
        self._begin_after_s = begin_after_s
        self._retry_after_s = retry_after_s
        self._requested = anyio.Event()
        self._attempted = anyio.Event()  # set when the current attempt ends (then replaced)
        self._failure: BaseException | None = None
        self._failed_at = -math.inf
        self.ready = False
        """Every step has run, the last attempt succeeded (a plain flag: the hot path of every call reads it)."""

    def begin(self) -> None:
        """Load now, in :meth:`run` (idempotent)."""
        self._requested.set()

    async def then(self, step: Step) -> None:
        """Add ``step`` to the loading (it runs in the attempt under way, if any); run it now if the state is
        loaded already: its failure is raised, and the whole loading runs again at the next :meth:`wait`."""
        self._steps.append(step)
        if self.ready:
            try:
                await step()
            except Exception:
                self.ready = False
                raise

    async def run(self) -> None:
        """Until cancelled: an attempt at loading once begun (or ``begin_after_s`` after this starts), and
        another each time a :meth:`wait` asks after a failure; each failure logged."""
        with anyio.move_on_after(self._begin_after_s):
            await self._requested.wait()
        while True:
            self._requested = anyio.Event()
            try:
                await self._load()
                self._failure = None
            except Exception as exc:  # noqa: BLE001 - every request that needs the state gets it from wait()
                self._failure, self._failed_at = exc, time.monotonic()
                logger.error("loading the stored state failed (%s: %s); a request that needs it tries again",
                             type(exc).__name__, exc)
            attempted, self._attempted = self._attempted, anyio.Event()
            attempted.set()
            await self._requested.wait()
            while self.ready:  # asked while it loaded, or since: nothing to load again until a later step fails
                self._requested = anyio.Event()
                await self._requested.wait()

    async def wait(self) -> None:
        """Return once the state is loaded, asking for an attempt (another, after a failure) if need be.

        Raises:
            server.store.StorageError: the last attempt's storage failure (naming the condition); or whatever
                else it raised (a bug: the caller reports an internal error).
        """
        if self.ready:
            return
        if self._failure is not None and time.monotonic() - self._failed_at < self._retry_after_s:
            raise self._failure.with_traceback(None)
        attempted = self._attempted
        self._requested.set()
        await attempted.wait()
        if not self.ready and self._failure is not None:
            raise self._failure.with_traceback(None)

    async def settle(self) -> None:
        """:meth:`wait`, a failure logged instead of raised: for a request whose own reads of the store report
        it (the dashboard's pages)."""
        try:
            await self.wait()
        except Exception as exc:  # noqa: BLE001 - the request's own store access reports it
            logger.warning("the stored state is not loaded (%s: %s)", type(exc).__name__, exc)

    async def _load(self) -> None:
        started = time.perf_counter()
        index = 0
        while index < len(self._steps):  # by index: a step added by then() meanwhile runs in this attempt
            await self._steps[index]()
            index += 1
        self.ready = True
        logger.info("stored state loaded in %.0f ms", (time.perf_counter() - started) * 1000)
