"""The pool against the local upstream: fallback per error class, retries, breakers, limits, budgets, A/B."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable

import anyio
import pytest

from server.errors import (
    AllProvidersFailed,
    BudgetExceeded,
    NoProviderAvailable,
    NoProvidersConfigured,
    UnknownProvider,
)
from server.pool.pool import CallOptions, ProviderPool
from server.pool.providers import CompletionRequest, Message, build_provider
from server.simulator import Behaviour, Upstream
from server.store.memory_calls import MemoryCalls
from tests.conftest import config_for, provider_entry

pytestmark = pytest.mark.anyio
REQUEST = CompletionRequest(messages=(Message("user", "hi there"),))


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Sleeps:
    """Backoff sleeps, recorded and skipped."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def store() -> MemoryCalls:
    return MemoryCalls()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def make_pool(store: MemoryCalls, sleeps: Sleeps, clock: Clock) -> AsyncIterator[Callable[..., ProviderPool]]:
    pools: list[ProviderPool] = []

    def make(*entries: dict, use_clock: bool = False, **sections) -> ProviderPool:
        config = config_for(*entries, **sections)
        pool = ProviderPool([(p, build_provider(p)) for p in config.providers], store, config=config,
                            rng=random.Random(0), sleep=sleeps, **({"clock": clock} if use_clock else {}))
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.aclose()


@pytest.fixture
def two(make_pool, upstream: Upstream) -> ProviderPool:
    return make_pool(
        provider_entry(upstream, "second", kind="anthropic", model="m2", priority=2,
                       input_cost_per_mtok=2.0, output_cost_per_mtok=4.0),
        provider_entry(upstream, "first", kind="openai", model="m1", priority=1, timeout_s=0.5),
    )


def models_asked(upstream: Upstream) -> list[str]:
    return [r.model for r in upstream.requests]


# -- order and fallback ------------------------------------------------------------------------------------


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
        (Behaviour(finish_reason="content_filter"), "content_refused"),
    ],
)
async def test_failure_falls_back_to_the_next_provider_at_once(
    two: ProviderPool, upstream: Upstream, store: MemoryCalls, sleeps: Sleeps, behaviour: Behaviour,
    error_class: str,
) -> None:
    upstream.script("m1", behaviour)
    with anyio.fail_after(5):
        result = await two.complete(REQUEST)
    assert result.provider.name == "second"
    assert result.completion.text == "[m2] hi there"
    assert [(a.provider, a.status, a.error_class) for a in result.attempts] == [
        ("first", "error", error_class), ("second", "ok", None)]
    assert models_asked(upstream).count("m1") == 1  # no retry of the failing provider
    assert sleeps.waits == []  # and no waiting before the fallback
    assert [(r.provider, r.status, r.error_class, r.attempt) for r in store.records] == [
        ("first", "error", error_class, 1), ("second", "ok", None, 2)]
    assert len({r.call_id for r in store.records}) == 1


async def test_bad_request_is_not_retried_anywhere(two: ProviderPool, upstream: Upstream) -> None:
    upstream.script("m1", Behaviour(status=400))
    with pytest.raises(AllProvidersFailed) as info:
        await two.complete(REQUEST)
    assert [e.error_class for e in info.value.errors] == ["bad_request"]
    assert models_asked(upstream) == ["m1"]


async def test_context_window_overflow_moves_only_to_a_larger_window(make_pool, upstream: Upstream) -> None:
    pool = make_pool(
        provider_entry(upstream, "small", model="s", priority=1, context_window=8_000),
        provider_entry(upstream, "also-small", model="a", priority=2, context_window=4_000),
        provider_entry(upstream, "large", model="l", priority=3, context_window=200_000),
    )
    upstream.script("s", Behaviour(status=400, error_message="This model's maximum context length is 8000 tokens"))
    result = await pool.complete(REQUEST)
    assert result.provider.name == "large"
    assert [(a.provider, a.error_class) for a in result.attempts] == [
        ("small", "context_window_exceeded"), ("large", None)]
    assert models_asked(upstream) == ["s", "l"]


