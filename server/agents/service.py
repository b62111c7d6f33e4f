"""The agent service: answering as an agent (``orchestrate(agent=…)``), routing to one (``agent="auto"``), and the
helpers the workflow steps and the planner share: an agent's request options and whether it could answer now."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from knowledge import resolve_prompt
from server.agents.registry import Agent, AgentError, AgentRegistry, UnknownAgent
from server.agents.routing import AgentRouter, RoutingDecision
from server.pool.orchestration import AgentRouting, OrchestrateRequest, OrchestrateResult, orchestrate
from server.security import LOCAL, Principal

if TYPE_CHECKING:
    from knowledge import PatternRegistry
    from server.agents.planner import Planner
    from server.config import Config
    from server.pool.call import Progress
    from server.pool.pool import ProviderPool
    from server.store import Store

AUTO = "auto"
"""The ``agent`` value that lets the routing model pick."""


def available_providers(pool: ProviderPool) -> Callable[[Sequence[str]], list[str]]:
    """For :class:`AgentRegistry`: which of the named providers (every provider, for none) are ready and could
    take a call now (key present, breaker closed, no cooldown, within limits and budget)."""

    def check(names: Sequence[str]) -> list[str]:
        wanted = set(names)
        return [m.config.name for m in pool.members if (not wanted or m.config.name in wanted)
                and m.config.readiness() is None and m.health.unavailable() is None]

    return check


class AgentService:
    """Agents as the tools and workflow steps use them.

    Args:
        registry: the agents.
        router: picks an agent for ``agent="auto"``.
        pool, store, config, patterns: what ``orchestrate`` needs.
        clock: wall clock, Unix seconds.
    """

    def __init__(self, registry: AgentRegistry, router: AgentRouter, pool: ProviderPool, store: Store,
                 config: Config, *, patterns: PatternRegistry | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self.router = router
        self.pool = pool
        self.store = store
        self.config = config
        self.patterns = patterns
        self.clock = clock

    @functools.cached_property
    def planner(self) -> Planner:
        """The planner (:mod:`server.agents.planner`), built at the first ``plan_workflow``."""
        from server.agents.planner import Planner

        return Planner(self.pool, self.registry, self.config.planner, self.config)

    async def choose(self, agent: str, request: str, principal: Principal) -> tuple[Agent, RoutingDecision]:
        """The agent named ``agent``, or (``auto``) the one the router picks among the available agents.

        Raises:
            UnknownAgent: no such agent, or no agent at all for ``auto``.
            AgentError: ``auto``, and no agent has a provider that is configured and ready (an agent registered
                against another configuration's providers, or every one's circuit open).
            server.errors.PolicyError: the routing call's request was refused.
        """
        if agent != AUTO:
            chosen = await self.registry.get(agent)
            return chosen, RoutingDecision(chosen.name, "named by the caller", "named")
        agents = await self.registry.list()
        if not agents:
            raise UnknownAgent("no agents are defined: add [agents.NAME] to the configuration, or register_agent")
        candidates = [a for a in agents if self.registry.available(a)]
        if not candidates:  # routing to one would only fail later, naming providers the caller never chose
            configured = ", ".join(c.name for c in self.pool.configs) or "none"
            listed = "; ".join(f"{a.name} ({', '.join(a.spec.providers) or 'any provider'})" for a in agents[:10])
            raise AgentError(f"no agent can answer now: none of their providers is configured and ready ({listed}); "
                             f"configured providers: {configured}")
        decision = await self.router.route(request, candidates, principal)
        return next(a for a in candidates if a.name == decision.agent), decision

    async def orchestrate(self, ask: OrchestrateRequest, agent: str, *, principal: Principal = LOCAL,
                          started: float | None = None, progress: Progress | None = None) -> OrchestrateResult:
        """``orchestrate`` answered as ``agent`` (a name, or ``auto``); the result names the agent, the reason,
        whether the decision was cached, and the routing latency and cost.

        Raises:
            UnknownAgent, AgentError: no such agent; the agent's preferred models have no provider.
            everything :func:`server.pool.orchestration.orchestrate` raises.
        """
        request = (await resolve_prompt(self.patterns, ask.prompt, ask.pattern, ask.variables)).text \
            if agent == AUTO else ""
        chosen, decision = await self.choose(agent, request, principal)
        result = await orchestrate(self.pool, self.store, self.config, self.as_agent(ask, chosen),
                                   principal=principal, started=started, clock=self.clock, patterns=self.patterns,
                                   progress=progress)
        if decision.via in ("model", "fallback"):  # the routing call was time spent waiting on a provider
            result.overhead_ms = round(max(0.0, result.overhead_ms - decision.latency_ms), 3)
        result.agent = AgentRouting(name=chosen.name, version=chosen.version, reason=decision.reason,
                                    via=decision.via, cached=decision.cached,
                                    routing_latency_ms=decision.latency_ms,
                                    routing_cost_usd=round(decision.cost_usd, 10))
        return result

    def as_agent(self, ask: OrchestrateRequest, agent: Agent) -> OrchestrateRequest:
        """``ask`` with the agent's system prompt (before the caller's own), and its preferred providers, models
        and strategy where the caller chose none."""
        system = "\n\n".join(part for part in (agent.spec.system_prompt, ask.system) if part) or None
        providers = ask.providers or self.providers_of(agent)
        return dataclasses.replace(ask, system=system, providers=providers,
                                   strategy=ask.strategy or (None if providers else agent.spec.strategy))

    def providers_of(self, agent: Agent) -> tuple[str, ...] | None:
        """The providers the agent prefers, in its order (``None``: the pool chooses); with preferred models,
        only the providers configured with one of them.

        Raises:
            AgentError: the agent prefers models that no configured provider serves.
        """
        spec = agent.spec
        if not spec.models:
            return spec.providers or None
        configs = {c.name: c for c in self.pool.configs}
        order = [configs[n] for n in spec.providers if n in configs] if spec.providers else list(configs.values())
        names = tuple(c.name for c in order if c.model in spec.models)
        if not names:
            raise AgentError(f"agent {agent.name!r} prefers model(s) {', '.join(spec.models)}, which no configured "
                             "provider serves")
        return names
