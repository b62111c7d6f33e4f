"""What each step kind does with its rendered ``with`` parameters: ``orchestrate``, ``consensus``, ``pattern``
and ``tool`` (``approval`` and ``workflow`` are the interpreter's own, see :mod:`server.workflows.interpreter`).

Every executor takes the rendered parameters and the run's principal (its starter; a system principal for
incident-started runs) and returns the step's JSON output, or raises; the steps that call models pass the
principal down to the pool, whose policy layer screens every call under it. The interpreter turns errors into an
error class (:func:`error_class`) for ``retry.retry_on`` and the run status.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from server.errors import (
    AllProvidersFailed,
    BudgetExceeded,
    CeilingExceeded,
    GuardrailBlocked,
    InvalidRequest,
    NoProviderAvailable,
    NoProvidersConfigured,
    OrchestrationError,
    UnknownProvider,
)
from server.security import Principal
from server.workflows.model import WorkflowError

if TYPE_CHECKING:
    from knowledge import PatternRegistry
    from server.config import Config
    from server.consensus.service import ConsensusService
    from server.agents import AgentService
    from server.pool.pool import ProviderPool
    from server.store import Store

ToolCaller = Callable[[str, str, Mapping[str, Any], float | None], Awaitable[dict[str, Any]]]
"""``(server, tool, arguments, timeout_s) -> output``: a call to a downstream MCP server's tool."""


class StepFailed(WorkflowError):
    """A step's own failure with its error class (``tool_error``, ``rejected``, ``approval_timeout`` …)."""

    def __init__(self, message: str, *, error_class: str) -> None:
        super().__init__(message)
        self.error_class = error_class


@dataclass(frozen=True)
class StepServices:
    """The core services step kinds call. ``tool_caller`` is ``None`` when no downstream server is set up."""

    pool: ProviderPool | None = None
    store: Store | None = None
    config: Config | None = None
    consensus: ConsensusService | None = None
    patterns: PatternRegistry | None = None
    tool_caller: ToolCaller | None = None
    clock: Callable[[], float] = time.time
    telemetry: Any = None
    """A :class:`server.operations.telemetry.Telemetry` for run and step spans, or ``None`` (off)."""
    agents: AgentService | None = None
    """For ``agent`` and ``team`` steps (:mod:`server.agents.steps`)."""
    tools_withheld: bool = False
    """Agents may not call downstream tools: the run is of an inline definition a non-admin started (as ``tool``
    steps, which such a run may not have)."""


def error_class(exc: BaseException) -> str:
    """The error class a step failure is retried and reported by."""
    if isinstance(exc, StepFailed):
        return exc.error_class
    if isinstance(exc, OrchestrationError) and isinstance(getattr(exc, "error_class", None), str):
        return exc.error_class  # a provider's failure class, or an agent step's (server.agents.steps)
    if isinstance(exc, TimeoutError):
        return "step_timeout"
    names: dict[type, str] = {AllProvidersFailed: "all_providers_failed", NoProviderAvailable: "no_provider_available",
                              NoProvidersConfigured: "no_providers", UnknownProvider: "unknown_provider",
                              BudgetExceeded: "budget_exceeded", GuardrailBlocked: "guardrail_blocked",
                              CeilingExceeded: "ceiling_exceeded", InvalidRequest: "invalid_parameters"}
    for kind, name in names.items():
        if isinstance(exc, kind):
            return name
    from knowledge.errors import PatternError, RenderError

    if isinstance(exc, RenderError):
        return "render_error"
    if isinstance(exc, PatternError):
        return "pattern_error"
    if isinstance(exc, (ValueError, TypeError)):
        return "invalid_parameters"
    if isinstance(exc, OrchestrationError):
        return "error"
    return "internal_error"


_ORCHESTRATE_KEYS = ("prompt", "system", "providers", "strategy", "capabilities", "model", "max_tokens",
                     "temperature", "timeout_s", "max_fallbacks", "user_id", "continuation_id", "response_format",
                     "cache", "pattern", "variables")
_CONSENSUS_KEYS = ("system", "providers", "max_providers", "method", "threshold", "choices", "answer_path", "judge",
                   "rounds", "samples_per_provider", "deadline_s", "hard_deadline_s", "max_tokens", "temperature")


def _only(params: Mapping[str, Any], allowed: tuple[str, ...], kind: str) -> dict[str, Any]:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise StepFailed(f"{kind} step: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(allowed)}",
                         error_class="invalid_parameters")
    return dict(params)


