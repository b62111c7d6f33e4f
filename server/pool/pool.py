"""The provider pool: candidates, routing, fallback and retry, breakers, limits, budgets, recording.

The retry and fallback rule:

1. Candidates are the ready providers (or the ones the call names, in its order), filtered by the
   requested capabilities and model, ordered by the strategy, cut to ``1 + max_fallbacks``.
2. A provider that may not take a call now (circuit open, cooling down after a 429, over its requests- or
   tokens-per-minute limit, over its daily budget) is skipped.
3. On a retryable failure the call moves to the next candidate at once: timeout, rate limited, server
   error, connection, malformed reply (including invalid JSON in JSON mode), authentication, content
   refused. A context-window overflow moves only to providers with a larger configured ``context_window``.
   A bad request stops the call: another provider would refuse it too.
4. Only when no other candidate remains is a provider retried (never after an authentication failure):
   up to ``max_retries`` times, after an exponential backoff with full jitter (``backoff_base_s · 2ⁿ``,
   capped at ``backoff_max_s``; AWS Architecture Blog, "Exponential Backoff And Jitter", 2015) or the
   provider's Retry-After, whichever is longer, and only if the call's deadline allows the wait.

Every attempt is recorded off the hot path and reported back.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace

import anyio

from server.config import Config, ProviderConfig, Strategy
from server.errors import (
    AllProvidersFailed,
    BudgetExceeded,
    MalformedReply,
    NoProviderAvailable,
    NoProvidersConfigured,
    OrchestrationError,
    ProviderError,
    ProviderTimeout,
    UnknownProvider,
)
from server.pool.health import ProviderHealth, seconds_to_utc_midnight, utc_day
from server.pool.providers import Completion, CompletionRequest, Provider
from server.pool.routing import Router
from server.store import CallRecord, CallStore
from server.pool.text import estimate_tokens, strip_code_fence

logger = logging.getLogger(__name__)
# Failures after which the same provider is worth another try once nobody else is left.
_RETRY_SAME = frozenset({"timeout", "rate_limited", "server_error", "connection", "malformed_reply",
                         "content_refused", "provider_error"})


@dataclass(frozen=True, slots=True)
class Attempt:
    """One provider attempt within a call, as reported to the client.

    Attributes:
        provider / model: who was asked.
        status: ``ok``, ``error`` or ``cached``.
        error_class: the failure class (``rate_limited``, ``timeout`` …), ``None`` on success.
        error: a redacted one-line description of the failure.
        latency_ms: time spent waiting on this provider.
    """

    provider: str
    model: str
    status: str
    latency_ms: float
    error_class: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class PoolResult:
    """The outcome of a successful pool call.

    Attributes:
        completion: the answer.
        provider: the provider that answered (``None`` when the response cache answered).
        attempts: every attempt in order, the last one the success.
        cost_usd: cost of the successful completion (failed attempts report no usage).
        provider_wait_ms: total time spent waiting on providers, all attempts (backoff sleeps excluded).
        ab_bucket: the A/B bucket the call ran in, if any.
        cached: answered from the response cache; no provider was called.
    """

    completion: Completion
    provider: ProviderConfig | None
    attempts: tuple[Attempt, ...]
    cost_usd: float
    provider_wait_ms: float
    ab_bucket: str | None = None
    cached: bool = False


@dataclass(slots=True)
class PoolMember:
    """A provider with its configuration, runtime health and concurrency limiter."""

    config: ProviderConfig
    provider: Provider
    health: ProviderHealth
    limiter: anyio.CapacityLimiter

    @property
    def ewma_latency_ms(self) -> float | None:
        return self.health.ewma_latency_ms

    @property
    def in_flight(self) -> int:
        return self.health.in_flight


@dataclass(frozen=True, slots=True)
class CallOptions:
    """How one call should be routed.

    Attributes:
        providers: explicit provider names, tried in the order given (no strategy, no A/B).
        strategy: overrides the configured strategy.
        capabilities: every one must be among a provider's ``capabilities``.
        model: only providers configured with this model.
        timeout_s: deadline of the whole call, seconds.
        max_fallbacks: overrides ``routing.max_fallbacks``.
        ab_bucket / bucket_providers: the A/B assignment (see :func:`server.pool.routing.assign_bucket`).
    """

    providers: Sequence[str] | None = None
    strategy: Strategy | None = None
    capabilities: Sequence[str] = ()
    model: str | None = None
    timeout_s: float | None = None
    max_fallbacks: int | None = None
    ab_bucket: str | None = None
    bucket_providers: Sequence[str] = ()


current_workflow: ContextVar[str | None] = ContextVar("ai_orchestration_workflow", default=None)
"""The workflow a call is made for (set by the workflow interpreter for a run's steps); recorded with each call,
so ``monitor_operations(group_by="workflow")`` can group by it."""


@dataclass(slots=True)
class _CallState:
    call_id: str
    tool: str
    deadline: float | None
    ab_bucket: str | None
    estimated_tokens: int
    attempts: list[Attempt] = field(default_factory=list)
    errors: list[ProviderError] = field(default_factory=list)
    waited_ms: float = 0.0


class ProviderPool:
    """Routes completion requests through configured providers with fallback.

    Args:
        members: (config, provider) pairs.
        store: where attempts are recorded.
        config: the whole configuration (routing, experiments); default: only the members' settings.
        clock: wall clock in Unix seconds (records, limits, breakers); injectable for tests.
        timer: monotonic seconds (latencies, deadlines).
        rng: randomness for routing ties, weighted choices and jitter.
        sleep: how backoff waits (tests pass a fake).
    """

    def __init__(
        self,
        members: Sequence[tuple[ProviderConfig, Provider]],
        store: CallStore,
        *,
        config: Config | None = None,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.perf_counter,
        rng: random.Random | None = None,
        sleep: Callable[[float], object] = anyio.sleep,
        shared_spend: bool = False,
    ) -> None:
        self.config = config or Config()
        # Replicas on one database: today's spend is re-read from the shared records before each budgeted call,
        # so every replica checks the budgets against everyone's spend.
        self._shared_spend = shared_spend and (self.config.routing.daily_budget_usd is not None or any(
            p.daily_budget_usd is not None for p, _ in members))
        routing = self.config.routing
        ordered = sorted(members, key=lambda pair: (pair[0].priority, pair[0].name))
        self._members = {
            cfg.name: PoolMember(cfg, provider, ProviderHealth(cfg, routing, clock),
                                 anyio.CapacityLimiter(cfg.max_concurrency))
            for cfg, provider in ordered
        }
        self._store = store
        self._clock = clock
        self._timer = timer
        self._rng = rng or random.Random()
        self._router = Router(routing, self._rng)
        self._sleep = sleep

    @property
    def configs(self) -> list[ProviderConfig]:
        """Provider configurations in priority order."""
        return [member.config for member in self._members.values()]

    @property
    def members(self) -> list[PoolMember]:
        """Members in priority order (for status reports)."""
        return list(self._members.values())

    async def load_spend(self) -> None:
        """Seed today's per-provider spend from the store, so budgets hold across restarts."""
        now = self._clock()
        day_start = now - (86_400 - seconds_to_utc_midnight(now))
        spent = await self._store.cost_by_provider(day_start)
        for name, cost in spent.items():
            member = self._members.get(name)
            if member is not None:
                member.health.spend_day, member.health.spend_usd = utc_day(now), cost

    def spent_today_usd(self) -> float:
        return sum(m.health.spent_today() for m in self._members.values())

    # -- candidates -----------------------------------------------------------------------------------------

    def candidates(self, names: Sequence[str] | None = None, *, capabilities: Sequence[str] = (),
                   model: str | None = None) -> list[PoolMember]:
        """The ready members a call may use (before routing order and availability).

        Args:
            names: explicit provider names, tried in the order given; ``None`` means every ready provider.

        Raises:
            NoProvidersConfigured: no provider is configured, or none of them is ready (no key) or matches.
            UnknownProvider: a name is not configured.
        """
        if not self._members:
            raise NoProvidersConfigured(
                "no LLM provider is configured: set OPENAI_API_KEY or ANTHROPIC_API_KEY (or OPENAI_BASE_URL for a "
                "local OpenAI-compatible server), or add [[providers]] to the config file (--config)"
            )
        if names:
            unknown = [name for name in names if name not in self._members]
            if unknown:
                raise UnknownProvider(unknown, list(self._members))
            chosen = [self._members[name] for name in dict.fromkeys(names)]
        else:
            chosen = list(self._members.values())
        ready = [member for member in chosen if member.config.readiness() is None]
        if not ready:
            missing = "; ".join(m.config.readiness() or "" for m in chosen)
            raise NoProvidersConfigured(f"no configured provider is ready: {missing}")
        matching = [m for m in ready if set(capabilities) <= set(m.config.capabilities)
                    and (model is None or m.config.model == model)]
        if not matching:
            wanted = ", ".join([*(f"capability {c!r}" for c in capabilities), *([f"model {model!r}"] if model else [])])
            raise NoProvidersConfigured(f"no ready provider offers {wanted}")
        return matching

    def choose(self, count: int, *, strategy: Strategy | None = None, capabilities: Sequence[str] = (),
               input_tokens: int = 0, output_tokens: int = 0) -> list[str]:
        """The names of up to ``count`` providers that may take a call now, best first by ``strategy``.

        Raises:
            NoProvidersConfigured: as :meth:`candidates`.
            NoProviderAvailable: every matching provider is skipped now (breaker, cooldown, limits, budget).
        """
        members = self._router.order(self.candidates(capabilities=capabilities),
                                     strategy or self.config.routing.strategy,
                                     input_tokens=input_tokens, output_tokens=output_tokens)
        chosen, skipped = [], {}
        for member in members:
            unavailable = member.health.unavailable(input_tokens + output_tokens)
            if unavailable is None:
                chosen.append(member.config.name)
            else:
                skipped[member.config.name] = unavailable.reason
        if not chosen:
            raise NoProviderAvailable(skipped)
        return chosen[:count]

    def _plan(self, request: CompletionRequest, options: CallOptions) -> list[PoolMember]:
        explicit = options.providers or None
        names = explicit or (list(options.bucket_providers) or None)
        members = self.candidates(names, capabilities=options.capabilities, model=options.model)
        if not explicit:
            strategy = options.strategy or self.config.routing.strategy
            prompt_tokens = estimate_tokens(request.system or "") + sum(estimate_tokens(m.content)
                                                                         for m in request.messages)
            members = self._router.order(members, strategy, input_tokens=prompt_tokens,
                                         output_tokens=request.max_tokens)
        max_fallbacks = options.max_fallbacks if options.max_fallbacks is not None else self.config.routing.max_fallbacks
        return members if max_fallbacks is None else members[: 1 + max_fallbacks]

    # -- the call -------------------------------------------------------------------------------------------

    async def complete(
        self,
        request: CompletionRequest,
        *,
        options: CallOptions | None = None,
        providers: Sequence[str] | None = None,
        tool: str = "orchestrate",
        call_id: str | None = None,
        timeout_s: float | None = None,
    ) -> PoolResult:
        """Ask candidates in order until one answers (see the module docstring for the rule).

        Args:
            request: the completion request (its ``timeout_s`` is replaced per attempt).
            options: routing options; ``providers`` and ``timeout_s`` are shorthands for the same fields.
            tool: the MCP tool on whose behalf the call runs (recorded).
            call_id: groups the attempts in the records; generated when omitted.

        Raises:
            NoProvidersConfigured, UnknownProvider: see :meth:`candidates`.
            BudgetExceeded: the overall daily budget is spent.
            NoProviderAvailable: every candidate was skipped (breaker, cooldown, limits, budget).
            AllProvidersFailed: every attempt failed, or one failed with a non-retryable error.
        """
        options = options or CallOptions()
        if providers is not None or timeout_s is not None:
            options = replace(options, providers=providers or options.providers,
                              timeout_s=timeout_s if timeout_s is not None else options.timeout_s)
        budget = self.config.routing.daily_budget_usd
        if self._shared_spend:
            await self.load_spend()
        if budget is not None and self.spent_today_usd() >= budget:
            raise BudgetExceeded(f"the daily budget of ${budget:g} across all providers is spent; it resets at "
                                 f"00:00 UTC (in {seconds_to_utc_midnight(self._clock()) / 3600:.1f} h)")
        plan = self._plan(request, options)
        estimated = (estimate_tokens(request.system or "") + sum(estimate_tokens(m.content) for m in request.messages)
                     + request.max_tokens)
        state = _CallState(call_id or uuid.uuid4().hex, tool,
                           None if options.timeout_s is None else self._timer() + options.timeout_s,
                           options.ab_bucket, estimated)
        skipped: dict[str, tuple[str, float | None]] = {}
        tried: list[PoolMember] = []
        larger_than: int | None = None  # after a context-window overflow, only larger windows may help
        for member in plan:
            if larger_than is not None and (member.config.context_window or 0) <= larger_than:
                continue
            unavailable = member.health.unavailable(estimated)
            if unavailable is not None:
                skipped[member.config.name] = (unavailable.reason, unavailable.retry_after_s)
                continue
            result = await self._try(member, request, state)
            if result is not None:
                return result
            error = state.errors[-1]
            tried.append(member)
            if error.error_class == "context_window_exceeded":
                larger_than = member.config.context_window or 0
            elif not error.retryable or self._deadline_passed(state):
                raise AllProvidersFailed(state.errors)
        if not tried:
            if not skipped:
                raise AllProvidersFailed(state.errors)
            waits = [wait for _, wait in skipped.values() if wait is not None]
            raise NoProviderAvailable({name: why for name, (why, _) in skipped.items()}, min(waits, default=None))
        return await self._retry(tried, request, state)

    async def _retry(self, tried: list[PoolMember], request: CompletionRequest, state: _CallState) -> PoolResult:
        """Retry providers that failed retryably, once no other candidate remains, within the deadline."""
        last_error = {e.provider: e for e in state.errors}
        for retry in range(self.config.routing.max_retries):
            eligible = [m for m in tried if last_error[m.config.name].error_class in _RETRY_SAME
                        and m.health.state != "open"]
            if not eligible:
                break
            routing = self.config.routing
            backoff = self._rng.uniform(0, min(routing.backoff_max_s, routing.backoff_base_s * 2**retry))
            waits = [(max(backoff, last_error[m.config.name].retry_after_s or 0.0,
                          m.health.cooldown_until - self._clock()), m) for m in eligible]
            wait, member = min(waits, key=lambda pair: pair[0])
            if state.deadline is not None and self._timer() + wait >= state.deadline:
                break
            await self._sleep(wait)
            result = await self._try(member, request, state)
            if result is not None:
                return result
            last_error[member.config.name] = state.errors[-1]
        raise AllProvidersFailed(state.errors)

    def _deadline_passed(self, state: _CallState) -> bool:
        return state.deadline is not None and self._timer() >= state.deadline

    async def _try(self, member: PoolMember, request: CompletionRequest, state: _CallState) -> PoolResult | None:
        """One attempt: returns the result, or records the error in ``state`` and returns ``None``."""
        config = member.config
        number = len(state.attempts) + 1
        remaining = None if state.deadline is None else state.deadline - self._timer()
        if remaining is not None and remaining <= 0:
            error = ProviderTimeout(config.name, "call deadline passed before this provider was tried")
            state.errors.append(error)
            state.attempts.append(Attempt(config.name, config.model, "error", 0.0, error.error_class, error.detail))
            return None
        attempt_timeout_s = config.timeout_s if remaining is None else min(config.timeout_s, remaining)
        prepare = getattr(member.provider, "prepare", None)
        if prepare is not None:
            await prepare()
        started_ts = self._clock()
        member.health.started(state.estimated_tokens)
        started = self._timer()
        try:
            completion = await self._attempt(member, request, attempt_timeout_s)
        except ProviderError as error:
            latency_ms = (self._timer() - started) * 1000
            member.health.failed(error)
            state.waited_ms += latency_ms
            state.attempts.append(Attempt(config.name, config.model, "error", latency_ms, error.error_class,
                                          error.detail))
            state.errors.append(error)
            self._record(state, config, started_ts, latency_ms, number, error_class=error.error_class)
            logger.info("provider %s failed (%s)", config.name, error.error_class)
            return None
        except anyio.get_cancelled_exc_class():
            member.health.failed(None)
            self._record(state, config, started_ts, (self._timer() - started) * 1000, number, error_class="cancelled")
            raise
        latency_ms = (self._timer() - started) * 1000
        cost_usd = config.cost_usd(completion.usage.input_tokens, completion.usage.output_tokens)
        member.health.succeeded(latency_ms, cost_usd)
        state.waited_ms += latency_ms
        state.attempts.append(Attempt(config.name, completion.model, "ok", latency_ms))
        self._record(state, config, started_ts, latency_ms, number, completion=completion, cost_usd=cost_usd)
        return PoolResult(completion, config, tuple(state.attempts), cost_usd, state.waited_ms, state.ab_bucket)

    async def _attempt(self, member: PoolMember, request: CompletionRequest, timeout_s: float) -> Completion:
        config = member.config
        try:
            with anyio.fail_after(timeout_s):
                async with member.limiter:
                    # The SDK's own timeout is a backstop slightly past ours, so ours decides.
                    completion = await member.provider.complete(replace(request, timeout_s=timeout_s + 1.0))
        except TimeoutError:
            raise ProviderTimeout(config.name, f"no answer within {timeout_s:.3g} s") from None
        if request.response_format == "json":
            try:
                json.loads(strip_code_fence(completion.text))
            except ValueError:
                raise MalformedReply(config.name, "reply is not valid JSON (response_format=json)") from None
        return completion

    def _record(
        self,
        state: _CallState,
        config: ProviderConfig,
        started_ts: float,
        latency_ms: float,
        attempt: int,
        *,
        error_class: str | None = None,
        completion: Completion | None = None,
        cost_usd: float = 0.0,
    ) -> None:
        usage = completion.usage if completion is not None else None
        self._store.record_call(
            CallRecord(
                ts=started_ts,
                call_id=state.call_id,
                tool=state.tool,
                provider=config.name,
                model=config.model,
                status="ok" if error_class is None else "error",
                latency_ms=latency_ms,
                error_class=error_class,
                input_tokens=usage.input_tokens if usage else 0,
                output_tokens=usage.output_tokens if usage else 0,
                cost_usd=cost_usd,
                attempt=attempt,
                ab_bucket=state.ab_bucket,
                workflow=current_workflow.get(),
            )
        )

    async def aclose(self) -> None:
        """Close every provider's connections; one failing close does not stop the others."""
        for member in self._members.values():
            try:
                await member.provider.aclose()
            except Exception:
                logger.warning("closing provider %s failed", member.config.name, exc_info=True)


def pool_error_message(error: OrchestrationError) -> str:
    """A client-facing message for a pool failure, with what to do next."""
    if isinstance(error, AllProvidersFailed):
        return f"{error} — check the providers' status with list_providers, or pass other `providers`."
    return str(error)
