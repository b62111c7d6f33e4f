"""The provider pool's health as clients see it (``list_providers``, ``providers://pool``), without secrets."""

import time
from collections.abc import Callable

from pydantic import Field

from server.models import DeferredModel
from server.pool.pool import ProviderPool


class ProviderState(DeferredModel):
    """One provider's configuration summary and runtime state. Times in seconds and milliseconds."""

    name: str
    kind: str
    model: str
    priority: int
    weight: float
    capabilities: list[str]
    ready: bool = Field(description="false when a key is missing (see problem)")
    problem: str | None = None
    status: str = Field(description="ok, degraded, failing (every recent call failed) or untested")
    last_error_class: str | None = None
    circuit: str = Field(description="closed, open or half_open")
    available: bool = Field(description="may take a call now")
    unavailable_reason: str | None = None
    cooldown_remaining_s: float | None = None
    in_flight: int
    ewma_latency_ms: float | None
    recent_error_rate: float | None = Field(description="over the breaker window")
    spent_today_usd: float
    daily_budget_usd: float | None


class PoolState(DeferredModel):
    """The ``list_providers`` result."""

    strategy: str
    providers: list[ProviderState]
    spent_today_usd: float
    daily_budget_usd: float | None


def pool_state(pool: ProviderPool, clock: Callable[[], float] = time.time) -> PoolState:
    """A snapshot of every provider's state."""
    now = clock()
    states = []
    for member in pool.members:
        config, health = member.config, member.health
        unavailable = health.unavailable()
        states.append(ProviderState(
            name=config.name, kind=config.kind, model=config.model, priority=config.priority, weight=config.weight,
            capabilities=list(config.capabilities), ready=config.readiness() is None, problem=config.readiness(),
            status=health.status(), last_error_class=next((c for c in reversed(health.recent) if c), None),
            circuit=health.state, available=unavailable is None and config.readiness() is None,
            unavailable_reason=unavailable.reason if unavailable else None,
            cooldown_remaining_s=round(max(health.cooldown_until, health.open_until) - now, 3)
            if max(health.cooldown_until, health.open_until) > now else None,
            in_flight=health.in_flight,
            ewma_latency_ms=None if health.ewma_latency_ms is None else round(health.ewma_latency_ms, 3),
            recent_error_rate=health.error_rate(), spent_today_usd=round(health.spent_today(), 10),
            daily_budget_usd=config.daily_budget_usd,
        ))
    return PoolState(strategy=pool.config.routing.strategy, providers=states,
                     spent_today_usd=round(pool.spent_today_usd(), 10),
                     daily_budget_usd=pool.config.routing.daily_budget_usd)