async def test_json_mode_rejects_an_invalid_reply_and_falls_back(two: ProviderPool, upstream: Upstream) -> None:
    upstream.script("m1", Behaviour(text="Sure! Here is JSON: {oops"))
    upstream.script("m2", Behaviour(text='```json\n{"answer": 42}\n```'))
    result = await two.complete(CompletionRequest(messages=REQUEST.messages, response_format="json"))
    assert result.provider.name == "second"
    assert result.attempts[0].error_class == "malformed_reply"
    sent = upstream.requests[0].body
    assert sent["response_format"] == {"type": "json_object"}


async def test_explicit_providers_are_tried_in_the_given_order(two: ProviderPool, upstream: Upstream) -> None:
    upstream.script("m2", Behaviour(status=500))
    result = await two.complete(REQUEST, providers=["second", "first"])
    assert [a.provider for a in result.attempts] == ["second", "first"]


async def test_capability_and_model_filters(make_pool, upstream: Upstream) -> None:
    pool = make_pool(provider_entry(upstream, "chat", model="c", priority=1),
                     provider_entry(upstream, "coder", model="k", priority=2, capabilities=["chat", "code"]))
    assert (await pool.complete(REQUEST, options=CallOptions(capabilities=["code"]))).provider.name == "coder"
    assert (await pool.complete(REQUEST, options=CallOptions(model="k"))).provider.name == "coder"
    with pytest.raises(NoProvidersConfigured, match="capability 'vision'"):
        await pool.complete(REQUEST, options=CallOptions(capabilities=["vision"]))


async def test_max_fallbacks_limits_the_candidates(two: ProviderPool, upstream: Upstream) -> None:
    upstream.script("m1", Behaviour(status=400, error_message="context_length_exceeded"))
    with pytest.raises(AllProvidersFailed):
        await two.complete(REQUEST, options=CallOptions(max_fallbacks=0))
    assert models_asked(upstream) == ["m1"]


# -- retries of the same provider ------------------------------------------------------------------------


async def test_last_provider_standing_is_retried_with_backoff(make_pool, upstream: Upstream, sleeps: Sleeps) -> None:
    pool = make_pool(provider_entry(upstream, "only", model="o"), routing={"backoff_base_s": 0.5})
    upstream.script("o", Behaviour(status=503), Behaviour(status=503))
    result = await pool.complete(REQUEST)
    assert [a.status for a in result.attempts] == ["error", "error", "ok"]
    assert len(sleeps.waits) == 2
    assert 0 <= sleeps.waits[0] <= 0.5 and 0 <= sleeps.waits[1] <= 1.0  # full jitter under base·2ⁿ


async def test_retry_honours_retry_after(make_pool, upstream: Upstream, sleeps: Sleeps) -> None:
    pool = make_pool(provider_entry(upstream, "only", model="o"))
    upstream.script("o", Behaviour(status=429, retry_after_s=2))
    result = await pool.complete(REQUEST)
    assert result.attempts[-1].status == "ok"
    assert sleeps.waits[0] >= 1.9


async def test_no_retry_when_the_deadline_cannot_hold_the_wait(make_pool, upstream: Upstream, sleeps: Sleeps) -> None:
    pool = make_pool(provider_entry(upstream, "only", model="o"))
    upstream.script("o", Behaviour(status=429, retry_after_s=30))
    with pytest.raises(AllProvidersFailed):
        await pool.complete(REQUEST, timeout_s=5)
    assert sleeps.waits == [] and models_asked(upstream) == ["o"]


async def test_authentication_failure_is_never_retried_on_the_same_provider(
    make_pool, upstream: Upstream, sleeps: Sleeps
) -> None:
    pool = make_pool(provider_entry(upstream, "only", model="o"))
    upstream.script("o", Behaviour(status=401), repeat=True)
    with pytest.raises(AllProvidersFailed, match="authentication"):
        await pool.complete(REQUEST)
    assert models_asked(upstream) == ["o"] and sleeps.waits == []


