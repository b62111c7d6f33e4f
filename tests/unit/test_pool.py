"""The pool against scripted fake providers: fallback by error class, retries, deadlines, breakers, limits, budgets,
A/B buckets, recording (cancelled included) and progress — composed of Providers."""

from __future__ import annotations

import random
from collections.abc import Callable

import anyio
import pytest

from server.config import ProviderConfig, RoutingConfig
from server.errors import (
    AllProvidersFailed,
    BudgetExceeded,
    NoProviderAvailable,
    NoProvidersConfigured,
    UnknownProvider,
)
from server.pool.fallback import FallbackProvider
from server.pool.health import ProviderHealth
from server.pool.member import PoolMember
from server.pool.policy import ScreenedProvider
from server.pool.pool import CallOptions, ProviderPool
from server.pool.providers import CompletionRequest, Message, Provider
from server.pool.recording import RecordingProvider
from server.store.memory import MemoryStore
from tests.fakes import Fleet, Reply, fail, fake_config, fake_entry, fleet_for

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
    """Backoff sleeps, recorded and passed at once on the test's clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(seconds)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def sleeps(clock: Clock) -> Sleeps:
    return Sleeps(clock)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_pool(store: MemoryStore, sleeps: Sleeps, clock: Clock) -> Callable[..., tuple[ProviderPool, Fleet]]:
    def make(*entries: dict, **sections) -> tuple[ProviderPool, Fleet]:
        config = fake_config(*entries, **sections)
        fleet = fleet_for(config)
        pool = ProviderPool([(p, fleet(p)) for p in config.providers], store.calls, config=config,
                            rng=random.Random(0), sleep=sleeps, clock=clock)
        return pool, fleet

    return make


@pytest.fixture
def two(make_pool) -> tuple[ProviderPool, Fleet]:
    return make_pool(fake_entry("second", kind="anthropic", model="m2", priority=2, input_cost_per_mtok=2.0,
                                output_cost_per_mtok=4.0),
                     fake_entry("first", model="m1", priority=1, timeout_s=0.2))


# -- composition ----------------------------------------------------------------------------------------------


async def test_every_layer_of_the_provider_path_is_a_provider(two) -> None:
    pool, _ = two
    call = await pool.call()
    screened = pool.fallback(call, REQUEST)
    assert isinstance(screened, ScreenedProvider) and isinstance(screened.inner, FallbackProvider)
    member, recorded = screened.inner.candidates[0]
    assert isinstance(recorded, RecordingProvider) and isinstance(member, PoolMember)
    for layer in (screened, screened.inner, recorded, member, pool.provider("second", call)):
        assert isinstance(layer, Provider)


# -- order and fallback by error class ------------------------------------------------------------------------


async def test_lowest_priority_number_answers_first(two) -> None:
    pool, _ = two
    result = await pool.complete(REQUEST)
    assert result.provider == "first" and [a.provider for a in result.attempts] == ["first"]


@pytest.mark.parametrize("reply", [
    fail("server_error"), fail("rate_limited", retry_after_s=30), Reply(hang=True), fail("malformed_reply"),
    fail("connection"), fail("authentication"), fail("not_found"), Reply(finish_reason="content_filter"),
    fail("content_refused"),
], ids=lambda r: r.error or r.finish_reason or "hang")
async def test_a_provider_specific_failure_moves_on_to_the_next_provider_at_once(
    two, store: MemoryStore, sleeps: Sleeps, reply: Reply,
) -> None:
    pool, fleet = two
    fleet["first"].script(reply)
    error_class = reply.error or ("content_refused" if reply.finish_reason else "timeout")
    with anyio.fail_after(5):
        result = await pool.complete(REQUEST)
    assert result.provider == "second" and result.text == "[m2] hi there"
    assert [(a.provider, a.status, a.error_class) for a in result.attempts] == [
        ("first", "error", error_class), ("second", "ok", None)]
    assert len(fleet["first"].seen) == 1 and sleeps.waits == []  # no retry, no wait before the fallback
    assert [(r.provider, r.status, r.error_class, r.attempt) for r in store.calls.records] == [
        ("first", "error", error_class, 1), ("second", "ok", None, 2)]
    assert len({r.call_id for r in store.calls.records}) == 1


async def test_one_provider_answering_404_no_longer_ends_the_call(two) -> None:
    pool, fleet = two
    fleet["first"].script(fail("not_found"), repeat=True)
    result = await pool.complete(REQUEST)
    assert result.provider == "second"
    assert len(fleet["first"].seen) == 1  # a missing model is not retried on the same provider either


async def test_a_malformed_request_is_not_sprayed_across_the_pool(two) -> None:
    pool, fleet = two
    fleet["first"].script(fail("bad_request"))
    with pytest.raises(AllProvidersFailed) as info:
        await pool.complete(REQUEST)
    assert [e.error_class for e in info.value.errors] == ["bad_request"]
    assert fleet["second"].seen == []


async def test_content_refusals_can_be_configured_to_end_the_call(make_pool) -> None:
    pool, fleet = make_pool(fake_entry("a", priority=1), fake_entry("b", priority=2),
                            routing={"fallback_on_content_refused": False, "max_retries": 0})
    fleet["a"].script(Reply(finish_reason="refusal"))
    with pytest.raises(AllProvidersFailed, match="content_refused"):
        await pool.complete(REQUEST)
    assert fleet["b"].seen == []


async def test_context_window_overflow_prefers_a_larger_window(make_pool) -> None:
    pool, fleet = make_pool(fake_entry("small", priority=1, context_window=8_000),
                            fake_entry("also-small", priority=2, context_window=4_000),
                            fake_entry("unknown", priority=3),
                            fake_entry("large", priority=4, context_window=200_000))
    fleet["small"].script(fail("context_window_exceeded"))
    result = await pool.complete(REQUEST)
    assert [(a.provider, a.error_class) for a in result.attempts] == [
        ("small", "context_window_exceeded"), ("large", None)]  # the larger window first, ahead of priority
    assert fleet["also-small"].seen == [] and fleet["unknown"].seen == []


async def test_json_mode_rejects_an_invalid_reply_and_falls_back(two) -> None:
    pool, fleet = two
    fleet["first"].script(Reply(text="Sure! Here is JSON: {oops"))
    fleet["second"].script(Reply(text='```json\n{"answer": 42}\n```'))
    result = await pool.complete(CompletionRequest(messages=REQUEST.messages, response_format="json"))
    assert result.provider == "second" and result.attempts[0].error_class == "malformed_reply"


async def test_explicit_providers_are_tried_in_the_given_order(two) -> None:
    pool, fleet = two
    fleet["second"].script(fail("server_error"))
    result = await pool.complete(REQUEST, providers=["second", "first"])
    assert [a.provider for a in result.attempts] == ["second", "first"]


async def test_capability_and_model_filters(make_pool) -> None:
    pool, _ = make_pool(fake_entry("chat", model="c", priority=1),
                        fake_entry("coder", model="k", priority=2, capabilities=["chat", "code"]))
    assert (await pool.complete(REQUEST, options=CallOptions(capabilities=["code"]))).provider == "coder"
    assert (await pool.complete(REQUEST, options=CallOptions(model="k"))).provider == "coder"
    with pytest.raises(NoProvidersConfigured, match="capability 'vision'"):
        await pool.complete(REQUEST, options=CallOptions(capabilities=["vision"]))


async def test_max_fallbacks_limits_the_candidates(two) -> None:
    pool, fleet = two
    fleet["first"].script(fail("server_error"), repeat=True)
    with pytest.raises(AllProvidersFailed):
        await pool.complete(REQUEST, options=CallOptions(max_fallbacks=0))
    assert fleet["second"].seen == []


# -- retries of the same provider ------------------------------------------------------------------------------


async def test_last_provider_standing_is_retried_with_backoff(make_pool, sleeps: Sleeps) -> None:
    pool, fleet = make_pool(fake_entry("only"), routing={"backoff_base_s": 0.5})
    fleet["only"].script(fail("server_error"), fail("server_error"))
    result = await pool.complete(REQUEST)
    assert [a.status for a in result.attempts] == ["error", "error", "ok"]
    assert len(sleeps.waits) == 2
    assert 0 <= sleeps.waits[0] <= 0.5 and 0 <= sleeps.waits[1] <= 1.0  # full jitter under base·2ⁿ


async def test_retry_honours_retry_after(make_pool, sleeps: Sleeps) -> None:
    pool, fleet = make_pool(fake_entry("only"))
    fleet["only"].script(fail("rate_limited", retry_after_s=2))
    result = await pool.complete(REQUEST)
    assert result.attempts[-1].status == "ok" and sleeps.waits[0] >= 1.9


async def test_no_retry_when_the_deadline_cannot_hold_the_wait(make_pool, sleeps: Sleeps) -> None:
    pool, fleet = make_pool(fake_entry("only"))
    fleet["only"].script(fail("rate_limited", retry_after_s=30))
    with pytest.raises(AllProvidersFailed):
        await pool.complete(REQUEST, timeout_s=5)
    assert sleeps.waits == [] and len(fleet["only"].seen) == 1


@pytest.mark.parametrize("error_class", ["authentication", "not_found"])
async def test_a_provider_whose_credentials_or_model_are_wrong_is_never_retried(
    make_pool, sleeps: Sleeps, error_class: str,
) -> None:
    pool, fleet = make_pool(fake_entry("only"))
    fleet["only"].script(fail(error_class), repeat=True)
    with pytest.raises(AllProvidersFailed, match=error_class):
        await pool.complete(REQUEST)
    assert len(fleet["only"].seen) == 1 and sleeps.waits == []


async def test_all_failing_lists_every_attempt(two) -> None:
    pool, fleet = two
    fleet["first"].script(fail("server_error"), repeat=True)
    fleet["second"].script(fail("server_error"), repeat=True)
    with pytest.raises(AllProvidersFailed) as info:
        await pool.complete(REQUEST)
    assert "first (server_error)" in str(info.value) and "second (server_error)" in str(info.value)
    assert "list_providers" in str(info.value)  # says what to do next
    assert len(info.value.errors) == 2 + 2  # each once, then max_retries=2 retries


async def test_the_callers_deadline_bounds_the_call_and_is_recorded_as_cancelled(two, store: MemoryStore) -> None:
    pool, fleet = two
    fleet["first"].script(Reply(hang=True), repeat=True)  # its own timeout_s (0.2 s) would be a provider timeout
    fleet["second"].script(Reply(hang=True), repeat=True)
    with anyio.fail_after(2), pytest.raises(AllProvidersFailed) as info:
        await pool.complete(REQUEST, timeout_s=0.1)
    assert [e.error_class for e in info.value.errors] == ["deadline"]
    assert [(r.provider, r.status, r.error_class) for r in store.calls.records] == [("first", "cancelled", "deadline")]
    assert not pool.members[0].health.outcomes  # nothing counted against the provider


async def test_a_cancelled_call_is_recorded_as_cancelled_and_never_counts_against_the_provider(
    make_pool, store: MemoryStore,
) -> None:
    pool, fleet = make_pool(fake_entry("slow"), routing={"breaker_min_calls": 1})
    fleet["slow"].script(Reply(hang=True), repeat=True)
    for _ in range(3):
        with anyio.move_on_after(0.02):  # the client goes away
            await pool.complete(REQUEST)
    assert [(r.status, r.error_class) for r in store.calls.records] == [("cancelled", "cancelled")] * 3
    health = pool.members[0].health
    assert health.state == "closed" and not health.outcomes and health.in_flight == 0
    totals = await store.calls.group_totals(0, 4e9, "provider")
    assert [(t.calls, t.errors, t.latencies_ms) for t in totals] == [(0, 0, [])]  # nothing the incidents read


# -- circuit breakers and cooldowns ---------------------------------------------------------------------------


async def test_breaker_opens_then_half_open_probe_closes_it(make_pool, clock: Clock) -> None:
    pool, fleet = make_pool(fake_entry("flaky", priority=1), fake_entry("steady", priority=2),
                            routing={"breaker_min_calls": 4, "breaker_failure_rate": 0.5, "breaker_cooldown_s": 30})
    fleet["flaky"].script(fail("server_error"), repeat=True)
    for _ in range(4):
        assert (await pool.complete(REQUEST)).provider == "steady"
    flaky = pool.members[0].health
    assert flaky.state == "open" and len(fleet["flaky"].seen) == 4
    result = await pool.complete(REQUEST)
    assert [a.provider for a in result.attempts] == ["steady"] and len(fleet["flaky"].seen) == 4  # skipped
    clock.advance(31)
    fleet["flaky"].script(Reply(), repeat=True)
    result = await pool.complete(REQUEST)  # half-open: one probe, which succeeds
    assert result.provider == "flaky" and flaky.state == "closed"


async def test_failed_probe_reopens_the_circuit(make_pool, clock: Clock) -> None:
    pool, fleet = make_pool(fake_entry("flaky", priority=1), fake_entry("steady", priority=2),
                            routing={"breaker_min_calls": 2, "breaker_cooldown_s": 10})
    fleet["flaky"].script(fail("server_error"), repeat=True)
    await pool.complete(REQUEST)
    await pool.complete(REQUEST)
    clock.advance(11)
    await pool.complete(REQUEST)
    health = pool.members[0].health
    assert health.state == "open" and health.open_until == pytest.approx(clock.now + 10)


async def test_rate_limit_cools_the_provider_down_for_retry_after(make_pool, clock: Clock) -> None:
    pool, fleet = make_pool(fake_entry("limited", priority=1), fake_entry("spare", priority=2))
    fleet["limited"].script(fail("rate_limited", retry_after_s=20))
    await pool.complete(REQUEST)
    assert (await pool.complete(REQUEST)).provider == "spare" and len(fleet["limited"].seen) == 1
    clock.advance(21)
    assert (await pool.complete(REQUEST)).provider == "limited"


async def test_everything_unavailable_is_a_clear_error_with_retry_after(make_pool, clock: Clock) -> None:
    pool, fleet = make_pool(fake_entry("only"), routing={"max_retries": 0})
    fleet["only"].script(fail("rate_limited", retry_after_s=12))
    with pytest.raises(AllProvidersFailed):
        await pool.complete(REQUEST)
    with pytest.raises(NoProviderAvailable, match="cooling down") as info:
        await pool.complete(REQUEST)
    assert info.value.retry_after_s == pytest.approx(12, abs=0.01)


# -- limits and budgets ----------------------------------------------------------------------------------------


async def test_concurrency_limit_holds_under_50_concurrent_calls(make_pool) -> None:
    pool, fleet = make_pool(fake_entry("narrow", max_concurrency=3))
    fleet["narrow"].script(Reply(latency_s=0.01), repeat=True)
    results = []

    async def one() -> None:
        results.append(await pool.complete(REQUEST))

    with anyio.fail_after(20):
        async with anyio.create_task_group() as calls:
            for _ in range(50):
                calls.start_soon(one)
    assert len(results) == 50 and fleet["narrow"].peak_in_flight == 3


async def test_requests_per_minute_limit_moves_calls_elsewhere(make_pool, clock: Clock) -> None:
    pool, _ = make_pool(fake_entry("rpm5", priority=1, rpm=5), fake_entry("spare", priority=2))
    served = [(await pool.complete(REQUEST)).provider for _ in range(8)]
    assert served == ["rpm5"] * 5 + ["spare"] * 3
    clock.advance(61)
    assert (await pool.complete(REQUEST)).provider == "rpm5"


async def test_tokens_per_minute_limit(make_pool) -> None:
    pool, _ = make_pool(fake_entry("tpm", priority=1, tpm=2500), fake_entry("spare", priority=2))
    request = CompletionRequest(messages=REQUEST.messages, max_tokens=1000)  # ~1003 estimated tokens each
    assert [(await pool.complete(request)).provider for _ in range(3)] == ["tpm", "tpm", "spare"]


async def test_provider_budget_stops_spend_and_overall_budget_refuses(make_pool) -> None:
    pool, fleet = make_pool(
        fake_entry("pricey", priority=1, input_cost_per_mtok=1_000_000, daily_budget_usd=2.5),
        fake_entry("cheap", priority=2, input_cost_per_mtok=1_000_000),
        routing={"daily_budget_usd": 5.0},
    )
    for name in ("pricey", "cheap"):
        fleet[name].script(Reply(input_tokens=1, output_tokens=0), repeat=True)  # $1 per call
    served = [(await pool.complete(REQUEST)).provider for _ in range(5)]
    assert served == ["pricey", "pricey", "pricey", "cheap", "cheap"]
    with pytest.raises(BudgetExceeded, match=r"\$5"):
        await pool.complete(REQUEST)
    assert len(fleet["pricey"].seen) + len(fleet["cheap"].seen) == 5


async def test_budget_spend_survives_a_restart(make_pool) -> None:
    entry = fake_entry("p", input_cost_per_mtok=1_000_000, daily_budget_usd=2)
    first, fleet = make_pool(entry)
    fleet["p"].script(Reply(input_tokens=1, output_tokens=0), repeat=True)
    await first.complete(REQUEST)
    await first.complete(REQUEST)
    second, _ = make_pool(entry)  # a new process: same store, fresh in-memory state
    await second.load_spend()
    with pytest.raises(NoProviderAvailable, match="daily budget"):
        await second.complete(REQUEST)


# -- A/B buckets, names, prices -----------------------------------------------------------------------------------


async def test_ab_bucket_routes_and_is_recorded(make_pool, store: MemoryStore) -> None:
    pool, _ = make_pool(fake_entry("control", priority=1), fake_entry("variant", priority=2))
    call = await pool.call(ab_bucket="exp:variant")
    result = await pool.fallback(call, REQUEST, CallOptions(bucket_providers=("variant",))).complete(REQUEST)
    assert result.provider == "variant" and store.calls.records[-1].ab_bucket == "exp:variant"


async def test_unknown_provider_names_the_known_ones(two) -> None:
    pool, _ = two
    with pytest.raises(UnknownProvider, match="configured: first, second"):
        await pool.complete(REQUEST, providers=["nope"])


async def test_cost_comes_from_configured_prices(two) -> None:
    pool, fleet = two
    fleet["second"].script(Reply(input_tokens=1000, output_tokens=500))
    result = await pool.complete(REQUEST, providers=["second"])
    assert result.cost_usd == pytest.approx((1000 * 2.0 + 500 * 4.0) / 1e6)


async def test_empty_pool_says_what_to_set(store: MemoryStore) -> None:
    with pytest.raises(NoProvidersConfigured, match="OPENAI_API_KEY"):
        await ProviderPool([], store.calls).complete(REQUEST)


async def test_provider_without_key_is_named(store: MemoryStore) -> None:
    config = fake_config({"name": "keyless", "kind": "anthropic", "model": "claude-x"})
    pool = ProviderPool([(p, Fleet()(p)) for p in config.providers], store.calls, config=config)
    with pytest.raises(NoProvidersConfigured, match="ANTHROPIC_API_KEY"):
        await pool.complete(REQUEST)


# -- strategies through the pool ---------------------------------------------------------------------------------


async def test_least_latency_learns_to_prefer_the_fast_provider(make_pool) -> None:
    pool, fleet = make_pool(fake_entry("slow", priority=1), fake_entry("fast", priority=2),
                            routing={"strategy": "least_latency"})
    fleet["slow"].script(Reply(latency_s=0.03), repeat=True)
    for _ in range(2):  # both get measured first
        await pool.complete(REQUEST)
    assert [(await pool.complete(REQUEST)).provider for _ in range(10)] == ["fast"] * 10


async def test_per_call_strategy_overrides_the_configured_one(make_pool) -> None:
    pool, _ = make_pool(*(fake_entry(name, priority=i) for i, name in enumerate("abc")))
    served = [(await pool.complete(REQUEST, options=CallOptions(strategy="round_robin"))).provider
              for _ in range(6)]
    assert served == ["a", "b", "c", "a", "b", "c"]
    assert (await pool.complete(REQUEST)).provider == "a"  # configured: priority


async def test_least_cost_through_the_pool(make_pool) -> None:
    pool, _ = make_pool(fake_entry("dear", priority=1, output_cost_per_mtok=60),
                        fake_entry("cheap", priority=2, output_cost_per_mtok=0.5), routing={"strategy": "least_cost"})
    assert (await pool.complete(REQUEST)).provider == "cheap"


# -- progress ----------------------------------------------------------------------------------------------------


async def test_progress_reports_each_attempt_and_the_fallback(make_pool) -> None:
    pool, fleet = make_pool(fake_entry("a", priority=1), fake_entry("b", priority=2), fake_entry("c", priority=3))
    fleet["a"].script(fail("server_error"))
    fleet["b"].script(fail("rate_limited"))
    seen: list[tuple[float, float | None, str]] = []

    async def progress(done: float, total: float | None, message: str) -> None:
        seen.append((done, total, message))

    call = await pool.call(progress=progress)
    result = await pool.fallback(call, REQUEST).complete(REQUEST)
    assert result.provider == "c"
    assert seen == [(1, 3, "asking a (attempt 1 of 3)"),
                    (2, 3, "a failed (server_error); falling back to b (attempt 2 of 3)"),
                    (3, 3, "b failed (rate_limited); falling back to c (attempt 3 of 3)")]


def test_the_rate_windows_keep_only_the_last_minute_without_limits() -> None:
    # Without rpm/tpm limits nothing reads the windows, so they must still be trimmed: a long-running server
    # otherwise keeps one entry per call forever.
    now = [1_000_000.0]
    health = ProviderHealth(ProviderConfig(name="p", kind="openai", model="m", base_url="http://127.0.0.1:9/v1"),
                            RoutingConfig(), clock=lambda: now[0])
    for _ in range(3_000):  # ten minutes at five calls a second
        health.started(estimated_tokens=10)
        health.succeeded(latency_ms=1.0, cost_usd=0.0)
        now[0] += 0.2
    assert len(health.request_times) <= 301 and len(health.token_times) <= 301
    assert len(health.outcomes) <= 301  # the breaker window (60 s by default)
