"""The pool: priority order, immediate fallback per failure class, deadlines, recording, cost."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from server.errors import AllProvidersFailed, NoProvidersConfigured, UnknownProvider
from server.pool import ProviderPool
from server.providers import CompletionRequest, Message, build_provider
from server.simulator import Behaviour, Upstream
from server.store.memory import MemoryStore
from tests.conftest import config_for, provider_entry

pytestmark = pytest.mark.anyio
REQUEST = CompletionRequest(messages=(Message("user", "hi there"),))


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


async def make_pool(store: MemoryStore, *entries: dict) -> ProviderPool:
    config = config_for(*entries)
    return ProviderPool([(p, build_provider(p)) for p in config.providers], store)


@pytest.fixture
async def two(upstream: Upstream, store: MemoryStore) -> AsyncIterator[ProviderPool]:
    pool = await make_pool(
        store,
        provider_entry(upstream, "second", kind="anthropic", model="m2", priority=2,
                       input_cost_per_mtok=2.0, output_cost_per_mtok=4.0),
        provider_entry(upstream, "first", kind="openai", model="m1", priority=1, timeout_s=0.5),
    )
    yield pool
    await pool.aclose()


async def test_lowest_priority_number_answers_first(two: ProviderPool) -> None:
    result = await two.complete(REQUEST)
    assert result.provider.name == "first"
    assert [a.provider for a in result.attempts] == ["first"]


@pytest.mark.parametrize(
    ("behaviour", "error_class"),
    [
        (Behaviour(status=500), "server_error"),
        (Behaviour(status=429, retry_after_s=30), "rate_limited"),
        (Behaviour(latency_s=3.0), "timeout"),
        (Behaviour(malformed=True), "malformed_reply"),
        (Behaviour(drop=True), "connection"),
        (Behaviour(status=401), "authentication"),
    ],
)
async def test_failure_falls_back_to_the_next_provider_at_once(
    two: ProviderPool, upstream: Upstream, store: MemoryStore, behaviour: Behaviour, error_class: str
) -> None:
    upstream.script("m1", behaviour)
    with anyio.fail_after(5):
        result = await two.complete(REQUEST)
    assert result.provider.name == "second"
    assert result.completion.text == "[m2] hi there"
    assert [(a.provider, a.status, a.error_class) for a in result.attempts] == [
        ("first", "error", error_class), ("second", "ok", None)]
    # No retry of the failing provider: exactly one request reached it.
    assert [r.model for r in upstream.requests].count("m1") == 1
    assert [(r.provider, r.status, r.error_class, r.attempt) for r in store.calls] == [
        ("first", "error", error_class, 1), ("second", "ok", None, 2)]
    assert len({r.call_id for r in store.calls}) == 1


async def test_bad_request_is_not_retried_elsewhere(two: ProviderPool, upstream: Upstream) -> None:
    upstream.script("m1", Behaviour(status=400))
    with pytest.raises(AllProvidersFailed) as info:
        await two.complete(REQUEST)
    assert [e.error_class for e in info.value.errors] == ["bad_request"]
    assert [r.model for r in upstream.requests] == ["m1"]


async def test_all_failing_lists_every_attempt(two: ProviderPool, upstream: Upstream) -> None:
    upstream.script("m1", Behaviour(status=503))
    upstream.script("m2", Behaviour(status=500))
    with pytest.raises(AllProvidersFailed) as info:
        await two.complete(REQUEST)
    message = str(info.value)
    assert "first (server_error)" in message and "second (server_error)" in message


async def test_explicit_providers_are_tried_in_the_given_order(two: ProviderPool, upstream: Upstream) -> None:
    upstream.script("m2", Behaviour(status=500))
    result = await two.complete(REQUEST, providers=["second", "first"])
    assert [a.provider for a in result.attempts] == ["second", "first"]


async def test_unknown_provider_names_the_known_ones(two: ProviderPool) -> None:
    with pytest.raises(UnknownProvider, match="configured: first, second"):
        await two.complete(REQUEST, providers=["nope"])


async def test_cost_comes_from_configured_prices(two: ProviderPool, upstream: Upstream) -> None:
    upstream.script("m2", Behaviour(input_tokens=1000, output_tokens=500))
    result = await two.complete(REQUEST, providers=["second"])
    assert result.cost_usd == pytest.approx((1000 * 2.0 + 500 * 4.0) / 1e6)


async def test_call_deadline_bounds_the_whole_call(two: ProviderPool, upstream: Upstream) -> None:
    upstream.script("m1", Behaviour(latency_s=3.0))
    upstream.script("m2", Behaviour(latency_s=3.0))
    with anyio.fail_after(2), pytest.raises(AllProvidersFailed) as info:
        await two.complete(REQUEST, timeout_s=0.3)
    assert all(e.error_class == "timeout" for e in info.value.errors)


async def test_empty_pool_says_what_to_set(store: MemoryStore) -> None:
    pool = ProviderPool([], store)
    with pytest.raises(NoProvidersConfigured, match="OPENAI_API_KEY"):
        await pool.complete(REQUEST)


async def test_provider_without_key_is_skipped_and_named(store: MemoryStore) -> None:
    config = config_for({"name": "keyless", "kind": "anthropic", "model": "claude-x"})
    pool = ProviderPool([(p, build_provider(p)) for p in config.providers], store)
    with pytest.raises(NoProvidersConfigured, match="ANTHROPIC_API_KEY"):
        await pool.complete(REQUEST)


async def test_max_concurrency_holds_excess_calls(upstream: Upstream, store: MemoryStore) -> None:
    pool = await make_pool(store, provider_entry(upstream, "narrow", model="n", max_concurrency=2))
    upstream.script("n", Behaviour(latency_s=0.15), repeat=True)
    peak = 0

    async def one() -> None:
        await pool.complete(REQUEST)

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, sum(r.finished_at is None for r in upstream.requests))
            await anyio.sleep(0.01)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as outer:
            outer.start_soon(watch)
            async with anyio.create_task_group() as calls:
                for _ in range(6):
                    calls.start_soon(one)
            outer.cancel_scope.cancel()
    await pool.aclose()
    assert peak == 2
    assert len(store.calls) == 6
