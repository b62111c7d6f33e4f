"""The warm start (server.app.warmup): it waits to be begun, builds each step once, survives a failing step, and
a call that arrives while it runs waits only for what it needs and reports that wait in ``overhead_ms``. The
stored state (the store set up, the shipped patterns stored) is loaded after the handshake, and a call made
before then loads it and counts the wait."""

from __future__ import annotations

import contextlib
import math
import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from server.app.assembly import build_server
from server.app.warmup import Readiness, WarmUp, provider_steps
from server.config import Config
from server.pool.providers import Completion, CompletionRequest, Usage
from server.store import StorageError
from server.store.memory import MemoryStore
from server.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio
SET_UP_S = 0.3
"""How long a slow provider's one-time set-up works (a stand-in for importing an SDK)."""


class SlowToSetUp:
    """A provider whose ``prepare()`` does SET_UP_S of blocking work on a worker thread, once (as the SDK
    providers import their SDK); concurrent callers wait for the same set-up."""

    instances: list[SlowToSetUp] = []

    def __init__(self, config: Any) -> None:
        self.name, self.model = config.name, config.model
        self.set_ups = 0
        self.setting_up = anyio.Event()
        self._lock = anyio.Lock()
        self._ready = False
        SlowToSetUp.instances.append(self)

    async def prepare(self) -> None:
        async with self._lock:
            if not self._ready:
                self.setting_up.set()
                await anyio.to_thread.run_sync(time.sleep, SET_UP_S)
                self.set_ups += 1
                self._ready = True

    async def complete(self, request: CompletionRequest) -> Completion:
        return Completion(text="ok", model=self.model, usage=Usage(1, 1))

    async def aclose(self) -> None:
        pass


