"""The deferred workflow runtime (issue 15): a runtime that could not start (its system database on a full disk)
gives each workflow call a clear error naming the condition, and a later call starts it again."""

from __future__ import annotations

import errno
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from server.workflows.deferred import DeferredRuntime, RuntimeUnavailable

pytestmark = pytest.mark.anyio


class OpenRuntime:
    """Opens a runtime that knows no runs, or fails as a launch on a full disk does (a driver's error wrapped in
    the framework's), while ``full`` is set; counts the attempts."""

    name = "fake"

    def __init__(self) -> None:
        self.full = True
        self.attempts = 0

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[Any]:
        self.attempts += 1
        if self.full:
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError as exc:
                raise RuntimeError("launch failed") from exc
        yield self

    async def get(self, run_id: str) -> None:
        return None


async def test_a_runtime_that_could_not_start_says_why_and_the_next_call_starts_it(
        caplog: pytest.LogCaptureFixture) -> None:
    runtime, opener = DeferredRuntime("workflow"), OpenRuntime()
    async with anyio.create_task_group() as group:
        group.start_soon(runtime.serve, opener)
        with anyio.fail_after(5), pytest.raises(RuntimeUnavailable) as first:
            await runtime.get("r")  # waits for the first attempt, which fails
        assert str(first.value) == ("the workflow runtime could not start: its system database failed: the server's "
                                    "storage is full (disk full); the next workflow call tries again")
        assert opener.attempts == 1 and not runtime.is_open
        with anyio.fail_after(5), pytest.raises(RuntimeUnavailable, match=r"\(disk full\)"):
            await runtime.get("r")  # still full: this call's attempt fails too
        assert opener.attempts == 2

        opener.full = False  # room again
        results: list[None] = []

        async def caller() -> None:
            with anyio.fail_after(5):
                results.append(await runtime.get("r"))

        async with anyio.create_task_group() as callers:  # three calls at once share one new attempt
            for _ in range(3):
                callers.start_soon(caller)
        assert results == [None, None, None] and opener.attempts == 3 and runtime.is_open
        assert runtime.name == "fake"
        await runtime.get("r")
        assert opener.attempts == 3  # open: no more attempts
        group.cancel_scope.cancel()
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(failures) == 2 and not any(r.exc_info for r in failures), failures  # one line each, no traceback
    assert "(disk full) [RuntimeError: launch failed] (the next workflow call tries again)" in failures[0].getMessage()


async def test_a_failure_that_is_not_the_storage_is_reported_with_its_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    @asynccontextmanager
    async def broken() -> AsyncIterator[Any]:
        raise ValueError("bad configuration\nsecond line")
        yield

    runtime = DeferredRuntime("workflow")
    async with anyio.create_task_group() as group:
        group.start_soon(runtime.serve, broken)
        with anyio.fail_after(5), pytest.raises(RuntimeUnavailable, match="could not start: ValueError: bad "
                                                                         "configuration; the next workflow call"):
            await runtime.get("r")
        group.cancel_scope.cancel()
    assert [bool(r.exc_info) for r in caplog.records if r.levelno >= logging.ERROR] == [True]