async def run_orchestrate(services: StepServices, params: Mapping[str, Any], principal: Principal) -> Any:
    """``orchestrate`` with the tool's arguments, for ``principal``; output: the tool's result (``text``,
    ``provider`` …)."""
    from server.pool.orchestration import OrchestrateRequest, orchestrate

    args = _only(params, _ORCHESTRATE_KEYS, "orchestrate")
    for key in ("providers", "capabilities"):
        if key in args and args[key] is not None:
            args[key] = tuple(args[key])
    if args.get("capabilities") is None:
        args.pop("capabilities", None)
    if services.pool is None or services.store is None or services.config is None:
        raise StepFailed("orchestrate steps need the provider pool", error_class="no_providers")
    result = await orchestrate(services.pool, services.store, services.config, OrchestrateRequest(**args),
                               principal=principal, clock=services.clock, patterns=services.patterns)
    return result.model_dump(mode="json")


async def run_consensus(services: StepServices, params: Mapping[str, Any], principal: Principal) -> Any:
    """``consensus`` for ``principal``; output: the tool's result (``status``, ``answer``, ``agreement`` …)."""
    from server.consensus.service import ConsensusRequest

    args = _only(params, (*_CONSENSUS_KEYS, "prompt", "pattern", "variables"), "consensus")
    if services.consensus is None:
        raise StepFailed("consensus steps need the provider pool", error_class="no_providers")
    for key in ("providers", "choices"):
        if args.get(key) is not None:
            args[key] = tuple(args[key])
    if "choices" in args and args["choices"] is None:
        del args["choices"]
    result = await services.consensus.run(ConsensusRequest(**args), None, principal=principal)
    return result.model_dump(mode="json")


async def run_pattern(services: StepServices, params: Mapping[str, Any], principal: Principal) -> Any:
    """Render a pattern (no model is called; a step that sends the text on is screened then); output:
    ``{"text", "pattern", "version"}``."""
    args = _only(params, ("pattern", "variables"), "pattern")
    if services.patterns is None:
        raise StepFailed("pattern steps need the pattern library", error_class="pattern_error")
    rendered = await services.patterns.render(str(args["pattern"]), args.get("variables") or {})
    return {"text": rendered.text, "pattern": rendered.pattern, "version": rendered.version}


async def run_tool(services: StepServices, params: Mapping[str, Any], timeout_s: float | None) -> Any:
    """Call a downstream MCP server's tool; output: ``{"text", "content", "structured"}``."""
    args = _only(params, ("server", "tool", "arguments"), "tool")
    if services.tool_caller is None:
        raise StepFailed("tool steps need downstream MCP servers in the configuration ([mcp_servers.NAME])",
                         error_class="unknown_server")
    arguments = args.get("arguments") or {}
    if not isinstance(arguments, dict):
        raise StepFailed("tool step: `arguments` is a JSON object", error_class="invalid_parameters")
    return await services.tool_caller(str(args["server"]), str(args["tool"]), arguments, timeout_s)


async def run_agent_kind(services: StepServices, params: Mapping[str, Any], principal: Principal) -> Any:
    """An ``agent`` step (:func:`server.agents.steps.run_agent`): the agent answers, with its allowed tools."""
    from server.agents.steps import run_agent

    if services.agents is None:
        raise StepFailed("agent steps need the agent registry", error_class="unknown_agent")
    return await run_agent(services.agents, params, principal, services.tool_caller,
                           tools_withheld=services.tools_withheld)


async def run_team_kind(services: StepServices, params: Mapping[str, Any], principal: Principal) -> Any:
    """A ``team`` step (:func:`server.agents.steps.run_team`): several agents, sequential, parallel or consensus."""
    from server.agents.steps import run_team

    if services.agents is None:
        raise StepFailed("team steps need the agent registry", error_class="unknown_agent")
    return await run_team(services.agents, params, principal, services.tool_caller,
                          tools_withheld=services.tools_withheld)


AGENT_KINDS = ("agent", "team")
"""The step kinds whose agents may call downstream tools (:attr:`StepServices.tools_withheld`)."""
EXECUTORS = {"orchestrate": run_orchestrate, "consensus": run_consensus, "pattern": run_pattern,
             "agent": run_agent_kind, "team": run_team_kind}