async def test_all_failing_lists_every_attempt(two: ProviderPool, upstream: Upstream) -> None:
    upstream.script("m1", Behaviour(status=503), repeat=True)
    upstream.script("m2", Behaviour(status=500), repeat=True)
    with pytest.raises(AllProvidersFailed) as info:
        await two.complete(REQUEST)
    message = str(info.value)
    assert "first (server_error)" in message and "second (server_error)" in message
    assert len(info.value.errors) == 2 + 2  # each once, then max_retries=2 retries


async def test_call_deadline_bounds_the_whole_call(two: ProviderPool, upstream: Upstream) -> None:
    upstream.script("m1", Behaviour(latency_s=3.0), repeat=True)
    upstream.script("m2", Behaviour(latency_s=3.0), repeat=True)
    with anyio.fail_after(2), pytest.raises(AllProvidersFailed) as info:
        await two.complete(REQUEST, timeout_s=0.3)
    assert all(e.error_class == "timeout" for e in info.value.errors)


# -- circuit breakers and cooldowns -----------------------------------------------------------------------


async def test_breaker_opens_then_half_open_probe_closes_it(
    make_pool, upstream: Upstream, clock: Clock
) -> None:
    pool = make_pool(provider_entry(upstream, "flaky", model="f", priority=1),
                     provider_entry(upstream, "steady", model="s", priority=2), use_clock=True,
                     routing={"breaker_min_calls": 4, "breaker_failure_rate": 0.5, "breaker_cooldown_s": 30})
    upstream.script("f", Behaviour(status=500), repeat=True)
    for _ in range(4):
        assert (await pool.complete(REQUEST)).provider.name == "steady"
    flaky = pool.members[0].health
    assert flaky.state == "open"
    upstream.reset()
    result = await pool.complete(REQUEST)
    assert [a.provider for a in result.attempts] == ["steady"]  # open: skipped without a request
    assert "f" not in models_asked(upstream)
    clock.advance(31)
    result = await pool.complete(REQUEST)  # half-open: one probe, which succeeds
    assert result.provider.name == "flaky" and flaky.state == "closed"


async def test_failed_probe_reopens_the_circuit(make_pool, upstream: Upstream, clock: Clock) -> None:
    pool = make_pool(provider_entry(upstream, "flaky", model="f", priority=1),
                     provider_entry(upstream, "steady", model="s", priority=2), use_clock=True,
                     routing={"breaker_min_calls": 2, "breaker_cooldown_s": 10})
    upstream.script("f", Behaviour(status=502), repeat=True)
    await pool.complete(REQUEST)
    await pool.complete(REQUEST)
    clock.advance(11)
    await pool.complete(REQUEST)
    health = pool.members[0].health
    assert health.state == "open" and health.open_until == pytest.approx(clock.now + 10)


async def test_rate_limit_cools_the_provider_down_for_retry_after(
    make_pool, upstream: Upstream, clock: Clock
) -> None:
    pool = make_pool(provider_entry(upstream, "limited", model="l", priority=1),
                     provider_entry(upstream, "spare", model="s", priority=2), use_clock=True)
    upstream.script("l", Behaviour(status=429, retry_after_s=20))
    await pool.complete(REQUEST)
    upstream.reset()
    assert (await pool.complete(REQUEST)).provider.name == "spare"
    assert models_asked(upstream) == ["s"]
    clock.advance(21)
    assert (await pool.complete(REQUEST)).provider.name == "limited"


async def test_everything_unavailable_is_a_clear_error_with_retry_after(
    make_pool, upstream: Upstream, clock: Clock
) -> None:
    pool = make_pool(provider_entry(upstream, "only", model="o"), use_clock=True, routing={"max_retries": 0})
    upstream.script("o", Behaviour(status=429, retry_after_s=12))
    with pytest.raises(AllProvidersFailed):
        await pool.complete(REQUEST)
    with pytest.raises(NoProviderAvailable, match="cooling down") as info:
        await pool.complete(REQUEST)
    assert info.value.retry_after_s == pytest.approx(12, abs=0.01)


