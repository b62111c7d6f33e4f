"""Agents and planning: the agent registry (:mod:`.registry`; configuration in :mod:`.settings`), routing a request
to an agent (:mod:`.routing`), answering as one (:mod:`.service`), agents in workflow steps (:mod:`.steps`), and
the planner that drafts workflows from a goal (:mod:`.planner`, the ``plan_workflow`` service in
:mod:`.planning`).

Importing this package imports none of its modules: :mod:`server.config` holds :mod:`.settings`, which the rest
builds on, so each name below loads its module when first used (PEP 562), as :mod:`server.workflows` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from server import lazy_exports

if TYPE_CHECKING:
    from server.agents.planner import Plan, PlanConstraints, PlanFailed, Planner
    from server.agents.planning import PlanResult, plan_workflow
    from server.agents.registry import Agent, AgentError, AgentRegistry, InvalidAgent, UnknownAgent, agent_uri
    from server.agents.routing import AgentRouter, RoutingDecision
    from server.agents.service import AUTO, AgentService, available_providers
    from server.agents.settings import AgentRoutingSettings, AgentSpec, PlannerSettings

__all__ = [
    "AUTO", "Agent", "AgentError", "AgentRegistry", "AgentRouter", "AgentRoutingSettings", "AgentService",
    "AgentSpec", "InvalidAgent", "Plan", "PlanConstraints", "PlanFailed", "PlanResult", "Planner", "PlannerSettings",
    "RoutingDecision", "UnknownAgent", "agent_uri", "available_providers", "plan_workflow",
]
_HOMES = {
    "Plan": "planner", "PlanConstraints": "planner", "PlanFailed": "planner", "Planner": "planner",
    "PlanResult": "planning", "plan_workflow": "planning",
    "Agent": "registry", "AgentError": "registry", "AgentRegistry": "registry", "InvalidAgent": "registry",
    "UnknownAgent": "registry", "agent_uri": "registry", "AgentRouter": "routing", "RoutingDecision": "routing",
    "AUTO": "service", "AgentService": "service", "available_providers": "service",
    "AgentRoutingSettings": "settings", "AgentSpec": "settings", "PlannerSettings": "settings",
}

__getattr__ = lazy_exports(_HOMES, globals())
