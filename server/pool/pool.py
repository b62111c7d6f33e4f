"""The provider pool: its members, the candidates a call may use, and the providers it hands out for a call.

Composition, as pydantic-ai composes models: every layer is a :class:`~server.pool.providers.Provider`.

::

    ScreenedProvider (policy: guardrails, redaction, ceilings, reply screening)   server.pool.policy
      └ FallbackProvider (retry rule, breakers)                                    server.pool.fallback
          └ RecordingProvider (call records)  × each candidate, in routing order   server.pool.recording
              └ PoolMember (admission, concurrency, timeout, health)               server.pool.member
                  └ InstrumentedProvider (OpenTelemetry, when on)                  server.operations.telemetry
                      └ the SDK or wire-protocol provider                          server.pool.providers

Routing (:mod:`server.pool.routing`) orders the candidates; consensus asks members directly
(:meth:`ProviderPool.provider`: policy over recording over the member, no fallback). The members and their
health live as long as the pool; the wrappers above them are built per call around a
:class:`~server.pool.call.Call`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

import anyio

from server.config import Config, ProviderConfig, Strategy
from server.errors import BudgetExceeded, NoProviderAvailable, NoProvidersConfigured, UnknownProvider
from server.pool.call import Call, Progress
from server.pool.fallback import FallbackProvider
from server.pool.health import ProviderHealth, seconds_to_utc_midnight, utc_day
from server.pool.member import PoolMember
from server.pool.policy import Policy, ScreenedProvider
from server.pool.providers import Completion, CompletionRequest, Provider
from server.pool.recording import RecordingProvider
from server.pool.routing import Router
from server.pool.text import prompt_tokens
from server.security import LOCAL, Principal
from server.store import CallStore

logger = logging.getLogger(__name__)


class _NoDecisionLog:
    def record_guardrail(self, decision: object) -> None:
        """Decisions of a pool built without a log (tests, benchmarks) go nowhere."""


_NO_LOG = _NoDecisionLog()


@dataclass(frozen=True, slots=True)
class CallOptions:
    """How one call should be routed.

    Attributes:
        providers: explicit provider names, tried in the order given (no strategy, no A/B).
        strategy: overrides the configured strategy.
        capabilities: every one must be among a provider's ``capabilities``.
        model: only providers configured with this model.
        max_fallbacks: overrides ``routing.max_fallbacks``.
        bucket_providers: the A/B bucket's providers (see :func:`server.pool.routing.assign_bucket`).
    """

    providers: Sequence[str] | None = None
    strategy: Strategy | None = None
    capabilities: Sequence[str] = ()
    model: str | None = None
    max_fallbacks: int | None = None
    bucket_providers: Sequence[str] = ()


class ProviderPool:
    """The configured providers, with health, routing, fallback, recording and policy.

    Args:
        members: (config, provider) pairs; providers that ``[guardrails] allowed_models`` does not permit leave the
            pool here (naming one is refused by the policy).
        store: where attempts are recorded (and today's spend read back).
        config: the whole configuration (routing, experiments, guardrails, limits); default: only the members'.
        policy: the policy layer (default: the one ``config`` describes, its decisions recorded nowhere).
        shared_spend: replicas share the records (PostgreSQL): today's spend is re-read from them at the start of
            each call when a budget is configured, so every replica checks budgets against everyone's spend.
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
        policy: Policy | None = None,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.perf_counter,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[object]] = anyio.sleep,
        shared_spend: bool = False,
    ) -> None:
        self.config = config or Config()
        self.policy = policy or Policy.from_config(self.config, _NO_LOG, clock=clock)
        self._shared_spend = shared_spend and (self.config.routing.daily_budget_usd is not None or any(
            p.daily_budget_usd is not None for p, _ in members))
        routing = self.config.routing
        permitted = {c.name for c in self.policy.permitted([cfg for cfg, _ in members])}
        self._configured = {cfg.name: cfg for cfg, _ in members}
        self._left_out = [provider for cfg, provider in members if cfg.name not in permitted]
        ordered = sorted((pair for pair in members if pair[0].name in permitted),
                         key=lambda pair: (pair[0].priority, pair[0].name))
        self._members = {cfg.name: PoolMember(cfg, provider, ProviderHealth(cfg, routing, clock), timer=timer)
                         for cfg, provider in ordered}
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
        """Members in priority order (for status reports and incident responses)."""
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

    # -- providers for a call -------------------------------------------------------------------------------

    async def call(self, principal: Principal = LOCAL, tool: str = "orchestrate", *, ab_bucket: str | None = None,
                   progress: Progress | None = None) -> Call:
        """A new call for ``principal`` on behalf of ``tool`` (see :class:`~server.pool.call.Call`); with shared
        spend, today's spend is re-read first."""
        if self._shared_spend:
            await self.load_spend()
        return Call(principal, tool, self.policy.for_call(principal, tool), ab_bucket=ab_bucket, progress=progress)

    def fallback(self, call: Call, request: CompletionRequest, options: CallOptions | None = None) -> ScreenedProvider:
        """The provider for one ``orchestrate``-style call: the candidates ``options`` leave, ordered by the
        strategy for ``request`` and cut to ``1 + max_fallbacks``, behind fallback, recording and the policy.

        Raises:
            NoProvidersConfigured, UnknownProvider: see :meth:`candidates`.
            GuardrailBlocked: a named provider or ``model`` that ``allowed_models`` does not permit.
            BudgetExceeded: the overall daily budget is spent.
        """
        options = options or CallOptions()
        explicit = list(options.providers or ())
        call.policy.check_models(self._named(explicit), options.model)
        self._check_budget()
        names = explicit or list(options.bucket_providers) or None
        members = self.candidates(names, capabilities=options.capabilities, model=options.model)
        if not explicit:
            members = self._router.order(members, options.strategy or self.config.routing.strategy,
                                         input_tokens=prompt_tokens(request), output_tokens=request.max_tokens)
        max_fallbacks = self.config.routing.max_fallbacks if options.max_fallbacks is None else options.max_fallbacks
        plan = members if max_fallbacks is None else members[: 1 + max_fallbacks]
        fallback = FallbackProvider([(m, self._recorded(m, call)) for m in plan], self.config.routing,
                                    progress=call.progress, timer=self._timer, clock=self._clock, rng=self._rng,
                                    sleep=self._sleep)
        return call.policy.wrap(fallback, [m.config for m in plan])

    def provider(self, name: str, call: Call) -> ScreenedProvider:
        """The provider for one answer from the member ``name`` (a consensus answerer or judge): recording and the
        policy over the member itself, no fallback.

        Raises:
            NoProvidersConfigured, UnknownProvider, GuardrailBlocked, BudgetExceeded: as :meth:`fallback`.
        """
        call.policy.check_models(self._named([name]))
        self._check_budget()
        member = self.candidates([name])[0]
        return call.policy.wrap(self._recorded(member, call), [member.config])

    def outside(self, provider: Provider, call: Call) -> ScreenedProvider:
        """A provider outside the pool (the client's own model, asked through sampling) for one answer of
        ``call``: recording and the policy as for a member, but no health, no admission and no fallback."""
        return call.policy.wrap(RecordingProvider(provider, self._store, call, clock=self._clock,
                                                  timer=self._timer), [])

    async def complete(self, request: CompletionRequest, *, options: CallOptions | None = None,
                       providers: Sequence[str] | None = None, timeout_s: float | None = None,
                       principal: Principal = LOCAL, tool: str = "orchestrate") -> Completion:
        """One call through :meth:`fallback` (``providers`` and ``timeout_s``: shorthands for the options and the
        request's deadline).

        Raises:
            as :meth:`fallback` and :meth:`server.pool.fallback.FallbackProvider.complete`, and the policy's errors.
        """
        options = options or CallOptions()
        if providers is not None:
            options = replace(options, providers=providers)
        if timeout_s is not None:
            request = replace(request, timeout_s=timeout_s)
        call = await self.call(principal, tool)
        return await self.fallback(call, request, options).complete(request)

    def _recorded(self, member: PoolMember, call: Call) -> RecordingProvider:
        return RecordingProvider(member, self._store, call, clock=self._clock, timer=self._timer)

    def _named(self, names: Sequence[str]) -> list[ProviderConfig]:
        """The configurations of named providers, those the policy left out of the pool included."""
        return [self._configured[name] for name in names if name in self._configured]

    def _check_budget(self) -> None:
        budget = self.config.routing.daily_budget_usd
        if budget is not None and self.spent_today_usd() >= budget:
            raise BudgetExceeded(f"the daily budget of ${budget:g} across all providers is spent; it resets at "
                                 f"00:00 UTC (in {seconds_to_utc_midnight(self._clock()) / 3600:.1f} h)")

    async def aclose(self) -> None:
        """Close every provider's connections; one failing close does not stop the others."""
        for provider in [*(m.provider for m in self._members.values()), *self._left_out]:
            try:
                await provider.aclose()
            except Exception:
                logger.warning("closing provider %s failed", getattr(provider, "name", "?"), exc_info=True)