# -- limits and budgets -----------------------------------------------------------------------------------


async def test_concurrency_limit_holds_under_50_concurrent_calls(make_pool, upstream: Upstream) -> None:
    pool = make_pool(provider_entry(upstream, "narrow", model="n", max_concurrency=3))
    upstream.script("n", Behaviour(latency_s=0.05), repeat=True)
    peak = 0
    done = 0

    async def one() -> None:
        nonlocal done
        await pool.complete(REQUEST)
        done += 1

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, sum(r.finished_at is None for r in upstream.requests))
            await anyio.sleep(0.005)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as outer:
            outer.start_soon(watch)
            async with anyio.create_task_group() as calls:
                for _ in range(50):
                    calls.start_soon(one)
            outer.cancel_scope.cancel()
    assert done == 50
    assert peak == 3


async def test_requests_per_minute_limit_moves_calls_elsewhere(make_pool, upstream: Upstream, clock: Clock) -> None:
    pool = make_pool(provider_entry(upstream, "rpm5", model="r", priority=1, rpm=5),
                     provider_entry(upstream, "spare", model="s", priority=2), use_clock=True)
    served = [(await pool.complete(REQUEST)).provider.name for _ in range(8)]
    assert served == ["rpm5"] * 5 + ["spare"] * 3
    clock.advance(61)
    assert (await pool.complete(REQUEST)).provider.name == "rpm5"


async def test_tokens_per_minute_limit(make_pool, upstream: Upstream) -> None:
    pool = make_pool(provider_entry(upstream, "tpm", model="t", priority=1, tpm=2500),
                     provider_entry(upstream, "spare", model="s", priority=2))
    request = CompletionRequest(messages=REQUEST.messages, max_tokens=1000)  # ~1003 estimated tokens each
    served = [(await pool.complete(request)).provider.name for _ in range(3)]
    assert served == ["tpm", "tpm", "spare"]


async def test_provider_budget_stops_spend_and_overall_budget_refuses(make_pool, upstream: Upstream) -> None:
    pool = make_pool(
        provider_entry(upstream, "pricey", model="p", priority=1, input_cost_per_mtok=1_000_000,
                       daily_budget_usd=2.5),
        provider_entry(upstream, "cheap", model="c", priority=2, input_cost_per_mtok=1_000_000),
        routing={"daily_budget_usd": 5.0},
    )
    upstream.script(None, Behaviour(input_tokens=1, output_tokens=0), repeat=True)  # $1 per call
    served = [(await pool.complete(REQUEST)).provider.name for _ in range(5)]
    assert served == ["pricey", "pricey", "pricey", "cheap", "cheap"]
    with pytest.raises(BudgetExceeded, match=r"\$5"):
        await pool.complete(REQUEST)
    assert len(upstream.requests) == 5


async def test_budget_spend_survives_a_restart(make_pool, upstream: Upstream, store: MemoryCalls) -> None:
    entry = provider_entry(upstream, "p", model="p", input_cost_per_mtok=1_000_000, daily_budget_usd=2)
    upstream.script(None, Behaviour(input_tokens=1, output_tokens=0), repeat=True)
    first = make_pool(entry)
    await first.complete(REQUEST)
    await first.complete(REQUEST)
    second = make_pool(entry)  # a new process: same store, fresh in-memory state
    await second.load_spend()
    with pytest.raises(NoProviderAvailable, match="daily budget"):
        await second.complete(REQUEST)


# -- A/B buckets ------------------------------------------------------------------------------------------