async def test_a_call_arriving_during_the_warm_start_reports_its_wait_as_overhead() -> None:
    SlowToSetUp.instances.clear()
    config = Config.model_validate({"providers": [
        {"name": "slow", "kind": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"}]})
    mcp = build_server(config, store_factory=MemoryStore, provider_factory=SlowToSetUp)
    async with Client(mcp) as client:
        await client.list_tools()  # the first request: the warm start begins once it is answered
        (provider,) = SlowToSetUp.instances
        with anyio.fail_after(10):
            await provider.setting_up.wait()  # the warm start is setting the provider up now
        result = await client.call_tool("orchestrate", {"prompt": "hi"})
    assert not result.is_error
    out = result.structured_content
    assert provider.set_ups == 1  # the call waited for the warm start's set-up instead of doing its own
    assert out["attempts"][0]["latency_ms"] < SET_UP_S * 1000 / 2  # the wait is not the provider's time…
    assert out["overhead_ms"] >= SET_UP_S * 1000 / 3  # …it is the server's: counted in overhead_ms


async def test_the_warm_start_waits_to_be_begun_and_a_failing_step_does_not_stop_the_rest() -> None:
    built: list[str] = []

    async def build(name: str) -> None:
        built.append(name)

    async def broken() -> None:
        raise RuntimeError("no SDK here")

    warm = WarmUp([("a", lambda: build("a")), ("broken", broken), ("b", lambda: build("b"))],
                  begin_after_s=math.inf)
    async with anyio.create_task_group() as group:
        group.start_soon(warm.run)
        await anyio.wait_all_tasks_blocked()
        assert built == [] and not warm.done.is_set()  # nothing before begin()
        warm.begin()
        with anyio.fail_after(10):
            await warm.done.wait()
    assert built == ["a", "b"]


def test_provider_steps_prepare_each_provider_that_has_a_set_up() -> None:
    class Plain:
        name = "plain"

    class Prepared:
        name = "prepared"

        async def prepare(self) -> None: ...

    steps = provider_steps([Plain(), Prepared()])
    assert [what for what, _ in steps] == ["provider prepared"]


async def test_no_step_begins_while_a_call_is_in_flight_for_at_most_the_bound() -> None:
    built: list[str] = []

    async def build(name: str) -> None:
        built.append(name)

    held = WarmUp([("a", lambda: build("a"))], begin_after_s=0, yield_at_most_s=math.inf)
    bounded = WarmUp([("b", lambda: build("b"))], begin_after_s=0, yield_at_most_s=0.05)
    async with anyio.create_task_group() as group:
        with held.call(), bounded.call():
            group.start_soon(held.run)
            group.start_soon(bounded.run)
            with anyio.fail_after(10):
                await bounded.done.wait()  # built beside the call once its bound passed
            await anyio.wait_all_tasks_blocked()
            assert built == ["b"] and not held.done.is_set()  # held back while the call runs
        with anyio.fail_after(10):
            await held.done.wait()  # the call ended: the step runs
    assert built == ["b", "a"]


class GatedOrSlow(SlowToSetUp):
    """``gate`` answers only once :attr:`release` is set; any other name sets up slowly (SlowToSetUp)."""

    release = anyio.Event()

    async def prepare(self) -> None:
        if self.name != "gate":
            await super().prepare()

    async def complete(self, request: CompletionRequest) -> Completion:
        if self.name == "gate":
            await GatedOrSlow.release.wait()
        return await super().complete(request)


async def test_a_tool_call_in_flight_holds_the_warm_start_back_until_it_ends() -> None:
    SlowToSetUp.instances.clear()
    GatedOrSlow.release = anyio.Event()
    entry = {"kind": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"}
    config = Config.model_validate({"providers": [{"name": "slow", **entry}, {"name": "gate", **entry}]})
    mcp = build_server(config, store_factory=MemoryStore, provider_factory=GatedOrSlow)
    async with Client(mcp) as client, anyio.create_task_group() as group:
        slow = next(p for p in SlowToSetUp.instances if p.name == "slow")
        answers: list[Any] = []

        async def ask() -> None:
            answers.append(await client.call_tool("orchestrate", {"prompt": "hi", "providers": ["gate"]}))

        group.start_soon(ask)
        await anyio.wait_all_tasks_blocked()  # the call waits in the gated provider
        await client.list_tools()  # answered: the warm start begins, and must wait for the call
        await anyio.wait_all_tasks_blocked()
        assert not slow.setting_up.is_set()
        GatedOrSlow.release.set()
        with anyio.fail_after(10):
            await slow.setting_up.wait()  # the call ended: the warm start sets the other provider up
    assert not answers[0].is_error


async def test_the_store_is_set_up_after_the_handshake_and_a_call_made_before_waits_counting_it(
        tmp_path: Path) -> None:
    loading = SET_UP_S

    class SlowPatterns(MemoryStore):
        """A store whose first pattern write (the shipped library, stored at the first use) takes SET_UP_S."""

        def __init__(self) -> None:
            super().__init__()
            put = self.patterns.put_pattern

            async def slow_put(*args: Any, **kwargs: Any) -> Any:
                nonlocal loading
                if loading:
                    await anyio.to_thread.run_sync(time.sleep, loading)
                    loading = 0
                return await put(*args, **kwargs)

            self.patterns.put_pattern = slow_put  # type: ignore[method-assign]

    config = Config.model_validate({"providers": [
        {"name": "quick", "kind": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"}]})
    mcp = build_server(config, store_factory=SlowPatterns, provider_factory=GatedOrSlow)
    GatedOrSlow.release = anyio.Event()
    GatedOrSlow.release.set()
    async with Client(mcp) as client:
        assert loading  # connected: nothing stored yet
        result = await client.call_tool("orchestrate", {"prompt": "hi"})
        assert not loading and not result.is_error  # the call loaded the stored state first…
        assert result.structured_content["overhead_ms"] >= SET_UP_S * 1000 / 3  # …and counted that wait
        assert (await client.get_prompt("summarize", {"text": "x"})).messages  # a shipped pattern's prompt


async def test_a_sqlite_store_is_opened_at_start_and_set_up_at_its_first_use(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    config = Config.model_validate({"providers": [
        {"name": "quick", "kind": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"}]})
    mcp = build_server(config, store_factory=lambda: SQLiteStore(path), provider_factory=GatedOrSlow)
    GatedOrSlow.release = anyio.Event()
    GatedOrSlow.release.set()

    def tables() -> set[str]:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    async with Client(mcp) as client:
        assert path.exists() and tables() == set()  # opened (an unusable path fails the start), not migrated
        assert len((await client.list_tools()).tools) > 1
        assert not (await client.call_tool("orchestrate", {"prompt": "hi"})).is_error
        assert {"calls", "patterns", "conversations"} <= tables()


async def test_readiness_loads_in_its_own_task_and_a_failed_loading_is_tried_again_by_a_later_wait() -> None:
    runs: list[str] = []

    async def load() -> None:
        runs.append("load")
        if len(runs) == 1:
            raise StorageError("disk full", "the pattern library", write=True)

    readiness = Readiness([load], begin_after_s=math.inf, retry_after_s=0)
    async with anyio.create_task_group() as group:
        group.start_soon(readiness.run)
        await anyio.wait_all_tasks_blocked()
        assert runs == [] and not readiness.ready  # nothing before begin() or a wait
        with pytest.raises(StorageError, match=r"\(disk full\)"):
            await readiness.wait()  # the first attempt, failing
        await readiness.wait()  # asked again: another attempt
        await readiness.wait()  # loaded: nothing more runs
        assert runs == ["load", "load"] and readiness.ready
        late: list[str] = []

        async def later() -> None:
            late.append("filled")

        await readiness.then(later)  # added once loaded: runs at once
        assert late == ["filled"]
        group.cancel_scope.cancel()


async def test_requests_made_while_the_state_loads_load_it_once() -> None:
    # Seen from the Inspector: a tool call and the resource reads that arrived during the loading loaded it twice
    gate = anyio.Event()
    runs: list[str] = []

    async def slow() -> None:
        runs.append("load")
        await gate.wait()

    readiness = Readiness([slow], begin_after_s=math.inf)
    async with anyio.create_task_group() as group:
        group.start_soon(readiness.run)
        for _ in range(3):
            group.start_soon(readiness.wait)
        await anyio.wait_all_tasks_blocked()
        gate.set()
        await readiness.wait()
        await anyio.wait_all_tasks_blocked()
        assert runs == ["load"] and readiness.ready
        group.cancel_scope.cancel()


async def test_a_waiter_that_gives_up_does_not_stop_the_loading_and_failures_are_not_retried_at_once() -> None:
    gate = anyio.Event()
    runs: list[str] = []

    async def slow() -> None:
        runs.append("start")
        await gate.wait()
        runs.append("done")

    readiness = Readiness([slow], begin_after_s=math.inf)
    async with anyio.create_task_group() as group:
        group.start_soon(readiness.run)
        scope = anyio.CancelScope()

        async def impatient() -> None:
            with scope:
                await readiness.wait()

        group.start_soon(impatient)
        await anyio.wait_all_tasks_blocked()
        assert runs == ["start"]
        scope.cancel()  # the first waiter gives up (a client cancelled its call)…
        await anyio.wait_all_tasks_blocked()
        gate.set()
        await readiness.wait()  # …and the loading it started went on, once
        assert runs == ["start", "done"] and readiness.ready
        group.cancel_scope.cancel()

    attempts: list[int] = []

    async def locked() -> None:
        attempts.append(1)
        raise StorageError("locked", "the agents", write=True)

    failing = Readiness([locked], begin_after_s=math.inf, retry_after_s=math.inf)
    async with anyio.create_task_group() as group:
        group.start_soon(failing.run)
        for _ in range(3):
            with pytest.raises(StorageError, match=r"\(locked\)"):
                await failing.wait()
        await anyio.wait_all_tasks_blocked()
        assert attempts == [1]  # within retry_after_s: the same failure, no new attempt
        group.cancel_scope.cancel()
