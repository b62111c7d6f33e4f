"""The dependencies object: everything the MCP surface (tools, resources, prompts) reaches in the core.

The app assembly (:mod:`server.app.assembly`) builds one per server in the lifespan; the surface reads it from
the request context. It lives here, outside the app package, so that the surface never imports the assembly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from knowledge import PatternRegistry
    from server.agents import AgentService
    from server.config import Config
    from server.consensus.service import ConsensusService
    from server.operations.audit import AuditLog
    from server.operations.incidents import IncidentService
    from server.operations.telemetry import Telemetry
    from server.pool.pool import ProviderPool
    from server.store import Store
    from server.workflows import WorkflowService
    from server.app.warmup import Readiness, WarmUp
    from server.workflows.lazy import LazyWorkflows


@dataclass(frozen=True)
class Dependencies:
    """Everything the tools need, built once per server (per connection for in-memory clients)."""

    config: Config
    store: Store
    pool: ProviderPool
    lazy_consensus: Callable[[], ConsensusService]
    """Makes (once) the consensus service (see :attr:`consensus`)."""
    patterns: PatternRegistry
    clock: Callable[[], float] = time.time
    lazy_workflows: LazyWorkflows | None = None
    """The workflow service, built at first use (see :attr:`workflows`)."""
    incidents: IncidentService | None = None
    telemetry: Telemetry | None = None
    simple: bool = False
    """Simple mode (``--simple``): wire-protocol providers, the JSON-file store, no tracing, in-memory runs.
    Code that would import a full-mode dependency checks this and raises :class:`server.app.simple.FullModeRequired`."""
    warm_up: WarmUp | None = None
    """The warm start (:mod:`server.app.warmup`): begins once the server has answered its first request."""
    agents: AgentService | None = None
    """The agents (:mod:`server.agents`): ``orchestrate(agent=…)``, ``register_agent``, ``plan_workflow``."""
    audit: AuditLog | None = None
    """The audit trail (:mod:`server.operations.audit`)."""
    readiness: Readiness | None = None
    """The stored state (patterns, agents, spend), loaded after the first request or at the first need
    (:class:`server.app.warmup.Readiness`); ``None``: nothing to wait for."""

    @property
    def consensus(self) -> ConsensusService:
        """The consensus service (built at the first use, importing the aggregation methods then)."""
        return self.lazy_consensus()

    @property
    def workflows(self) -> WorkflowService | None:
        """The workflow service (built at the first use, importing the workflow engine then)."""
        return self.lazy_workflows.service() if self.lazy_workflows is not None else None
