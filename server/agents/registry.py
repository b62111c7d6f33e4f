"""The agent registry: agents from ``[agents.NAME]`` and from ``register_agent``, versioned in an
:class:`~server.store.AgentStore`, discovered by capability and minimum version, and available when one of their
providers is.

An agent's name belongs to one source: a name defined in the configuration is changed there (the server stores
each change of it as a new version when it starts), and ``register_agent`` refuses it. An agent the configuration
defined once and no longer does is gone (not listed, not routed to; its versions stay readable), until
``register_agent`` saves that name again. Versions are the store's: 1 when first stored, one more per change;
storing identical content again is a no-op.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from server.agents.settings import AGENT_NAME_PATTERN, AgentSpec
from server.errors import InvalidRequest, OrchestrationError
from server.store import AgentRecord, AgentStore

MAX_AGENTS = 1_000
"""Most agents a registry holds (routing prompts list them all; listings are bounded by it)."""
LISTING_TTL_S = 1.0
"""How long the current agents are served from memory (so routing on a cache hit reads nothing): a change made
here shows at once, one made by another replica within this time."""


class AgentError(OrchestrationError):
    """Root of the agent errors; ``error_class`` names it in a workflow step's report."""

    error_class = "agent_error"


class UnknownAgent(AgentError):
    """No agent of that name (the message lists the known ones)."""

    error_class = "unknown_agent"


class InvalidAgent(InvalidRequest):
    """An agent definition that does not validate, or a name the configuration owns; nothing was stored."""


@dataclass(frozen=True, slots=True)
class Agent:
    """One version of an agent.

    Attributes:
        name: the agent's slug (:data:`~server.agents.settings.AGENT_NAME_PATTERN`).
        version: the store's version number (1, 2 …).
        spec: what the agent is (:class:`~server.agents.settings.AgentSpec`).
        source: ``config`` (``[agents.NAME]``) or ``registered`` (``register_agent``).
        updated_at: when this version was stored, Unix seconds.
    """

    name: str
    version: int
    spec: AgentSpec
    source: Literal["config", "registered"]
    updated_at: float = 0.0

    @property
    def uri(self) -> str:
        return agent_uri(self.name)

    def summary(self) -> dict[str, Any]:
        """Name, version, description, capabilities, source and URI (a listing's entry)."""
        return {"name": self.name, "version": self.version, "description": self.spec.description,
                "capabilities": list(self.spec.capabilities), "source": self.source, "uri": self.uri}

    def may_use(self, server: str, tool: str) -> bool:
        """Whether the agent's ``tools`` allow ``server``'s ``tool`` (``server.tool`` or ``server.*``)."""
        return f"{server}.{tool}" in self.spec.tools or f"{server}.*" in self.spec.tools


def agent_uri(name: str) -> str:
    """The resource URI of agent ``name``."""
    return f"agents://registry/{name}"


def parse_spec(data: Mapping[str, Any], where: str = "agent") -> AgentSpec:
    """An :class:`AgentSpec` from JSON data.

    Raises:
        InvalidAgent: every problem, each with its field.
    """
    try:
        return AgentSpec.model_validate(data)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or where}: "
                    f"{'unknown field' if e['type'] == 'extra_forbidden' else e['msg']}"
                    for e in exc.errors(include_url=False)]
        raise InvalidAgent(f"invalid {where} ({len(problems)} problem(s)): {'; '.join(problems[:20])}") from None


