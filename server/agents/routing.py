"""Routing a request to an agent: a routing model at temperature 0 picks one from the agents' descriptions, in JSON
that is checked against the agent list; decisions are cached by normalized request; a routing failure falls back
to the default agent; one agent needs no model at all.

The routing model's output contract (the system prompt below says the same)::

    {"agent": "<one of the listed names>", "reason": "<one short sentence>"}

A reply wrapped in prose or a code fence is accepted when it holds one such object. The call goes through the
pool like any other (policy: guardrails, redaction, ceilings; recording, as tool ``orchestrate``).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from server.agents.registry import Agent
from server.agents.settings import AgentRoutingSettings
from server.errors import OrchestrationError, PolicyError
from server.pool.pool import CallOptions, ProviderPool
from server.pool.providers import CompletionRequest, Message
from server.security import Principal

ROUTER_SYSTEM = ("You route a request to the one agent best suited to answer it. Reply with JSON only, exactly "
                 '{"agent": "<agent name>", "reason": "<one short sentence>"}, naming one of the listed agents.')
MAX_REQUEST_CHARS = 8_000
"""How much of the request the routing model reads (the start of it: routing needs the gist, not all of it)."""
_SPACES = re.compile(r"\s+")
_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    """Which agent answers, and why.

    Attributes:
        agent: the chosen agent's name.
        reason: the routing model's reason, or why no model was asked (named, only agent, fallback …).
        via: ``named`` (the caller named it), ``single`` (the only agent), ``model``, ``cache`` or ``fallback``
            (the routing model failed or answered outside the list).
        cached: the decision came from the cache (no routing call).
        latency_ms: time spent deciding, milliseconds (routing call, or cache look-up).
        cost_usd: what the routing call cost (0 without one).
    """

    agent: str
    reason: str
    via: Literal["named", "single", "model", "cache", "fallback"]
    cached: bool = False
    latency_ms: float = 0.0
    cost_usd: float = 0.0


def normalize(text: str) -> str:
    """The request as the cache sees it: case-folded, whitespace collapsed, trimmed."""
    return _SPACES.sub(" ", text).strip().casefold()


def json_object(reply: str, what: str) -> Any:
    """The JSON object a model's reply holds (alone, or wrapped in prose or a code fence: from its first ``{`` to
    its last ``}``).

    Raises:
        ValueError: no object, or not valid JSON (said in the message, which starts with ``what``).
    """
    found = _OBJECT.search(reply or "")
    if found is None:
        raise ValueError(f"{what} holds no JSON object")
    try:
        return json.loads(found.group(0))
    except ValueError as exc:
        raise ValueError(f"{what} is not valid JSON ({exc.args[0][:100]})") from None


def parse_choice(reply: str, names: Sequence[str]) -> tuple[str, str]:
    """(agent, reason) from the routing model's reply.

    Raises:
        ValueError: no JSON object, no ``agent`` text in it, or a name that is not listed (said in the message).
    """
    data = json_object(reply, "the routing reply")
    agent = data.get("agent") if isinstance(data, dict) else None
    if not isinstance(agent, str):
        raise ValueError("the routing reply names no agent")
    if agent not in names:
        raise ValueError(f"the routing reply names {agent[:64]!r}, which is not a listed agent")
    reason = data.get("reason")
    return agent, reason[:500] if isinstance(reason, str) and reason.strip() else "chosen by the routing model"


class AgentRouter:
    """Picks the agent for a request (see the module docstring).

    Args:
        pool: the provider pool the routing model is asked through.
        settings: ``[agent_routing]``.
        timer: monotonic seconds.
        clock: wall clock (cache ages).
    """

    def __init__(self, pool: ProviderPool, settings: AgentRoutingSettings, *,
                 timer: Callable[[], float] = time.perf_counter, clock: Callable[[], float] = time.time) -> None:
        self.pool = pool
        self.settings = settings
        self._timer = timer
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, str, str]] = OrderedDict()  # key -> (stored at, agent, reason)
        self.routing_calls = 0
        """How many routing-model calls this router made (benchmarks and tests read it)."""

    def default(self, agents: Sequence[Agent]) -> Agent:
        """The agent a failed routing falls back to: ``[agent_routing] default`` if it is listed, else the first."""
        return next((a for a in agents if a.name == self.settings.default), agents[0])

    async def route(self, request: str, agents: Sequence[Agent], principal: Principal) -> RoutingDecision:
        """Pick one of ``agents`` (not empty) for ``request`` on behalf of ``principal``.

        The decision is cached per principal, by normalized request and by the agents' names and versions (a
        changed agent list decides afresh). Never raises for a routing failure: it falls back to
        :meth:`default`; a policy refusal (the request itself is refused) does propagate.

        Raises:
            server.errors.PolicyError: a guardrail refused the request.
        """
        started = self._timer()
        if len(agents) == 1:
            return RoutingDecision(agents[0].name, "the only agent", "single", latency_ms=self._ms(started))
        key = self._key(request, agents, principal)
        hit = self._cache.get(key)
        if hit is not None and hit[0] >= self._clock() - self.settings.cache_ttl_s:
            self._cache.move_to_end(key)
            return RoutingDecision(hit[1], hit[2], "cache", cached=True, latency_ms=self._ms(started))
        names = [a.name for a in agents]
        cost = 0.0
        try:
            self.routing_calls += 1
            completion = await self.pool.complete(
                self._request(request, agents), principal=principal, tool="orchestrate",
                options=CallOptions(providers=self.settings.providers or None, model=self.settings.model))
            cost = completion.cost_usd
            agent, reason = parse_choice(completion.text, names)
        except PolicyError:
            raise
        except (ValueError, OrchestrationError) as exc:
            fallback = self.default(agents)
            return RoutingDecision(fallback.name, f"routing failed ({_brief(exc)}); the default agent answers",
                                   "fallback", latency_ms=self._ms(started), cost_usd=cost)
        self._remember(key, agent, reason)
        return RoutingDecision(agent, reason, "model", latency_ms=self._ms(started), cost_usd=cost)

    def _request(self, request: str, agents: Sequence[Agent]) -> CompletionRequest:
        listed = "\n".join(f"- {a.name}: {a.spec.description}"
                           + (f" (capabilities: {', '.join(a.spec.capabilities)})" if a.spec.capabilities else "")
                           for a in agents)
        text = f"Agents:\n{listed}\n\nRequest:\n{request[:MAX_REQUEST_CHARS]}"
        return CompletionRequest(messages=(Message("user", text),), system=ROUTER_SYSTEM,
                                 max_tokens=self.settings.max_tokens, temperature=0.0, response_format="json",
                                 timeout_s=self.settings.timeout_s)

    def _key(self, request: str, agents: Sequence[Agent], principal: Principal) -> str:
        material: dict[str, Any] = {"principal": principal.id, "request": normalize(request),
                                    "agents": [[a.name, a.version] for a in agents]}
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()

    def _remember(self, key: str, agent: str, reason: str) -> None:
        if self.settings.cache_entries == 0:
            return
        self._cache[key] = (self._clock(), agent, reason)
        self._cache.move_to_end(key)
        while len(self._cache) > self.settings.cache_entries:
            self._cache.popitem(last=False)

    def _ms(self, started: float) -> float:
        return round((self._timer() - started) * 1000, 3)


def _brief(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:199] + "…"