async def test_ab_bucket_routes_and_is_recorded(make_pool, upstream: Upstream, store: MemoryCalls) -> None:
    pool = make_pool(provider_entry(upstream, "control", model="c", priority=1),
                     provider_entry(upstream, "variant", model="v", priority=2))
    options = CallOptions(ab_bucket="exp:variant", bucket_providers=("variant",))
    result = await pool.complete(REQUEST, options=options)
    assert result.provider.name == "variant" and result.ab_bucket == "exp:variant"
    assert store.records[-1].ab_bucket == "exp:variant"


async def test_unknown_provider_names_the_known_ones(two: ProviderPool) -> None:
    with pytest.raises(UnknownProvider, match="configured: first, second"):
        await two.complete(REQUEST, providers=["nope"])


async def test_cost_comes_from_configured_prices(two: ProviderPool, upstream: Upstream) -> None:
    upstream.script("m2", Behaviour(input_tokens=1000, output_tokens=500))
    result = await two.complete(REQUEST, providers=["second"])
    assert result.cost_usd == pytest.approx((1000 * 2.0 + 500 * 4.0) / 1e6)


async def test_empty_pool_says_what_to_set(store: MemoryCalls) -> None:
    with pytest.raises(NoProvidersConfigured, match="OPENAI_API_KEY"):
        await ProviderPool([], store).complete(REQUEST)


async def test_provider_without_key_is_named(store: MemoryCalls) -> None:
    config = config_for({"name": "keyless", "kind": "anthropic", "model": "claude-x"})
    pool = ProviderPool([(p, build_provider(p)) for p in config.providers], store, config=config)
    with pytest.raises(NoProvidersConfigured, match="ANTHROPIC_API_KEY"):
        await pool.complete(REQUEST)


# -- strategies through the pool ---------------------------------------------------------------------------


async def test_least_latency_learns_to_prefer_the_fast_provider(make_pool, upstream: Upstream) -> None:
    pool = make_pool(provider_entry(upstream, "slow", model="slow-80", priority=1),
                     provider_entry(upstream, "fast", model="quick", priority=2), routing={"strategy": "least_latency"})
    for _ in range(2):  # both get measured first
        await pool.complete(REQUEST)
    served = [(await pool.complete(REQUEST)).provider.name for _ in range(10)]
    assert served == ["fast"] * 10


async def test_per_call_strategy_overrides_the_configured_one(make_pool, upstream: Upstream) -> None:
    pool = make_pool(*(provider_entry(upstream, name, model=name, priority=i) for i, name in enumerate("abc")))
    served = [(await pool.complete(REQUEST, options=CallOptions(strategy="round_robin"))).provider.name
              for _ in range(6)]
    assert served == ["a", "b", "c", "a", "b", "c"]
    assert (await pool.complete(REQUEST)).provider.name == "a"  # configured: priority


async def test_least_cost_through_the_pool(make_pool, upstream: Upstream) -> None:
    pool = make_pool(provider_entry(upstream, "dear", model="d", priority=1, output_cost_per_mtok=60),
                     provider_entry(upstream, "cheap", model="c", priority=2, output_cost_per_mtok=0.5),
                     routing={"strategy": "least_cost"})
    assert (await pool.complete(REQUEST)).provider.name == "cheap"


def test_the_rate_windows_keep_only_the_last_minute_without_limits() -> None:
    # Without rpm/tpm limits nothing reads the windows, so they must still be trimmed: a long-running server
    # otherwise keeps one entry per call forever.
    from server.config import ProviderConfig, RoutingConfig
    from server.pool.health import ProviderHealth

    now = [1_000_000.0]
    health = ProviderHealth(ProviderConfig(name="p", kind="openai", model="m", base_url="http://127.0.0.1:9/v1"),
                            RoutingConfig(), clock=lambda: now[0])
    for _ in range(3_000):  # ten minutes at five calls a second
        health.started(estimated_tokens=10)
        health.succeeded(latency_ms=1.0, cost_usd=0.0)
        now[0] += 0.2
    assert len(health.request_times) <= 301 and len(health.token_times) <= 301
    assert len(health.outcomes) <= 301  # the breaker window (60 s by default)