class AgentRegistry:
    """Every agent this server knows.

    Args:
        store: where agents and their versions are kept.
        configured: ``[agents.NAME]`` of the configuration.
        available_providers: which of a set of provider names could take a call now (the pool's health); an
            empty set asks about any provider.
        clock: wall clock, Unix seconds.
    """

    def __init__(self, store: AgentStore, configured: Mapping[str, AgentSpec], *,
                 available_providers: Callable[[Sequence[str]], list[str]] = lambda names: list(names),
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.configured = dict(configured)
        self._available = available_providers
        self._clock = clock
        self._listing: tuple[float, list[Agent]] | None = None  # (read at, monotonic seconds; the agents)

    async def load(self) -> None:
        """Store the configured agents (a new version for each one that changed since the last start)."""
        for name in sorted(self.configured):
            await self.store.put_agent(name, self.configured[name].dump(), self._clock(), source="config")
        self._listing = None

    async def register(self, name: str, spec: Mapping[str, Any]) -> tuple[Agent, bool]:
        """Validate and store ``spec`` as agent ``name``'s next version. Returns the version now current and
        whether this call stored it (``False``: identical to the current version). Committed on return.

        Raises:
            InvalidAgent: a bad name or definition, a name the configuration defines, or too many agents.
            StorageError: nothing was stored.
        """
        if not re.fullmatch(AGENT_NAME_PATTERN, name):
            raise InvalidAgent(f"agent name {name[:70]!r}: 1-64 of a-z, 0-9, _ and - (starting a-z or 0-9)")
        if name == "auto":
            raise InvalidAgent("'auto' is not an agent name: orchestrate(agent='auto') lets the routing model pick")
        if name in self.configured:
            raise InvalidAgent(f"agent {name!r} is defined in the configuration ([agents.{name}]); change it there")
        parsed = parse_spec(spec)
        current = await self.store.get_agent(name)
        if current is None and len(await self.store.list_agents()) >= MAX_AGENTS:
            raise InvalidAgent(f"this server holds {MAX_AGENTS} agents, the most it keeps")
        record, stored = await self.store.put_agent(name, parsed.dump(), self._clock(), source="registered")
        self._listing = None
        return self._agent(record), stored

    async def get(self, name: str, version: int | None = None) -> Agent:
        """Agent ``name`` (its current version, or ``version``).

        Raises:
            UnknownAgent: no such agent (or version); the message lists the agents there are.
        """
        if version is None:
            found = next((a for a in await self.list() if a.name == name), None)
            if found is not None:
                return found
        record = await self.store.get_agent(name, version)
        if record is not None and version is None and self._dropped(record):
            raise UnknownAgent(f"agent {name!r} was defined in the configuration ([agents.{name}]), which no longer "
                               f"defines it; its versions stay readable (version 1 to {record.version})")
        if record is None:
            names = [a.name for a in await self.list()]
            what = f"agent {name!r}" + (f" version {version}" if version is not None else "")
            raise UnknownAgent(f"no {what}; agents: {', '.join(names[:50]) or 'none'}"
                               f"{' …' if len(names) > 50 else ''}")
        return self._agent(record)

    async def list(self) -> list[Agent]:
        """The current version of every agent, by name (from memory for :data:`LISTING_TTL_S`)."""
        now = time.monotonic()
        if self._listing is None or now - self._listing[0] > LISTING_TTL_S:
            self._listing = (now, [self._agent(r) for r in await self.store.list_agents() if not self._dropped(r)])
        return list(self._listing[1])

    async def discover(self, capabilities: Sequence[str] = (), min_version: int | None = None, *,
                       available_only: bool = False) -> list[Agent]:
        """Agents with every one of ``capabilities`` and at least ``min_version``, by name; with
        ``available_only``, only those that could answer now (:meth:`available`)."""
        wanted = set(capabilities)
        return [a for a in await self.list() if wanted <= set(a.spec.capabilities)
                and (min_version is None or a.version >= min_version) and (not available_only or self.available(a))]

    def available(self, agent: Agent) -> bool:
        """Whether at least one of the agent's providers (any provider, when it names none) could take a call now."""
        return bool(self._available(agent.spec.providers))

    def _dropped(self, record: AgentRecord) -> bool:
        """Whether ``record`` is a configured agent's that this configuration no longer defines."""
        return record.source == "config" and record.name not in self.configured

    @staticmethod
    def _agent(record: AgentRecord) -> Agent:
        return Agent(record.name, record.version, AgentSpec.model_validate(record.spec), record.source,
                     record.updated_at)
